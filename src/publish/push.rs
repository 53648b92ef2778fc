//! Push mode: the records mxguard manages, sent into the DNS a domain already has by RFC 2136
//! UPDATE (TSIG-signed) to its primary. mxguard serves no zone for such a domain.
//!
//! Owns: the desired managed RRsets of each pushed zone and what was last pushed. Each change
//! of an RRset is one UPDATE that deletes the RRset and adds its records (atomic at the
//! primary), with the prerequisite that the zone's SOA exists; only the owners and types
//! mxguard manages are ever named. A failed UPDATE keeps the desired state: [`PushSink::retry`]
//! sends it again, with backoff. "Served everywhere" means every authoritative server (the
//! configured `nameservers`, or the zone's NS RRset as the primary answers it) answers the
//! RRsets as pushed, without recursion, with an RRSIG over them when the zone is signed.
//!
//! Must not touch any other name or type; must not decide when records change.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};

use super::nameservers::{nameservers, reference};
#[cfg(feature = "providers")]
use super::providers::{api_record, provider_client};
use super::{Applied, Change, NotServed, RecordSink, Rrset, SinkError, Source};

/// TSIG fudge (seconds of clock skew tolerated), as BIND and Knot use.
const FUDGE: u16 = 300;
/// One UPDATE or query.
pub(super) const TIMEOUT: Duration = Duration::from_secs(5);
/// Retries of a failed push: 10 s doubling to 10 min.
const RETRY_FIRST: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(600);

/// `[domain.push]` as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PushSettings {
    /// rfc2136: the primary that accepts updates (asked for the zone's NS, SOA and DNSKEY);
    /// none for a provider API (the first nameserver is asked for the SOA and DNSKEY).
    pub server: Option<SocketAddr>,
    /// rfc2136: the TSIG key.
    pub tsig: Option<TsigSettings>,
    /// A DNS provider's HTTP API instead of RFC 2136.
    pub provider: Option<ProviderSettings>,
    /// Whom to ask whether a change is served; empty: the zone's NS RRset (see
    /// [`nameservers`]).
    pub nameservers: Vec<SocketAddr>,
    /// Provider APIs without `nameservers`: the resolver that finds the zone's NS RRset and
    /// its addresses; none: the system's (`/etc/resolv.conf`).
    pub resolver: Option<SocketAddr>,
}

impl PushSettings {
    /// Where records are pushed, for messages: the primary's address or the provider's API.
    pub(crate) fn target(&self) -> String {
        match (&self.provider, self.server) {
            (Some(p), _) => format!("the {} API", p.name),
            (None, Some(s)) => s.to_string(),
            (None, None) => "no server".into(),
        }
    }
}

/// The TSIG key of RFC 2136 updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TsigSettings {
    pub key_name: String,
    pub secret_file: PathBuf,
    pub algorithm: TsigAlgorithm,
}

/// A provider API (built with `--features providers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProviderSettings {
    /// e.g. `cloudflare`.
    pub name: String,
    /// The API token (0600).
    pub token_file: Option<PathBuf>,
    /// The API's base URL where it is configurable (`pebble-challtestsrv`, `powerdns`).
    pub api_url: Option<String>,
}

/// The TSIG algorithms accepted in `tsig_algorithm`.
pub(crate) fn algorithm(name: &str) -> Option<TsigAlgorithm> {
    match name.trim_end_matches('.').to_ascii_lowercase().as_str() {
        "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Some(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
        _ => None,
    }
}

/// The name of an algorithm as BIND and Knot write it.
pub(crate) fn algorithm_name(a: &TsigAlgorithm) -> &'static str {
    match a {
        TsigAlgorithm::HmacSha384 => "hmac-sha384",
        TsigAlgorithm::HmacSha512 => "hmac-sha512",
        _ => "hmac-sha256",
    }
}

/// Reads a TSIG secret file: base64, whitespace ignored, at least 16 bytes.
pub(crate) fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let secret = data_encoding::BASE64.decode(&compact).map_err(|_| {
        format!(
            "{}: not a base64 secret (as `mxguard tsig-keygen NAME --out FILE` writes it)",
            path.display()
        )
    })?;
    if secret.len() < 16 {
        return Err(format!("{}: secret shorter than 16 bytes", path.display()));
    }
    Ok(secret)
}

/// How a pushed zone is written.
enum Writer {
    Update(TSigner),
    #[cfg(feature = "providers")]
    Api(Box<dns_update::DnsUpdater>),
}

/// One pushed zone.
struct Zone {
    settings: PushSettings,
    writer: Writer,
    /// Per (owner, type): each producer's part.
    desired: BTreeMap<(Name, RecordType), BTreeMap<Source, Rrset>>,
    /// Per (owner, type): the records the primary accepted last (empty: deleted).
    pushed: BTreeMap<(Name, RecordType), Vec<Record>>,
    /// The primary's serial after the last accepted UPDATE (read after the push, without
    /// the push lock; see [`PushSink::read_serials`]).
    serial: u32,
    /// RRsets accepted so far: a serial read after a push is kept only while no other change
    /// was accepted since.
    generation: u64,
    /// The last failure, when to try again, and the current backoff.
    failure: Option<(PushError, Instant, Duration)>,
}

/// Where the last push failure of each zone is kept for `status` and `tlsa` (in the state
/// directory; written only while a zone's pushes fail).
pub(crate) const FAILURES_FILE: &str = "push-failures.json";

/// The failures file's content: zone (as written in the config) → the last error.
pub(crate) fn read_failures(state_root: &std::path::Path) -> BTreeMap<String, String> {
    std::fs::read(state_root.join(FAILURES_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The push sink: one entry per pushed zone (replaced on reload).
#[derive(Default)]
pub(crate) struct PushSink {
    /// Where failures are written for the CLI (`None`: not written).
    failures_file: Option<PathBuf>,
    /// Held while pushing (one push at a time, every zone), never while waiting for a
    /// zone's serial.
    zones: tokio::sync::Mutex<BTreeMap<Name, Zone>>,
    /// The zone names, readable without the lock (`zone_of`, `serial`).
    index: std::sync::RwLock<BTreeMap<Name, u32>>,
}

/// Why a push failed (the previous records stay; it is retried).
#[derive(Debug, Clone, thiserror::Error)]
#[error("push to {server} for zone {zone} ({records}): {reason}")]
pub(crate) struct PushError {
    /// The primary's address or the provider's API.
    pub server: String,
    pub zone: String,
    pub records: String,
    pub reason: String,
}

impl PushSink {
    /// A sink that keeps its zones' last failures in `state_root` for the CLI.
    pub(crate) fn with_state(state_root: &std::path::Path) -> PushSink {
        PushSink {
            failures_file: Some(state_root.join(FAILURES_FILE)),
            ..PushSink::default()
        }
    }

    /// Writes the current failures (atomically) when they changed.
    fn save_failures(&self, zones: &BTreeMap<Name, Zone>) {
        let Some(path) = &self.failures_file else {
            return;
        };
        let now: BTreeMap<String, String> = zones
            .iter()
            .filter_map(|(n, z)| {
                z.failure.as_ref().map(|(e, _, _)| {
                    (
                        n.to_ascii().trim_end_matches('.').to_string(),
                        e.to_string(),
                    )
                })
            })
            .collect();
        let before = read_failures(path.parent().unwrap_or(std::path::Path::new(".")));
        if now == before {
            return;
        }
        let result = serde_json::to_vec_pretty(&now)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                crate::state_dir::write_atomic(path, &b, crate::state_dir::PUBLIC_MODE)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = result {
            tracing::warn!(file = %path.display(), err = %e, "push failures not written");
        }
    }

    /// Sets the pushed zones (at start and on reload): keeps what is known of zones that stay.
    pub(crate) async fn configure(&self, zones: Vec<(Name, PushSettings)>) -> Result<(), String> {
        let mut built = Vec::new();
        for (name, settings) in zones {
            let writer = writer(&settings)?;
            built.push((name, settings, writer));
        }
        let mut zones = self.zones.lock().await;
        let mut old = std::mem::take(&mut *zones);
        for (name, settings, writer) in built {
            let z = match old.remove(&name) {
                Some(mut z) => {
                    // A reload (perhaps a fixed key or server): try again at once.
                    z.failure = None;
                    z.settings = settings;
                    z.writer = writer;
                    z
                }
                None => Zone {
                    settings,
                    writer,
                    desired: BTreeMap::new(),
                    pushed: BTreeMap::new(),
                    serial: 0,
                    generation: 0,
                    failure: None,
                },
            };
            zones.insert(name, z);
        }
        if let Ok(mut i) = self.index.write() {
            *i = zones.iter().map(|(n, z)| (n.clone(), z.serial)).collect();
        }
        Ok(())
    }

    /// The pushed zone holding `owner`.
    fn zone_name(&self, owner: &Name) -> Option<Name> {
        let index = self.index.read().ok()?;
        super::zone_for(&*index, owner).cloned()
    }

    /// Pushes every zone whose last push failed and whose retry time has come.
    pub(crate) async fn retry(&self) {
        let mut zones = self.zones.lock().await;
        let now = Instant::now();
        let mut pushed = Vec::new();
        for (name, z) in zones.iter_mut() {
            let due = matches!(&z.failure, Some((_, at, _)) if *at <= now);
            if due {
                match push_zone(name, z).await {
                    Ok(p) => {
                        tracing::info!(zone = %name, server = %z.settings.target(), "push succeeded after a failure");
                        pushed.extend(p);
                    }
                    Err(e) => {
                        tracing::warn!(err = %e, "push failed again; the previous records stay")
                    }
                }
            }
        }
        self.save_failures(&zones);
        drop(zones);
        self.read_serials(pushed).await;
    }

    /// Reads the SOA serial of each zone just pushed without the push lock (a slow or silent
    /// server delays no other zone's push), then keeps it where the zone is still as pushed:
    /// no RRset accepted since and the same settings. A later push reads its own serial, so
    /// an older serial never replaces a newer one. Returns each zone's serial as read (where
    /// it could not be read: the one kept).
    async fn read_serials(&self, pushed: Vec<Pushed>) -> BTreeMap<Name, u32> {
        let mut read = Vec::with_capacity(pushed.len());
        for p in pushed {
            // The serial that carries the change (a signing primary may have raised it further).
            let serial = match reference(&p.zone, &p.settings).await {
                Ok(server) => crate::dns::query_soa_serial(server, &p.zone, None, TIMEOUT)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            read.push((p, serial));
        }
        let mut zones = self.zones.lock().await;
        let mut out = BTreeMap::new();
        for (p, serial) in read {
            let target = p.settings.target();
            let z = zones.get_mut(&p.zone);
            let as_pushed = z
                .as_ref()
                .is_some_and(|z| z.generation == p.generation && z.settings == p.settings);
            let serial = match (serial, z) {
                (Ok(s), Some(z)) if as_pushed => {
                    z.serial = s;
                    Some(s)
                }
                (Ok(s), _) => Some(s),
                (Err(e), z) => {
                    tracing::warn!(zone = %p.zone, server = %target, err = %e, "pushed, but the zone's SOA serial could not be read");
                    z.map(|z| z.serial)
                }
            };
            tracing::info!(zone = %p.zone, server = %target, serial = serial.unwrap_or(0), records = %p.sent.join(", "), "records pushed");
            if let Some(s) = serial {
                out.insert(p.zone, s);
            }
        }
        if let Ok(mut i) = self.index.write() {
            for (n, z) in zones.iter() {
                i.insert(n.clone(), z.serial);
            }
        }
        out
    }

    /// Per pushed zone: the last failure (for `status` and the page).
    pub(crate) async fn failures(&self) -> Vec<(Name, String)> {
        self.zones
            .lock()
            .await
            .iter()
            .filter_map(|(n, z)| {
                z.failure
                    .as_ref()
                    .map(|(e, _, _)| (n.clone(), e.to_string()))
            })
            .collect()
    }

    /// Runs until `shutdown`: retries failed pushes.
    pub(crate) async fn run_retries(
        self: std::sync::Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => self.retry().await,
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// The writer for `settings`: a TSIG signer, or a provider API client.
fn writer(settings: &PushSettings) -> Result<Writer, String> {
    if let Some(p) = &settings.provider {
        #[cfg(feature = "providers")]
        {
            return provider_client(p).map(|c| Writer::Api(Box::new(c)));
        }
        #[cfg(not(feature = "providers"))]
        return Err(format!(
            "provider {}: this mxguard is built without provider APIs (cargo build --features providers)",
            p.name
        ));
    }
    let t = settings.tsig.as_ref().ok_or("rfc2136 without a TSIG key")?;
    let secret = read_secret(&t.secret_file)?;
    let mut key = Name::from_ascii(&t.key_name)
        .map_err(|e| format!("tsig_key_name {:?}: {e}", t.key_name))?;
    key.set_fqdn(true);
    TSigner::new(secret, t.algorithm.clone(), key, FUDGE)
        .map(Writer::Update)
        .map_err(|e| format!("TSIG key {}: {e}", t.key_name))
}

/// The union of the producers' parts of one RRset, as records.
fn union(owner: &Name, parts: &BTreeMap<Source, Rrset>) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    let ttl = parts.values().map(|r| r.ttl).min().unwrap_or(300);
    for r in parts.values() {
        for d in &r.data {
            if !out.iter().any(|x| x.data == *d) {
                out.push(Record::from_rdata(owner.clone(), ttl, d.clone()));
            }
        }
    }
    out
}

fn random_id() -> u16 {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u16::from_be_bytes(b)
}

/// A push that went through: what reading the zone's serial afterwards needs.
struct Pushed {
    zone: Name,
    /// The settings it was pushed with (a reload may change them meanwhile).
    settings: PushSettings,
    /// The zone's [`Zone::generation`] after the push.
    generation: u64,
    /// What was sent, for the log.
    sent: Vec<String>,
}

/// Sends the RRsets whose desired records differ from the pushed ones, one UPDATE each.
/// Returns what was sent, if anything (its serial is read by the caller, after releasing the
/// push lock: [`PushSink::read_serials`]). While a failed push waits for its retry time,
/// nothing is sent and that failure is returned again (the backoff holds for every caller).
async fn push_zone(name: &Name, z: &mut Zone) -> Result<Option<Pushed>, PushError> {
    if let Some((e, at, _)) = &z.failure
        && *at > Instant::now()
    {
        return Err(e.clone());
    }
    let mut changed: Vec<((Name, RecordType), Vec<Record>)> = Vec::new();
    for (key, parts) in &z.desired {
        let want = union(&key.0, parts);
        let have = z.pushed.get(key);
        let same = match have {
            Some(h) => {
                h.len() == want.len()
                    && want
                        .iter()
                        .all(|w| h.iter().any(|x| x.data == w.data && x.ttl == w.ttl))
            }
            None => want.is_empty(),
        };
        if !same {
            changed.push((key.clone(), want));
        }
    }
    if changed.is_empty() {
        z.failure = None;
        return Ok(None);
    }
    let primary = z.settings.server;
    let target = z.settings.target();
    let mut sent = Vec::new();
    // One UPDATE per RRset: each replaces one RRset atomically, and a primary whose ACLs
    // allow each type only at its own names (what `dns-policy` prints) accepts each.
    for ((owner, rtype), records) in changed {
        let what = if records.is_empty() {
            format!("delete {owner} {rtype}")
        } else {
            format!("{owner} {rtype} ×{}", records.len())
        };
        let mut msg = Message::new(random_id(), MessageType::Query, OpCode::Update);
        let mut zone_q = Query::new();
        zone_q
            .set_name(name.clone())
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        msg.add_zone(zone_q);
        // Prerequisite: the zone exists at that server (its SOA RRset is there).
        let mut pre = Record::update0(name.clone(), 0, RecordType::SOA);
        pre.dns_class = DNSClass::ANY;
        msg.add_pre_requisite(pre);
        let mut del = Record::update0(owner.clone(), 0, rtype);
        del.dns_class = DNSClass::ANY;
        msg.add_update(del);
        for r in &records {
            msg.add_update(r.clone());
        }
        let fail = |reason: String| PushError {
            server: target.clone(),
            zone: name.to_ascii(),
            records: what.clone(),
            reason,
        };
        // One arm without `--features providers`, two with it.
        #[allow(clippy::infallible_destructuring_match)]
        let signer = match &z.writer {
            Writer::Update(s) => s,
            #[cfg(feature = "providers")]
            Writer::Api(api) => {
                // The provider replaces the RRset at once (its API's own atomicity).
                let mut recs = Vec::new();
                for r in &records {
                    match api_record(&r.data) {
                        Some(x) => recs.push(x),
                        None => {
                            let e = fail(format!(
                                "{rtype} records cannot be pushed through a provider API"
                            ));
                            note_failure(z, &e);
                            return Err(e);
                        }
                    }
                }
                let ttl = records.first().map_or(300, |r| r.ttl);
                let kind = match rtype {
                    RecordType::TLSA => dns_update::DnsRecordType::TLSA,
                    RecordType::CAA => dns_update::DnsRecordType::CAA,
                    _ => dns_update::DnsRecordType::TXT,
                };
                let owner_s = owner.to_ascii();
                let origin_s = name.to_ascii();
                if let Err(x) = api
                    .set_rrset(owner_s.as_str(), kind, ttl, recs, origin_s.as_str())
                    .await
                {
                    let provider = z.settings.provider.as_ref().map_or("", |p| p.name.as_str());
                    let e = fail(format!("{provider} API: {}", crate::logfield::untrusted(x)));
                    note_failure(z, &e);
                    return Err(e);
                }
                z.pushed.insert((owner, rtype), records);
                z.generation += 1;
                sent.push(what);
                continue;
            }
        };
        let Some(server) = primary else {
            let e = fail("rfc2136 without a primary server".into());
            note_failure(z, &e);
            return Err(e);
        };
        let result = match crate::dns::exchange(server, msg, Some(signer), TIMEOUT).await {
            Err(e) => Err(fail(e.to_string())),
            Ok(reply) if reply.metadata.response_code != ResponseCode::NoError => {
                Err(fail(format!(
                    "UPDATE answered {}{}",
                    rcode_name(reply.metadata.response_code),
                    match reply.metadata.response_code {
                        ResponseCode::Refused | ResponseCode::NotAuth =>
                            " (is the TSIG key right, and allowed to update this name and type? see `mxguard dns-policy`)",
                        _ => "",
                    }
                )))
            }
            Ok(_) => Ok(()),
        };
        if let Err(e) = result {
            note_failure(z, &e);
            return Err(e);
        }
        z.pushed.insert((owner, rtype), records);
        z.generation += 1;
        sent.push(what);
    }
    z.failure = None;
    Ok(Some(Pushed {
        zone: name.clone(),
        settings: z.settings.clone(),
        generation: z.generation,
        sent,
    }))
}

/// A response code as DNS tools print it (`NOTAUTH`, `REFUSED`, …).
pub(super) fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::YXDomain => "YXDOMAIN".into(),
        ResponseCode::YXRRSet => "YXRRSET".into(),
        ResponseCode::NXRRSet => "NXRRSET".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        other => format!("rcode {}", u16::from(other)),
    }
}

fn note_failure(z: &mut Zone, e: &PushError) {
    let wait = match &z.failure {
        Some((_, _, w)) => (*w * 2).min(RETRY_MAX),
        None => RETRY_FIRST,
    };
    tracing::warn!(err = %e, retry_in = ?wait, "push failed; the previous records stay");
    z.failure = Some((e.clone(), Instant::now() + wait, wait));
}

#[async_trait::async_trait]
impl RecordSink for PushSink {
    async fn apply(&self, changes: Vec<Change>) -> Result<Applied, SinkError> {
        let mut by_zone: BTreeMap<Name, Vec<Change>> = BTreeMap::new();
        for c in changes {
            let zone = self
                .zone_name(&c.key().owner)
                .ok_or_else(|| SinkError::OutsideZones {
                    owner: c.key().owner.to_ascii(),
                })?;
            by_zone.entry(zone).or_default().push(c);
        }
        let mut zones = self.zones.lock().await;
        let mut applied = Applied::default();
        let mut first_error = None;
        let mut pushed = Vec::new();
        for (name, list) in by_zone {
            let Some(z) = zones.get_mut(&name) else {
                continue;
            };
            for c in list {
                let key = (c.key().owner.clone(), c.key().rtype);
                let parts = z.desired.entry(key).or_default();
                match c {
                    Change::Set(k, rrset) if !rrset.data.is_empty() => {
                        parts.insert(k.source, rrset);
                    }
                    Change::Set(k, _) | Change::Withdraw(k) => {
                        parts.remove(&k.source);
                    }
                }
            }
            match push_zone(&name, z).await {
                Ok(Some(p)) => {
                    applied.changed = true;
                    pushed.push(p);
                }
                Ok(None) => {
                    applied.serials.insert(name.clone(), z.serial);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.save_failures(&zones);
        drop(zones);
        // Each pushed zone's serial, read without the lock.
        applied.serials.extend(self.read_serials(pushed).await);
        match first_error {
            Some(e) => Err(SinkError::Push(e)),
            None => Ok(applied),
        }
    }

    fn zone_of(&self, owner: &Name) -> Option<Name> {
        self.zone_name(owner)
    }

    fn serial(&self, zone: &Name) -> Option<u32> {
        self.index.read().ok()?.get(zone).copied()
    }

    async fn served_everywhere(&self, zone: &Name, serial: u32) -> Result<(), NotServed> {
        let (settings, pushed) = {
            let zones = self.zones.lock().await;
            let Some(z) = zones.get(zone) else {
                return Err(NotServed {
                    server: "push".into(),
                    zone: zone.to_ascii(),
                    serial,
                    answer: "not a pushed zone".into(),
                });
            };
            (z.settings.clone(), z.pushed.clone())
        };
        let not = |server: String, answer: String| NotServed {
            server,
            zone: zone.to_ascii(),
            serial,
            answer,
        };
        let asked = match (settings.server, settings.resolver) {
            (Some(p), _) => format!("primary {p}"),
            (None, Some(r)) if settings.nameservers.is_empty() => format!("resolver {r}"),
            _ => settings.target(),
        };
        let servers = match nameservers(zone, &settings).await {
            Ok(s) if !s.is_empty() => s,
            Ok(_) => return Err(not(asked, "no NS addresses for the zone".into())),
            Err(e) => return Err(not(asked, e)),
        };
        let signed = is_signed(settings.server.unwrap_or(servers[0]), zone).await;
        for server in servers {
            for ((owner, rtype), want) in &pushed {
                let got = query(server, owner, *rtype, signed)
                    .await
                    .map_err(|e| not(format!("nameserver {server}"), e))?;
                let records: Vec<&Record> = got
                    .answers
                    .iter()
                    .filter(|r| r.name == *owner && r.record_type() == *rtype)
                    .collect();
                let same = records.len() == want.len()
                    && want
                        .iter()
                        .all(|w| records.iter().any(|r| r.data == w.data));
                if !same {
                    return Err(not(
                        format!("nameserver {server}"),
                        format!(
                            "{owner} {rtype}: {} record(s), {} pushed",
                            records.len(),
                            want.len()
                        ),
                    ));
                }
                let covered = got.answers.iter().any(|r| match &r.data {
                    RData::DNSSEC(DNSSECRData::RRSIG(s)) => {
                        r.name == *owner && s.input().type_covered == *rtype
                    }
                    _ => false,
                });
                if signed && !want.is_empty() && !covered {
                    return Err(not(
                        format!("nameserver {server}"),
                        format!("{owner} {rtype}: served without an RRSIG yet"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One query (no recursion; with DO when `dnssec`).
pub(crate) async fn query(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    dnssec: bool,
) -> Result<Message, String> {
    crate::dns::query(server, name, rtype, dnssec, false, TIMEOUT).await
}

/// Whether the zone has a DNSKEY RRset at the primary (then pushed RRsets must be signed).
async fn is_signed(primary: SocketAddr, zone: &Name) -> bool {
    query(primary, zone, RecordType::DNSKEY, false)
        .await
        .map(|m| {
            m.answers
                .iter()
                .any(|r| r.record_type() == RecordType::DNSKEY)
        })
        .unwrap_or(false)
}

#[cfg(test)]
#[path = "push_tests.rs"]
mod tests;
