//! The rollover executor: runs [`crate::dane::machine`]'s state machine for every MX with
//! `rollover = true`, called from the certificate manager's task (so MX keys, TLSA records and
//! MX certificates have one writer). It publishes TLSA records through the
//! [`RecordSink`] and gets certificates through the [`Issuer`] trait, which the certificate
//! manager implements: this module depends on neither.
//!
//! Files, per MX host, in the state directory:
//! - `rollover/<host>.json`: the persisted [`RollState`], written *before* each action;
//! - `rollover/requests/<host>.rotate`: a roll request left by `mxguard rotate` (a folder of
//!   its own, so that noticing one does not list every MX's state);
//! - `mx-keys/<host>/<key id>.pem`: the current, the next and the last retired key (0600;
//!   older retired keys are deleted when a roll completes);
//! - `certs/<host>/next-chain.pem`: the certificate ordered for the next key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::rr::Name;

use crate::dane::files::{
    load, load_key, next_chain_path, on_disk, prune_keys, request_path, requests_dir, save,
    save_key, save_key_pem,
};
use crate::dane::machine::{self as rollover, Action, Event, KeyId, Phase, RollState, Timing};
use crate::dane::probe;
use crate::publish::{RecordSink, SinkError};
use crate::state_dir::{self as store, StateDir, StoreError};

/// Why a rollover step or an external-certificate pass failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RollError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("generating a key: {0}")]
    Generate(String),
    /// The MX's current key could not be read or created.
    #[error("the MX key: {0}")]
    Key(String),
    /// The issuer could not order a certificate (its message says why).
    #[error("ordering the certificate for the next key: {0}")]
    Order(String),
    /// Installing or deploying the certificate failed (its message says why).
    #[error("deploying the new key: {0}")]
    Deploy(String),
    #[error("{0} is not inside any served zone: its TLSA records cannot be published")]
    NoZone(String),
    #[error("publishing TLSA records: {0}")]
    Sink(#[from] SinkError),
    #[error("live check of {host}: {reason}")]
    Probe { host: String, reason: String },
}

/// What the rollover needs from whoever keeps the MX certificates (the certificate manager):
/// the current key, certificates for a key, and making one current.
#[async_trait::async_trait]
pub(crate) trait Issuer: Send + Sync {
    /// The key of the MX's current certificate (created on first use).
    fn current_key(&self, host: &str) -> Result<rcgen::KeyPair, RollError>;
    /// Orders a certificate for the MX's names with `key`; returns the PEM chain. Writes nothing.
    async fn order(&self, host: &str, key: &rcgen::KeyPair) -> Result<String, RollError>;
    /// Makes `chain_pem` with `key` the MX's current certificate: stored, scheduled for
    /// renewal, written for the MTA and the MTA reloaded.
    async fn install_and_deploy(
        &self,
        host: &str,
        key: &rcgen::KeyPair,
        chain_pem: &str,
    ) -> Result<(), RollError>;
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn from_unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// How long the MX is given to show its key when a rollover begins.
const FIRST_PROBE: Duration = Duration::from_secs(5);

/// Begins the rollover of `host` whose key is `current`: generates the next key and, if the
/// MX presents another key right now (a certificate from before mxguard), keeps that key's
/// record published until mxguard's own is seen live. Persists the state before returning,
/// so the first zone built after it carries every record.
pub(crate) async fn begin(
    state: &Arc<StateDir>,
    host: &str,
    current: &rcgen::KeyPair,
    verify: Option<SocketAddr>,
) -> Result<RollState, RollError> {
    let current_id = probe::key_id(&rcgen::PublicKeyData::subject_public_key_info(current));
    let (id, pem) = (current_id.clone(), current.serialize_pem());
    let next_id = on_disk(state, host, move |state, host| {
        save_key_pem(state, host, &id, &pem)?;
        let next = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| RollError::Generate(e.to_string()))?;
        save_key(state, host, &next)
    })
    .await?;
    // The configured `verify` address is trusted as it is; an address found through the
    // system's resolver is not, so a key seen there is published only when its certificate
    // is valid for the host under WebPKI (else an attacker on that path could get a record).
    let (addr, configured) = match verify {
        Some(a) => (Some(a), true),
        None => (
            tokio::time::timeout(FIRST_PROBE, tokio::net::lookup_host((host, 25)))
                .await
                .ok()
                .and_then(|r| r.ok())
                .and_then(|mut it| it.next()),
            false,
        ),
    };
    let (mut prior, mut hold) = (None, false);
    if let Some(a) = addr {
        match probe::presented_chain(a, host, FIRST_PROBE).await {
            Ok(chain) => {
                let key = chain
                    .first()
                    .and_then(|c| crate::x509::spki_of_cert(c))
                    .map(|spki| probe::key_id(&spki));
                let trusted = configured
                    || crate::webpki::roots(None).is_ok_and(|roots| {
                        crate::webpki::verify_chain(
                            &roots,
                            &chain,
                            host,
                            rustls::pki_types::UnixTime::now(),
                        )
                        .is_ok()
                    });
                match key {
                    Some(k) if k == current_id => {}
                    Some(k) if trusted => {
                        tracing::info!(mx = host, presented = %k, "the MX presents another key: its TLSA record stays published until mxguard's certificate is live");
                        prior = Some(k);
                    }
                    _ => {
                        tracing::warn!(mx = host, addr = %a, "the MX presents a certificate that is not valid for it under WebPKI: its key is not published; mxguard's first certificate waits until its own record is public for the hold time");
                        hold = true;
                    }
                }
            }
            Err(probe::ProbeError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                // Nothing listens: no key is live to protect.
            }
            Err(e) => {
                tracing::warn!(mx = host, err = %e, "cannot tell which key the MX presents: mxguard's first certificate waits until its own record is public for the hold time");
                hold = true;
            }
        }
    }
    let mut s = rollover::initial(current_id, next_id, prior, unix(SystemTime::now()));
    s.hold_first_deploy = hold;
    let s = on_disk(state, host, move |state, host| {
        save(state, host, &s)?;
        Ok(s)
    })
    .await?;
    tracing::info!(mx = host, current = %s.current, next = %s.next, "rollover started: next key generated");
    Ok(s)
}

/// True while mxguard's first certificate for `host` must not be deployed yet (another key
/// is live and the new key's record is not public for the hold time).
pub(crate) fn first_deploy_waits(root: &Path, host: &str) -> bool {
    load(root, host).is_some_and(|s| rollover::first_deploy_waits(&s))
}

/// True while a roll owns the MX certificate (ordinary renewal waits).
pub(crate) fn in_roll(root: &Path, host: &str) -> bool {
    load(root, host).is_some_and(|s| {
        matches!(
            s.phase,
            Phase::Issuing | Phase::Deploying | Phase::Verifying
        )
    })
}

/// Runs the rollover of MX hosts and the external-certificate passes.
pub(crate) struct RollExecutor {
    pub state: Arc<StateDir>,
    pub sink: Arc<dyn RecordSink>,
    pub timing: Timing,
    /// How often servers are polled while a roll waits for them.
    pub poll: Duration,
    pub tlsa_port: u16,
    pub tlsa_ttl: u32,
    /// Where each step that changes what is served or presented is recorded.
    pub changes: Arc<crate::changelog::ChangeLog>,
    /// Keep the key retired last (for a rollback); false: only the current and next keys.
    pub keep_retired: bool,
}

/// How `held` starts when the roll waits because its TLSA records cannot be published.
const PUBLISH_FAILED: &str = "cannot publish TLSA records";

impl RollExecutor {
    /// The zone an MX host's TLSA records live in.
    fn zone_of(&self, host: &str) -> Option<Name> {
        self.sink
            .zone_of(&crate::publish::records::tlsa_owner(host, self.tlsa_port).ok()?)
    }

    /// The `3 1 1` records of `keys` at the MX's TLSA owner, through the sink (nothing happens
    /// when they are already published); returns the serial of the zone that carries them.
    async fn publish_tlsa(&self, host: &str, keys: &[KeyId]) -> Result<u32, RollError> {
        let digests: Vec<Vec<u8>> = keys
            .iter()
            .filter_map(|id| crate::dane::tlsa::hex_decode(id))
            .collect();
        let change = crate::publish::records::dane_ee(
            host,
            self.tlsa_port,
            &digests,
            self.tlsa_ttl,
            format!("TLSA of MX {host}"),
        )
        .map_err(|e| RollError::NoZone(e.to_string()))?;
        let applied = self.sink.apply(vec![change]).await?;
        applied
            .serials
            .into_values()
            .next()
            .ok_or_else(|| RollError::NoZone(host.to_string()))
    }

    /// Puts the state's records into the zone; returns the zone's serial.
    async fn sync_zone(&self, host: &str, s: &RollState) -> Result<u32, RollError> {
        self.publish_tlsa(host, &rollover::published(s)).await
    }

    fn persist(&self, host: &str, s: &RollState) -> bool {
        match save(&self.state, host, s) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(mx = host, err = %e, "cannot persist rollover state; not acting");
                false
            }
        }
    }

    async fn init_state(
        &self,
        issuer: &dyn Issuer,
        host: &str,
        verify: Option<SocketAddr>,
    ) -> Result<RollState, RollError> {
        let current = issuer.current_key(host)?;
        begin(&self.state, host, &current, verify).await
    }

    /// Runs the machine for one MX until it has to wait; returns when to come back.
    pub(crate) async fn roll_pass(
        &self,
        issuer: &dyn Issuer,
        host: &str,
        verify: Option<SocketAddr>,
    ) -> SystemTime {
        let poll = self.poll;
        let mut s = match load(self.state.root(), host) {
            Some(s) => s,
            None => match self.init_state(issuer, host, verify).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(mx = host, err = %e, "cannot start rollover");
                    return SystemTime::now() + poll;
                }
            },
        };
        let req = request_path(self.state.root(), host);
        if req.exists() {
            let n = rollover::step(
                &s,
                &Event::RotateRequested,
                &self.timing,
                unix(SystemTime::now()),
            );
            if self.persist(host, &n) {
                s = n;
                let _ = std::fs::remove_file(&req);
                tracing::info!(mx = host, "roll requested");
            }
        }
        // The zone always carries the state's records (idempotent; no serial change if equal).
        if let Err(e) = self.sync_zone(host, &s).await {
            if let Some(skipped) = crate::logfield::throttle("dane: cannot publish TLSA records") {
                tracing::error!(mx = host, err = %e, skipped, "cannot publish TLSA records");
            }
            // `tlsa` and the status page say why the roll does not move (e.g. the primary
            // refusing an UPDATE, naming server, records and code).
            let why = Some(format!("{PUBLISH_FAILED}: {e}"));
            if s.held != why {
                let mut n = s.clone();
                n.held = why;
                self.persist(host, &n);
            }
            return SystemTime::now() + poll;
        }
        if s.held
            .as_deref()
            .is_some_and(|h| h.starts_with(PUBLISH_FAILED))
        {
            let mut n = s.clone();
            n.held = None;
            if self.persist(host, &n) {
                s = n;
            }
        }
        for _ in 0..16 {
            let now = unix(SystemTime::now());
            let before = s.clone();
            let event = match rollover::action(&s, &self.timing, now) {
                Action::Publish => match self.sync_zone(host, &s).await {
                    Ok(serial) => Event::Published { serial },
                    Err(e) => Event::Failed {
                        reason: e.to_string(),
                    },
                },
                Action::Wait { deadline } => {
                    let Some(zone) = self.zone_of(host) else {
                        return SystemTime::now() + poll;
                    };
                    let serial = match &s.phase {
                        Phase::Propagating { serial, .. } => *serial,
                        _ => self.sink.serial(&zone).unwrap_or(0),
                    };
                    let served = self.sink.served_everywhere(&zone, serial).await;
                    let all_serve = served.is_ok();
                    let mut n = rollover::step(&s, &Event::Tick { all_serve }, &self.timing, now);
                    // Only a roll that waits for the servers is held by them.
                    let waits = matches!(
                        n.phase,
                        Phase::Propagating {
                            seen_everywhere_at: None,
                            ..
                        }
                    ) || (matches!(n.phase, Phase::Stable)
                        && (n.requested || now >= n.current_since + self.timing.key_age));
                    n.held = match served {
                        Err(e) if waits => Some(e.to_string()),
                        _ => None,
                    };
                    if n.held != s.held {
                        match &n.held {
                            Some(why) => {
                                tracing::warn!(mx = host, held = %why, "rollover held until every server serves the zone")
                            }
                            None => tracing::info!(mx = host, "rollover no longer held"),
                        }
                    }
                    if n == s {
                        // A deadline is the next time anything can change (roll requests are
                        // noticed by the manager); without one, poll the servers.
                        let wake = deadline.map_or(SystemTime::now() + poll, from_unix);
                        return wake.max(SystemTime::now() + Duration::from_millis(200));
                    }
                    if matches!(n.phase, Phase::Stable) && !matches!(s.phase, Phase::Stable) {
                        tracing::info!(mx = host, next = %n.next, "next key's TLSA record is public everywhere for the hold time");
                    }
                    if matches!(n.phase, Phase::Issuing) {
                        tracing::info!(mx = host, from = %n.current, to = %n.next, "key roll starts");
                        self.changes.record(
                            "rollover",
                            host,
                            format!(
                                "key roll starts: {} -> {}",
                                short(&n.current),
                                short(&n.next)
                            ),
                        );
                    }
                    if !self.persist(host, &n) {
                        return SystemTime::now() + poll;
                    }
                    s = n;
                    continue;
                }
                Action::Issue => self.roll_issue(issuer, host, &s).await,
                Action::Deploy => self.roll_deploy(issuer, host, &s).await,
                Action::Verify => {
                    let addr = match verify {
                        Some(a) => Ok(a),
                        None => tokio::net::lookup_host((host, 25))
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|mut it| it.next().ok_or_else(|| "no address".to_string())),
                    };
                    match addr {
                        Ok(a) => {
                            match probe::presented_key(a, host, Duration::from_secs(15)).await {
                                Ok(key) => Event::Observed { key },
                                Err(e) => Event::Failed {
                                    reason: RollError::Probe {
                                        host: host.to_string(),
                                        reason: e.to_string(),
                                    }
                                    .to_string(),
                                },
                            }
                        }
                        Err(e) => Event::Failed {
                            reason: RollError::Probe {
                                host: host.to_string(),
                                reason: format!("cannot resolve: {e}"),
                            }
                            .to_string(),
                        },
                    }
                }
                Action::GenerateNext => {
                    match rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                        .map_err(|e| RollError::Generate(e.to_string()))
                        .and_then(|k| save_key(&self.state, host, &k))
                    {
                        Ok(key) => Event::NewNextKey { key },
                        Err(e) => Event::Failed {
                            reason: e.to_string(),
                        },
                    }
                }
            };
            let n = rollover::step(&s, &event, &self.timing, now);
            match &event {
                Event::Failed { reason } => {
                    tracing::error!(mx = host, err = %reason, failures = n.failures, phase = ?n.phase, "rollover step failed; old records stay published")
                }
                Event::Observed { key }
                    if s.prior.is_some() && matches!(s.phase, Phase::Stable) =>
                {
                    if n.prior.is_none() {
                        tracing::info!(mx = host, key = %key, "MX presents mxguard's key; the previous key's record is withdrawn");
                        self.changes.record(
                            "rollover",
                            host,
                            format!(
                                "MX presents mxguard's key {}; the record of the previous key {} is withdrawn",
                                short(key),
                                short(s.prior.as_deref().unwrap_or(""))
                            ),
                        );
                    } else {
                        tracing::warn!(mx = host, presented = %key, expected = %s.current, "MX does not present mxguard's first certificate yet; its previous key stays published");
                    }
                }
                Event::Observed { key } if *key != s.next => {
                    tracing::error!(mx = host, presented = %key, expected = %s.next, "MX presents an unexpected key; nothing retired")
                }
                Event::Observed { .. } => {
                    tracing::info!(mx = host, key = %n.current, "MX presents the new key; old key retired");
                    self.changes.record(
                        "rollover",
                        host,
                        format!(
                            "MX presents the new key {}; old key retired",
                            short(&n.current)
                        ),
                    );
                }
                _ => {}
            }
            if !self.persist(host, &n) {
                return SystemTime::now() + poll;
            }
            let retired = matches!(&event, Event::Observed { key } if *key == s.next)
                .then(|| s.current.clone());
            s = n;
            if s != before
                && let Err(e) = self.sync_zone(host, &s).await
            {
                if let Some(skipped) =
                    crate::logfield::throttle("dane: cannot publish TLSA records")
                {
                    tracing::error!(mx = host, err = %e, skipped, "cannot publish TLSA records");
                }
                return SystemTime::now() + poll;
            }
            // The records of the key retired now are withdrawn (synced above): older retired
            // keys have had their records gone for at least one roll. Keep this one, for a
            // rollback (unless configured not to), and nothing older.
            if let Some(previous) = retired {
                if self.keep_retired {
                    prune_keys(self.state.root(), host, &[&s.current, &s.next, &previous]);
                } else {
                    prune_keys(self.state.root(), host, &[&s.current, &s.next]);
                }
            }
        }
        SystemTime::now() + Duration::from_millis(200)
    }

    async fn roll_issue(&self, issuer: &dyn Issuer, host: &str, s: &RollState) -> Event {
        let result = async {
            let key = load_key(self.state.root(), host, &s.next)?;
            let pem = issuer.order(host, &key).await?;
            let path = next_chain_path(self.state.root(), host);
            store::ensure_dir(path.parent().unwrap_or(self.state.root()))?;
            store::write_atomic(&path, pem.as_bytes(), store::PUBLIC_MODE)?;
            Ok::<_, RollError>(())
        };
        match result.await {
            Ok(()) => Event::Issued,
            Err(e) => Event::Failed {
                reason: e.to_string(),
            },
        }
    }

    async fn roll_deploy(&self, issuer: &dyn Issuer, host: &str, s: &RollState) -> Event {
        let root = self.state.root();
        let result = async {
            let key = load_key(root, host, &s.next)?;
            let path = next_chain_path(root, host);
            let chain_pem = std::fs::read_to_string(&path).map_err(|e| RollError::File {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            // The next key and its certificate become the current ones (what renewals use).
            issuer.install_and_deploy(host, &key, &chain_pem).await
        };
        match result.await {
            Ok(()) => {
                tracing::info!(mx = host, key = %s.next, "new key deployed to the MTA");
                self.changes.record(
                    "rollover",
                    host,
                    format!("new key {} deployed to the MTA", short(&s.next)),
                );
                Event::Deployed
            }
            Err(e) => Event::Failed {
                reason: e.to_string(),
            },
        }
    }
}

/// External-certificate mode state (`rollover/<host>.external.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ExternalState {
    /// The key of the certificate file as last seen.
    pub live: Option<KeyId>,
    /// Keys no longer live whose records stay until the deadline (unix seconds).
    pub retiring: Vec<(KeyId, u64)>,
}

fn external_path(root: &Path, host: &str) -> PathBuf {
    root.join("rollover").join(format!("{host}.external.json"))
}

pub(crate) fn load_external(root: &Path, host: &str) -> ExternalState {
    std::fs::read(external_path(root, host))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The key of the first certificate in a PEM file.
pub(crate) fn key_of_cert_file(file: &Path) -> Result<KeyId, RollError> {
    let bad = |reason: &str| RollError::File {
        path: file.to_path_buf(),
        reason: reason.to_string(),
    };
    let pem = std::fs::read_to_string(file).map_err(|e| bad(&e.to_string()))?;
    let leaf = crate::x509::parse_chain(&pem)
        .into_iter()
        .next()
        .ok_or_else(|| bad("no certificate in it"))?;
    let spki = crate::x509::spki_of_cert(&leaf).ok_or_else(|| bad("unparseable certificate"))?;
    Ok(probe::key_id(&spki))
}

/// The records of an external MX: its live key, the pre-published digests, and retiring
/// keys until their deadline.
pub(crate) fn external_records(s: &ExternalState, prepublish: &[String], now: u64) -> Vec<KeyId> {
    let mut v: Vec<KeyId> = s.live.iter().cloned().collect();
    for k in prepublish.iter().cloned().chain(
        s.retiring
            .iter()
            .filter(|(_, d)| *d > now)
            .map(|(k, _)| k.clone()),
    ) {
        if !v.contains(&k) {
            v.push(k);
        }
    }
    v
}

impl RollExecutor {
    /// External-certificate mode: watch `file`, publish TLSA for its key (plus
    /// `prepublish`), and warn loudly when a key appears that was not pre-published.
    pub(crate) async fn external_pass(
        &self,
        host: &str,
        file: &Path,
        prepublish: &[String],
    ) -> SystemTime {
        let poll = self.poll;
        let now = unix(SystemTime::now());
        let mut s = load_external(self.state.root(), host);
        match key_of_cert_file(file) {
            Ok(key) if s.live.as_ref() != Some(&key) => {
                let known = external_records(&s, prepublish, now).contains(&key);
                if s.live.is_none() {
                    tracing::info!(mx = host, key = %key, file = %file.display(), "watching external certificate");
                } else if known {
                    tracing::info!(mx = host, key = %key, "external certificate switched to a pre-published key");
                    self.changes.record(
                        "rollover",
                        host,
                        format!(
                            "external certificate switched to the pre-published key {}",
                            short(&key)
                        ),
                    );
                } else {
                    tracing::error!(
                        mx = host, key = %key, file = %file.display(),
                        "external certificate has a key whose TLSA record was NOT pre-published: DANE senders fail until it propagates; add the next key to prepublish before renewing with a new key"
                    );
                }
                if let Some(old) = s.live.replace(key) {
                    s.retiring.push((old, now + self.timing.hold));
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(mx = host, err = %e, "cannot read external certificate"),
        }
        s.retiring.retain(|(_, d)| *d > now);
        let json = serde_json::to_vec_pretty(&s).unwrap_or_default();
        if load_external(self.state.root(), host) != s {
            let saved = store::ensure_dir(&self.state.path("rollover")).and_then(|()| {
                store::write_atomic(
                    &external_path(self.state.root(), host),
                    &json,
                    store::PUBLIC_MODE,
                )
            });
            if let Err(e) = saved {
                tracing::error!(mx = host, err = %e, "cannot persist external certificate state");
            }
        }
        if let Err(e) = self
            .publish_tlsa(host, &external_records(&s, prepublish, now))
            .await
            && let Some(skipped) = crate::logfield::throttle("dane: cannot publish TLSA records")
        {
            tracing::error!(mx = host, err = %e, skipped, "cannot publish TLSA records");
        }
        let next_retire = s.retiring.iter().map(|(_, d)| from_unix(*d)).min();
        let wake = SystemTime::now() + poll;
        next_retire.map_or(wake, |t| t.min(wake))
    }
}

/// `mxguard rotate`: leaves a roll request for the daemon.
pub(crate) fn request_rotation(root: &Path, host: &str) -> Result<(), RollError> {
    store::ensure_dir(&requests_dir(root))?;
    store::write_atomic(
        &request_path(root, host),
        b"requested\n",
        store::PUBLIC_MODE,
    )?;
    Ok(())
}

/// The first 16 hex digits of a key id, enough to tell keys apart in a journal.
fn short(key: &str) -> &str {
    key.get(..16).unwrap_or(key)
}
