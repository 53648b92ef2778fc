//! The zone publisher: the single writer of the served zones. It merges every domain's zone
//! file with the records mxguard manages (`_mta-sts` TXT, `_smtp._tls` TXT, `_25._tcp` TLSA,
//! `_acme-challenge` TXT, CAA), signs complete new zones, swaps them in atomically, and waits
//! until the secondaries serve them. It also re-signs before signatures run out.
//!
//! It decides nothing about *what* the policies, keys or challenges are: callers hand those in
//! through [`ZonePublisher::update`]. It never edits a served zone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::rr::rdata::caa::KeyValue;
use hickory_proto::rr::rdata::{CAA, TXT};
use hickory_proto::rr::{Name, RData};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, Problem};
use crate::dns::{DnsServer, Secondary};
use crate::policy::Published;
use crate::store::StateDir;
use crate::zone::{self, DnssecSettings, ManagedRecords, ZoneData, ZoneKey, Zones};

/// The inputs of the managed records, besides the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    /// Policies by domain.
    pub policies: BTreeMap<String, Published>,
    /// dns-01 values by host (`mta-sts.example.com` → values for `_acme-challenge.…`).
    pub challenges: BTreeMap<String, Vec<String>>,
    /// TLSA RRsets by owner host and port: the SHA-256 of the SPKI (a `3 1 1` record) of
    /// every key to publish. Written only by the certificate manager's rollover.
    pub tlsa: BTreeMap<(String, u16), Vec<Vec<u8>>>,
    /// DANE-TA `2 1 1` records by owner host and port: SHA-256 of issuer SPKIs.
    pub tlsa_ta: BTreeMap<(String, u16), Vec<Vec<u8>>>,
    /// CAA `issue` values for every zone apex (e.g. `letsencrypt.org; accounturi=…`).
    pub caa_issue: Vec<String>,
}

fn fqdn(name: &str) -> Result<Name, String> {
    let mut n = Name::from_ascii(name.trim_end_matches('.')).map_err(|e| format!("{name}: {e}"))?;
    n.set_fqdn(true);
    Ok(n)
}

/// The zone origin of a mail domain.
pub fn origin(domain: &str) -> Result<Name, String> {
    fqdn(domain)
}

fn in_zone(host: &str, domain: &str) -> bool {
    host == domain || host.ends_with(&format!(".{domain}"))
}

/// The managed records of `domain`'s zone.
pub fn managed_records(
    config: &Config,
    index: usize,
    inputs: &Inputs,
) -> Result<ManagedRecords, String> {
    let d = &config.domains[index];
    let cfg = config.file.display();
    let ttl = config.records.ttl;
    let mut m = ManagedRecords::new();
    if let Some(p) = inputs.policies.get(&d.name) {
        m.push(
            fqdn(&format!("_mta-sts.{}", d.name))?,
            ttl,
            RData::TXT(TXT::new(vec![p.txt_record()])),
            format!("{cfg}: domain[{index}] MTA-STS policy id"),
        );
    }
    if let Some(rua) = d.tls_rpt_record() {
        m.push(
            fqdn(&format!("_smtp._tls.{}", d.name))?,
            ttl,
            RData::TXT(TXT::new(vec![rua])),
            format!("{cfg}: domain[{index}].tls_rpt"),
        );
    }
    for ((host, port), keys) in &inputs.tlsa {
        if !in_zone(host, &d.name) {
            continue;
        }
        let owner = crate::tlsa::owner(host, *port)?;
        for digest in keys {
            m.push(
                owner.clone(),
                config.records.tlsa_ttl,
                RData::TLSA(crate::tlsa::dane_ee_from_digest(digest.clone())),
                format!("{cfg}: TLSA of MX {host}"),
            );
        }
    }
    for ((host, port), digests) in &inputs.tlsa_ta {
        if !in_zone(host, &d.name) {
            continue;
        }
        let owner = crate::tlsa::owner(host, *port)?;
        for digest in digests {
            m.push(
                owner.clone(),
                config.records.tlsa_ttl,
                RData::TLSA(crate::tlsa::dane_ta_from_digest(digest.clone())),
                format!("{cfg}: DANE-TA of MX {host}"),
            );
        }
    }
    for (host, values) in &inputs.challenges {
        if !in_zone(host, &d.name) {
            continue;
        }
        for v in values {
            m.push(
                fqdn(&format!("_acme-challenge.{host}"))?,
                // Short: validators must not cache a stale challenge.
                60,
                RData::TXT(TXT::new(vec![v.clone()])),
                format!("{cfg}: ACME dns-01 challenge for {host}"),
            );
        }
    }
    for issue in &inputs.caa_issue {
        let (ca, params) = match issue.split_once(';') {
            Some((ca, rest)) => (ca.trim(), rest),
            None => (issue.as_str(), ""),
        };
        let ca_name = if ca.is_empty() {
            None
        } else {
            Some(Name::from_ascii(ca).map_err(|e| format!("CAA issuer {ca}: {e}"))?)
        };
        let kv: Vec<KeyValue> = params
            .split(';')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| KeyValue::new(k.trim(), v.trim()))
            .collect();
        m.push(
            fqdn(&d.name)?,
            ttl,
            RData::CAA(CAA::new_issue(false, ca_name, kv)),
            format!("{cfg}: acme.caa"),
        );
    }
    Ok(m)
}

/// The CAA `issue` values for `config` (none unless `acme.caa`): the issuer, the challenge
/// types in use and, once the ACME account exists, its URL (RFC 8657).
pub fn caa_values(config: &Config, state_root: &std::path::Path) -> Vec<String> {
    let Some(issuer) = &config.acme.caa_issuer else {
        return Vec::new();
    };
    let account = std::fs::read(state_root.join(crate::acme::ACCOUNT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["credentials"]["id"].as_str().map(str::to_string));
    let mut methods: Vec<&str> = config
        .cert_specs()
        .iter()
        .map(|s| s.challenge.as_str())
        .collect();
    methods.sort();
    methods.dedup();
    let mut v = format!("{issuer}; validationmethods={}", methods.join(","));
    if let Some(a) = account {
        v.push_str(&format!("; accounturi={a}"));
    }
    vec![v]
}

fn zone_problem(e: impl std::fmt::Display) -> Problem {
    Problem {
        file: Default::default(),
        position: None,
        key: String::new(),
        message: e.to_string(),
    }
}

/// Parses and merges every domain's zone (no keys, no signing, no files written): what
/// `check-config` validates.
pub fn load_zone_data(config: &Config, inputs: &Inputs) -> Result<Vec<ZoneData>, ConfigError> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for (i, d) in config.domains.iter().enumerate() {
        let origin = match origin(&d.name) {
            Ok(o) => o,
            Err(e) => {
                problems.push(config.problem(format!("domain[{i}].name"), e));
                continue;
            }
        };
        let managed = match managed_records(config, i, inputs) {
            Ok(m) => m,
            Err(e) => {
                problems.push(config.problem(format!("domain[{i}]"), e));
                continue;
            }
        };
        match ZoneData::load(&d.zone_file, &origin).and_then(|z| z.with_managed(&managed)) {
            Ok(z) => out.push(z),
            Err(e) => problems.push(zone_problem(e)),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(ConfigError { problems })
    }
}

/// The zone key of `domain` (generated on first use, 0600).
pub fn zone_key(
    state: &std::path::Path,
    domain: &str,
    settings: &DnssecSettings,
) -> Result<ZoneKey, String> {
    let origin = origin(domain)?;
    zone::keys::load_or_generate(&state.join("keys"), &origin, settings.algorithm)
        .map_err(|e| e.to_string())
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

struct Current {
    config: Config,
    inputs: Inputs,
}

/// The single writer of the served zones.
pub struct ZonePublisher {
    state: Arc<StateDir>,
    server: Arc<DnsServer>,
    secondaries: Vec<Secondary>,
    keys: std::sync::Mutex<BTreeMap<String, Arc<ZoneKey>>>,
    current: tokio::sync::Mutex<Current>,
}

impl ZonePublisher {
    /// Builds and serves the first zones. Fails (naming the problem) if any zone cannot be
    /// built: the daemon does not start with a broken zone.
    pub fn start(
        state: Arc<StateDir>,
        server: Arc<DnsServer>,
        secondaries: Vec<Secondary>,
        config: Config,
        inputs: Inputs,
    ) -> Result<ZonePublisher, ConfigError> {
        let p = ZonePublisher {
            state,
            server,
            secondaries,
            keys: std::sync::Mutex::new(BTreeMap::new()),
            current: tokio::sync::Mutex::new(Current {
                config: config.clone(),
                inputs: inputs.clone(),
            }),
        };
        let zones = p.build(&config, &inputs, SystemTime::now())?;
        p.server.publish(zones);
        Ok(p)
    }

    fn key(&self, config: &Config, domain: &str) -> Result<Arc<ZoneKey>, String> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = keys.get(domain)
            && k.algorithm() == config.dnssec.algorithm
        {
            return Ok(k.clone());
        }
        let k = Arc::new(zone_key(self.state.root(), domain, &config.dnssec)?);
        keys.insert(domain.to_string(), k.clone());
        Ok(k)
    }

    fn build(
        &self,
        config: &Config,
        inputs: &Inputs,
        now: SystemTime,
    ) -> Result<Zones, ConfigError> {
        let data = load_zone_data(config, inputs)?;
        let mut zones = Zones::new();
        let mut problems = Vec::new();
        for (d, zd) in config.domains.iter().zip(data) {
            let key = match self.key(config, &d.name) {
                Ok(k) => k,
                Err(e) => {
                    problems.push(zone_problem(e));
                    continue;
                }
            };
            let state_file = self.state.path(&format!("zones/{}.signing.json", d.name));
            if let Err(e) = crate::store::ensure_dir(&self.state.path("zones")) {
                problems.push(zone_problem(e));
                continue;
            }
            match zone::build_and_persist(&state_file, &zd, &key, unix(now), &config.dnssec) {
                Ok((z, _)) => zones.insert(z),
                Err(e) => problems.push(zone_problem(e)),
            }
        }
        if problems.is_empty() {
            Ok(zones)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Applies `change` to the config and inputs, builds and signs complete new zones and
    /// swaps them in. On error nothing changes. Returns the new serial of every zone.
    pub async fn update(
        &self,
        change: impl FnOnce(&mut Config, &mut Inputs),
    ) -> Result<BTreeMap<Name, u32>, ConfigError> {
        let mut cur = self.current.lock().await;
        let (mut config, mut inputs) = (cur.config.clone(), cur.inputs.clone());
        change(&mut config, &mut inputs);
        let zones = self.build(&config, &inputs, SystemTime::now())?;
        let serials = zones
            .iter()
            .map(|z| (z.origin().clone(), z.serial()))
            .collect();
        let changed = {
            let old = self.server.zones().load();
            zones
                .iter()
                .any(|z| old.get(z.origin()).is_none_or(|o| o.serial() != z.serial()))
                || old.iter().count() != zones.iter().count()
        };
        if changed {
            self.server.publish(zones);
        }
        cur.config = config;
        cur.inputs = inputs;
        Ok(serials)
    }

    /// The zones being served.
    pub fn served(&self) -> Arc<Zones> {
        self.server.zones().load_full()
    }

    /// Waits until every secondary answers each zone's SOA with at least the given serial
    /// (RFC 1982), or `timeout` passes.
    pub async fn wait_for_secondaries(
        &self,
        serials: &BTreeMap<Name, u32>,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        for s in &self.secondaries {
            for (zone, serial) in serials {
                loop {
                    let got = crate::dns::query_soa_serial(
                        s.address,
                        zone,
                        s.tsig.as_ref(),
                        Duration::from_secs(2),
                    )
                    .await;
                    match got {
                        Ok(g) if g == *serial || zone::serial::serial_gt(g, *serial) => break,
                        other => {
                            if tokio::time::Instant::now() >= deadline {
                                return Err(format!(
                                    "secondary {} ({}) does not serve {zone} serial {serial} yet (it answers {:?})",
                                    s.name,
                                    s.address,
                                    other.map_err(|e| e.to_string())
                                ));
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// True when mxguard and every secondary serve `zone` at `serial` or later.
    pub async fn all_serve(&self, zone: &Name, serial: u32) -> bool {
        let ours = self
            .served()
            .get(zone)
            .map(|z| z.serial())
            .is_some_and(|s| s == serial || zone::serial::serial_gt(s, serial));
        if !ours {
            return false;
        }
        for s in &self.secondaries {
            match crate::dns::query_soa_serial(
                s.address,
                zone,
                s.tsig.as_ref(),
                Duration::from_secs(1),
            )
            .await
            {
                Ok(g) if g == serial || zone::serial::serial_gt(g, serial) => {}
                _ => return false,
            }
        }
        true
    }

    /// The serial served for `zone`.
    pub fn serial_of(&self, zone: &Name) -> Option<u32> {
        self.served().get(zone).map(|z| z.serial())
    }

    /// Re-signs zones before their signatures run out; runs until `shutdown`.
    pub async fn run_resigner(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let next = {
                let cur = self.current.lock().await;
                self.served()
                    .iter()
                    .map(|z| z.signing_state().resign_at(&cur.config.dnssec))
                    .min()
            };
            let now = unix(SystemTime::now());
            let wait = next.map_or(Duration::from_secs(3600), |t| {
                Duration::from_secs(t.saturating_sub(now).clamp(1, 3600))
            });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            match self.update(|_, _| {}).await {
                Ok(serials) => tracing::debug!(?serials, "re-sign check done"),
                Err(e) => {
                    tracing::error!(err = %e, "re-signing failed; the old signatures stay until they expire")
                }
            }
        }
    }
}
