//! The rollover executor: runs [`crate::dane::machine`]'s state machine for every MX with
//! `rollover = true`, inside the certificate manager's task (so MX keys, TLSA records and MX
//! certificates have one writer).
//!
//! Files, per MX host, in the state directory:
//! - `rollover/<host>.json`: the persisted [`RollState`], written *before* each action;
//! - `rollover/<host>.rotate`: a roll request left by `mxguard rotate`;
//! - `mx-keys/<host>/<key id>.pem`: every key the machine knows (0600);
//! - `certs/<host>/next-chain.pem`: the certificate ordered for the next key.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hickory_proto::rr::Name;

use crate::acme::manager::{CertSpec, Manager, MxRole, from_unix, read_state, unix, write_state};
use crate::acme::{self, Responder};
use crate::dane::machine::{self as rollover, Action, Event, KeyId, Phase, RollState};
use crate::dane::probe;
use crate::state_dir::{self as store, StateDir};

pub fn state_path(root: &Path, host: &str) -> PathBuf {
    root.join("rollover").join(format!("{host}.json"))
}

pub fn request_path(root: &Path, host: &str) -> PathBuf {
    root.join("rollover").join(format!("{host}.rotate"))
}

fn key_path(root: &Path, host: &str, id: &str) -> PathBuf {
    root.join("mx-keys").join(host).join(format!("{id}.pem"))
}

/// Reads a persisted roll state (`None` when there is none yet or it is unreadable).
pub fn load(root: &Path, host: &str) -> Option<RollState> {
    let bytes = std::fs::read(state_path(root, host)).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(mx = host, err = %e, "unreadable rollover state; fix or remove it");
            None
        }
    }
}

fn save(state: &StateDir, host: &str, s: &RollState) -> Result<(), String> {
    store::ensure_dir(&state.path("rollover")).map_err(|e| e.to_string())?;
    let json = serde_json::to_vec_pretty(s).map_err(|e| e.to_string())?;
    store::write_atomic(&state_path(state.root(), host), &json, store::PUBLIC_MODE)
        .map_err(|e| e.to_string())
}

fn save_key(state: &StateDir, host: &str, key: &rcgen::KeyPair) -> Result<KeyId, String> {
    let id = probe::key_id(&rcgen::PublicKeyData::subject_public_key_info(key));
    let path = key_path(state.root(), host, &id);
    store::ensure_dir(path.parent().unwrap_or(state.root())).map_err(|e| e.to_string())?;
    if !path.exists() {
        store::write_atomic(&path, key.serialize_pem().as_bytes(), store::SECRET_MODE)
            .map_err(|e| e.to_string())?;
    }
    Ok(id)
}

fn load_key(root: &Path, host: &str, id: &str) -> Result<rcgen::KeyPair, String> {
    let path = key_path(root, host, id);
    let pem = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    rcgen::KeyPair::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// The `3 1 1` digests an MX's zone must carry: from its roll state, or (no state yet, or
/// rollover off) from its current key.
pub fn tlsa_digests(root: &Path, host: &str, rollover: bool) -> Option<Vec<Vec<u8>>> {
    if rollover && let Some(s) = load(root, host) {
        return Some(
            rollover::published(&s)
                .iter()
                .filter_map(|id| crate::dane::tlsa::hex_decode(id))
                .collect(),
        );
    }
    let pem = std::fs::read_to_string(crate::acme::cert_path(root, host, "key.pem")).ok()?;
    let key = rcgen::KeyPair::from_pem(&pem).ok()?;
    let id = probe::key_id(&rcgen::PublicKeyData::subject_public_key_info(&key));
    Some(vec![crate::dane::tlsa::hex_decode(&id)?])
}

/// True while a roll owns the MX certificate (ordinary renewal waits).
pub fn in_roll(root: &Path, host: &str) -> bool {
    load(root, host).is_some_and(|s| {
        matches!(
            s.phase,
            Phase::Issuing | Phase::Deploying | Phase::Verifying
        )
    })
}

impl<R: Responder> Manager<R> {
    /// The zone an MX host's TLSA records live in.
    fn zone_of(&self, host: &str) -> Option<Name> {
        let sink = self.sink.as_ref()?;
        sink.zone_of(&crate::publish::records::tlsa_owner(host, self.tlsa_port).ok()?)
    }

    /// The `3 1 1` records of `keys` at the MX's TLSA owner, through the sink (nothing happens
    /// when they are already published); returns the serial of the zone that carries them.
    async fn publish_tlsa(&self, host: &str, keys: &[KeyId]) -> Result<Option<u32>, String> {
        let Some(sink) = &self.sink else {
            return Err("TLSA records need listen.dns".into());
        };
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
        .map_err(|e| e.to_string())?;
        let applied = sink.apply(vec![change]).await.map_err(|e| e.to_string())?;
        Ok(applied.serials.into_values().next())
    }

    /// Puts the state's records into the zone; returns the zone's serial.
    async fn sync_zone(&self, host: &str, s: &RollState) -> Result<Option<u32>, String> {
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

    fn init_state(&self, host: &str) -> Result<RollState, String> {
        let current = crate::acme::manager::load_or_create_key(&self.state, host)
            .map_err(|e| e.to_string())?;
        let current_id = save_key(&self.state, host, &current)?;
        let next = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| e.to_string())?;
        let next_id = save_key(&self.state, host, &next)?;
        Ok(rollover::initial(
            current_id,
            next_id,
            unix(SystemTime::now()),
        ))
    }

    /// Runs the machine for one MX until it has to wait; returns when to come back.
    pub(crate) async fn roll_pass(&self, spec: &CertSpec, mx: &MxRole) -> SystemTime {
        let host = spec.name.as_str();
        let poll = self.roll_poll;
        let mut s = match load(self.state.root(), host) {
            Some(s) => s,
            None => match self.init_state(host) {
                Ok(s) => {
                    if !self.persist(host, &s) {
                        return SystemTime::now() + poll;
                    }
                    tracing::info!(mx = host, current = %s.current, next = %s.next, "rollover started: next key generated");
                    s
                }
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
                &self.roll_timing,
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
            tracing::error!(mx = host, err = %e, "cannot publish TLSA records");
            return SystemTime::now() + poll;
        }
        for _ in 0..16 {
            let now = unix(SystemTime::now());
            let before = s.clone();
            let event = match rollover::action(&s, &self.roll_timing, now) {
                Action::Publish => match self.sync_zone(host, &s).await {
                    Ok(Some(serial)) => Event::Published { serial },
                    Ok(None) => Event::Failed {
                        reason: format!(
                            "{host} is not inside any served zone: its TLSA records cannot be published"
                        ),
                    },
                    Err(e) => Event::Failed { reason: e },
                },
                Action::Wait { deadline } => {
                    let Some(zone) = self.zone_of(host) else {
                        return SystemTime::now() + poll;
                    };
                    let serial = match &s.phase {
                        Phase::Propagating { serial, .. } => *serial,
                        _ => self
                            .sink
                            .as_ref()
                            .and_then(|z| z.serial(&zone))
                            .unwrap_or(0),
                    };
                    let all_serve = match &self.sink {
                        Some(z) => match z.served_everywhere(&zone, serial).await {
                            Ok(()) => true,
                            Err(e) => {
                                tracing::debug!(mx = host, held = %e, "waiting for every server");
                                false
                            }
                        },
                        None => false,
                    };
                    let n = rollover::step(&s, &Event::Tick { all_serve }, &self.roll_timing, now);
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
                    }
                    if !self.persist(host, &n) {
                        return SystemTime::now() + poll;
                    }
                    s = n;
                    continue;
                }
                Action::Issue => self.roll_issue(spec, &s).await,
                Action::Deploy => self.roll_deploy(spec, mx, &s).await,
                Action::Verify => {
                    let addr = match mx.verify {
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
                                    reason: format!("live check of {host}: {e}"),
                                },
                            }
                        }
                        Err(e) => Event::Failed {
                            reason: format!("live check of {host}: cannot resolve: {e}"),
                        },
                    }
                }
                Action::GenerateNext => {
                    match rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                        .map_err(|e| e.to_string())
                        .and_then(|k| save_key(&self.state, host, &k))
                    {
                        Ok(key) => Event::NewNextKey { key },
                        Err(e) => Event::Failed { reason: e },
                    }
                }
            };
            let n = rollover::step(&s, &event, &self.roll_timing, now);
            match &event {
                Event::Failed { reason } => {
                    tracing::error!(mx = host, err = %reason, failures = n.failures, phase = ?n.phase, "rollover step failed; old records stay published")
                }
                Event::Observed { key } if *key != s.next => {
                    tracing::error!(mx = host, presented = %key, expected = %s.next, "MX presents an unexpected key; nothing retired")
                }
                Event::Observed { .. } => {
                    tracing::info!(mx = host, key = %n.current, "MX presents the new key; old key retired")
                }
                _ => {}
            }
            if !self.persist(host, &n) {
                return SystemTime::now() + poll;
            }
            s = n;
            if s != before
                && let Err(e) = self.sync_zone(host, &s).await
            {
                tracing::error!(mx = host, err = %e, "cannot publish TLSA records");
                return SystemTime::now() + poll;
            }
        }
        SystemTime::now() + Duration::from_millis(200)
    }

    async fn roll_issue(&self, spec: &CertSpec, s: &RollState) -> Event {
        let host = spec.name.as_str();
        let next_chain = acme::cert_path(self.state.root(), host, "next-chain.pem");
        let key = match load_key(self.state.root(), host, &s.next) {
            Ok(k) => k,
            Err(e) => return Event::Failed { reason: e },
        };
        match self.order_chain(spec, &key, None).await {
            Ok(pem) => match store::write_atomic(&next_chain, pem.as_bytes(), store::PUBLIC_MODE) {
                Ok(()) => Event::Issued,
                Err(e) => Event::Failed {
                    reason: e.to_string(),
                },
            },
            Err(e) => Event::Failed {
                reason: format!("ordering the certificate for the next key: {}", e.message),
            },
        }
    }

    async fn roll_deploy(&self, spec: &CertSpec, mx: &MxRole, s: &RollState) -> Event {
        let host = spec.name.as_str();
        let root = self.state.root();
        let fail = |reason: String| Event::Failed { reason };
        let key = match load_key(root, host, &s.next) {
            Ok(k) => k,
            Err(e) => return fail(e),
        };
        let chain_pem = match std::fs::read_to_string(acme::cert_path(root, host, "next-chain.pem"))
        {
            Ok(p) => p,
            Err(e) => return fail(format!("next-chain.pem: {e}")),
        };
        // The next key and its certificate become the current ones (and what renewals use).
        let key_pem = key.serialize_pem();
        if let Err(e) = store::write_atomic(
            &acme::cert_path(root, host, "key.pem"),
            key_pem.as_bytes(),
            store::SECRET_MODE,
        ) {
            return fail(e.to_string());
        }
        let mut st = read_state(&self.state, host);
        if let Err(e) = self.commit_chain(spec, &mut st, &key, &chain_pem).await {
            return fail(e.message);
        }
        let result = crate::acme::manager::deploy(&mx.deploy, &chain_pem, &key_pem).await;
        match &result {
            Ok(()) => {
                st.deployed = Some(crate::acme::manager::deployment_fingerprint(
                    &mx.deploy, &chain_pem,
                ));
                st.deploy_error = None;
                st.next_deploy = None;
                st.deploy_attempts = 0;
                tracing::info!(mx = host, key = %s.next, "new key deployed to the MTA");
            }
            Err(e) => st.deploy_error = Some(e.clone()),
        }
        if let Err(e) = write_state(&self.state, host, &st) {
            return fail(e.to_string());
        }
        match result {
            Ok(()) => Event::Deployed,
            Err(e) => fail(format!("deploying the new key: {e}")),
        }
    }
}

/// External-certificate mode state (`rollover/<host>.external.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExternalState {
    /// The key of the certificate file as last seen.
    pub live: Option<KeyId>,
    /// Keys no longer live whose records stay until the deadline (unix seconds).
    pub retiring: Vec<(KeyId, u64)>,
}

fn external_path(root: &Path, host: &str) -> PathBuf {
    root.join("rollover").join(format!("{host}.external.json"))
}

pub fn load_external(root: &Path, host: &str) -> ExternalState {
    std::fs::read(external_path(root, host))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The key of the first certificate in a PEM file.
pub fn key_of_cert_file(file: &Path) -> Result<KeyId, String> {
    let pem = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let leaf = crate::acme::manager::parse_chain(&pem)
        .into_iter()
        .next()
        .ok_or_else(|| format!("{}: no certificate in it", file.display()))?;
    let spki = crate::acme::manager::spki_of_cert(&leaf)
        .ok_or_else(|| format!("{}: unparseable certificate", file.display()))?;
    Ok(probe::key_id(&spki))
}

/// The records of an external MX: its live key, the pre-published digests, and retiring
/// keys until their deadline.
pub fn external_records(s: &ExternalState, prepublish: &[String], now: u64) -> Vec<KeyId> {
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

impl<R: Responder> Manager<R> {
    /// External-certificate mode: watch `file`, publish TLSA for its key (plus
    /// `prepublish`), and warn loudly when a key appears that was not pre-published.
    pub(crate) async fn external_pass(
        &self,
        host: &str,
        file: &Path,
        prepublish: &[String],
    ) -> SystemTime {
        let poll = self.roll_poll;
        let now = unix(SystemTime::now());
        let mut s = load_external(self.state.root(), host);
        match key_of_cert_file(file) {
            Ok(key) if s.live.as_ref() != Some(&key) => {
                let known = external_records(&s, prepublish, now).contains(&key);
                if s.live.is_none() {
                    tracing::info!(mx = host, key = %key, file = %file.display(), "watching external certificate");
                } else if known {
                    tracing::info!(mx = host, key = %key, "external certificate switched to a pre-published key");
                } else {
                    tracing::error!(
                        mx = host, key = %key, file = %file.display(),
                        "external certificate has a key whose TLSA record was NOT pre-published: DANE senders fail until it propagates; add the next key to prepublish before renewing with a new key"
                    );
                }
                if let Some(old) = s.live.replace(key) {
                    s.retiring.push((old, now + self.roll_timing.hold));
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
        if self.sink.is_some()
            && let Err(e) = self
                .publish_tlsa(host, &external_records(&s, prepublish, now))
                .await
        {
            tracing::error!(mx = host, err = %e, "cannot publish TLSA records");
        }
        let next_retire = s.retiring.iter().map(|(_, d)| from_unix(*d)).min();
        let wake = SystemTime::now() + poll;
        next_retire.map_or(wake, |t| t.min(wake))
    }
}

/// `mxguard rotate`: leaves a roll request for the daemon.
pub fn request_rotation(root: &Path, host: &str) -> Result<(), String> {
    store::ensure_dir(&root.join("rollover")).map_err(|e| e.to_string())?;
    store::write_atomic(
        &request_path(root, host),
        b"requested\n",
        store::PUBLIC_MODE,
    )
    .map_err(|e| e.to_string())
}
