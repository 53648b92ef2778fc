//! The certificate manager: keeps every certificate mxguard owns (`mta-sts.<domain>` for the
//! HTTPS listener, MX hosts for the MTA) issued, renewed, installed and deployed.
//!
//! Per certificate the state directory holds `certs/<name>/key.pem` (0600, generated once
//! and reused by renewals so a TLSA `3 1 1` stays valid), `chain.pem` and `state.json`
//! (schedule, attempts, last error, deployment outcome). State is persisted before and after
//! every step, so a restart resumes the schedule instead of re-ordering.
//!
//! It decides *when* a certificate is renewed (ARI or the one-third rule, backoff on failure);
//! it does not change keys (the TLSA rollover does) and does not serve anything itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::acme::renewal::{self, FailureClass};
use crate::acme::tls::{CertResolver, LocalCa};
use crate::acme::{self, ChallengeKind, Responder};
use crate::state_dir::{self as store, StateDir};

/// Where a certificate goes once issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    /// Served by the HTTPS listener for the certificate's host (its `name`).
    Https,
    /// Written for the MTA, then its reload command is run. Boxed: inline, every certificate's
    /// spec had the size of its deployment settings.
    Mx(Box<MxRole>),
    /// Kept by another tool; mxguard only publishes TLSA for its key. Boxed, like `Mx`.
    ExternalMx(Box<ExternalRole>),
}

/// An MX certificate another tool keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExternalRole {
    /// The certificate file.
    pub file: PathBuf,
    /// TLSA digests published besides its key's.
    pub prepublish: Vec<String>,
}

/// An MX certificate: deployment, live check, key rollover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MxRole {
    /// Shared with the config's `[[mx]]` table (the spec is rebuilt from it at each reload).
    pub deploy: Arc<Deploy>,
    /// STARTTLS address for the live key check; `None`: `<host>:25`.
    pub verify: Option<std::net::SocketAddr>,
    /// Keys roll with TLSA pre-publication (see `rollover`).
    pub rollover: bool,
}

/// MX deployment: files, ownership, reload command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Deploy {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub owner: Option<(u32, u32)>,
    pub cert_mode: u32,
    pub key_mode: u32,
    pub reload: Vec<String>,
    pub reload_timeout: Duration,
}

/// One certificate mxguard keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertSpec {
    /// The host the certificate is for (its one SAN) and its directory under `certs/`.
    pub name: String,
    pub challenge: ChallengeKind,
    pub role: Role,
}

impl CertSpec {
    /// The names the certificate is for: each of mxguard's certificates names one host (kept
    /// once, not also as a list and a role: with 10,000 domains that was 3.5 MB).
    pub(crate) fn sans(&self) -> &[String] {
        std::slice::from_ref(&self.name)
    }
}

/// Persisted per-certificate state (`certs/<name>/state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct CertState {
    /// Who issued the current chain: `acme:<directory>` or `local`.
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub not_before: Option<u64>,
    #[serde(default)]
    pub not_after: Option<u64>,
    /// Next renewal or retry (unix seconds).
    #[serde(default)]
    pub next_attempt: Option<u64>,
    /// Consecutive failures.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_error_class: Option<FailureClass>,
    /// The issuer (see `issuer`) the failed attempts were made with: `next_attempt` is a retry
    /// for that issuer only.
    #[serde(default)]
    pub failed_issuer: Option<String>,
    #[serde(default)]
    pub last_success: Option<u64>,
    /// Fingerprint of the last successful deployment (MX role): SHA-256 (hex) over the chain
    /// and where and how it was written (see [`deployment_fingerprint`]).
    #[serde(default)]
    pub deployed: Option<String>,
    #[serde(default)]
    pub deploy_error: Option<String>,
    /// Next deployment retry (unix seconds) after a failed reload command.
    #[serde(default)]
    pub next_deploy: Option<u64>,
    #[serde(default)]
    pub deploy_attempts: u32,
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(crate) fn from_unix(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

/// Who issues certificates.
pub(crate) enum Backend {
    Local(Arc<LocalCa>),
    /// An ACME CA; the account is logged in (or created) on first use, and registered anew
    /// when the CA no longer knows it.
    Acme {
        settings: acme::AcmeSettings,
        client: tokio::sync::Mutex<Option<Arc<acme::Client>>>,
    },
}

impl Backend {
    pub(crate) fn acme(settings: acme::AcmeSettings) -> Backend {
        Backend::Acme {
            settings,
            client: tokio::sync::Mutex::new(None),
        }
    }

    fn label(&self) -> String {
        match self {
            Backend::Local(_) => "local".into(),
            Backend::Acme { settings, .. } => format!("acme:{}", settings.directory),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CertError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{path}: {message}")]
    Bad { path: PathBuf, message: String },
}

/// The `3 1 1` digest of a certificate's stored key (`None`: no key yet).
pub(crate) fn current_key_digest(root: &Path, name: &str) -> Option<Vec<u8>> {
    let pem = std::fs::read_to_string(acme::cert_path(root, name, "key.pem")).ok()?;
    let key = rcgen::KeyPair::from_pem(&pem).ok()?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    Some(
        ring::digest::digest(&ring::digest::SHA256, &spki)
            .as_ref()
            .to_vec(),
    )
}

/// The key of a certificate, generated on first use (ECDSA P-256) and kept 0600.
pub(crate) fn load_or_create_key(
    state: &StateDir,
    name: &str,
) -> Result<rcgen::KeyPair, CertError> {
    let path = acme::cert_path(state.root(), name, "key.pem");
    if let Some(pem) = store::read_optional(&path)? {
        let text = String::from_utf8_lossy(&pem);
        return rcgen::KeyPair::from_pem(&text).map_err(|e| CertError::Bad {
            path,
            message: format!("unreadable key: {e}"),
        });
    }
    store::ensure_dir(&state.root().join("certs").join(name))?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| {
        CertError::Bad {
            path: path.clone(),
            message: e.to_string(),
        }
    })?;
    store::write_atomic(&path, key.serialize_pem().as_bytes(), store::SECRET_MODE)?;
    Ok(key)
}

use super::deploy::{deploy, deployment_fingerprint, needs_deploy};
use super::report::rfc3339;
pub(crate) use crate::x509::{parse_chain, spki_of_cert, validity};

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn transient(e: CertError) -> acme::AcmeError {
    acme::AcmeError::transient(e.to_string())
}

pub(crate) fn read_state(state: &StateDir, name: &str) -> CertState {
    let path = acme::cert_path(state.root(), name, "state.json");
    match store::read_optional(&path) {
        Ok(Some(b)) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(cert = name, err = %e, "unreadable certificate state; starting afresh");
            CertState::default()
        }),
        _ => CertState::default(),
    }
}

pub(crate) fn write_state(state: &StateDir, name: &str, s: &CertState) -> Result<(), CertError> {
    let path = acme::cert_path(state.root(), name, "state.json");
    store::ensure_dir(&state.root().join("certs").join(name))?;
    let json = serde_json::to_vec_pretty(s).map_err(|e| CertError::Bad {
        path: path.clone(),
        message: e.to_string(),
    })?;
    store::write_atomic(&path, &json, store::PUBLIC_MODE)?;
    Ok(())
}

/// The stored chain of `spec` and its key, if the chain's leaf carries that key.
fn stored_chain(
    state: &StateDir,
    spec: &CertSpec,
) -> Option<(Vec<CertificateDer<'static>>, rcgen::KeyPair)> {
    let pem =
        std::fs::read_to_string(acme::cert_path(state.root(), &spec.name, "chain.pem")).ok()?;
    let chain = parse_chain(&pem);
    let key = load_or_create_key(state, &spec.name).ok()?;
    // Only a chain whose leaf matches our key is usable.
    let leaf_spki = spki_of_cert(chain.first()?)?;
    (leaf_spki == rcgen::PublicKeyData::subject_public_key_info(&key)).then_some((chain, key))
}

/// Makes `resolver` serve the stored HTTPS certificates that are usable (at start, before
/// anything is served, so that no stand-in certificate is needed for them). Each is read and
/// checked here, then dropped: the resolver reads it again when a handshake asks for it.
pub(crate) fn install_stored(state: &StateDir, specs: &[CertSpec], resolver: &CertResolver) {
    for spec in specs {
        if let Role::Https = spec.role {
            match crate::acme::tls::load_stored(state.root(), &spec.name) {
                Ok(Some(_)) => resolver.set_stored(&spec.name),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(cert = %spec.name, err = %e, "stored certificate unusable")
                }
            }
        }
    }
}

/// The manager task's shared handles.
pub(crate) struct Manager<R: Responder> {
    pub state: Arc<StateDir>,
    pub backend: Backend,
    pub resolver: Arc<CertResolver>,
    pub responder: R,
    /// Certificates to keep; replaced on reload (then `wake` is notified).
    pub specs: Arc<arc_swap::ArcSwap<Vec<CertSpec>>>,
    pub wake: Arc<Notify>,
    /// Retry delays after failed orders and failed deployments.
    pub backoff: renewal::Backoff,
    /// Where TLSA and CAA records go (None without listen.dns).
    pub sink: Option<Arc<dyn crate::publish::RecordSink>>,
    /// The CAA records to keep (replaced on reload); refreshed when the account changes.
    pub caa: Arc<arc_swap::ArcSwap<crate::publish::records::CaaPolicy>>,
    /// The account URL and policy the CAA records were last published with.
    pub caa_account:
        tokio::sync::Mutex<Option<(Option<String>, crate::publish::records::CaaPolicy)>>,
    /// The DANE rollover and external-certificate passes (None without listen.dns).
    pub roll: Option<crate::dane::executor::RollExecutor>,
    /// How often roll requests (`mxguard rotate`) are looked for.
    pub roll_poll: Duration,
    /// Where installed and deployed certificates are recorded (wakes the posture checks).
    pub changes: Arc<crate::changelog::ChangeLog>,
}

impl<R: Responder> Manager<R> {
    pub(crate) fn stored_chain(
        &self,
        spec: &CertSpec,
    ) -> Option<(Vec<CertificateDer<'static>>, rcgen::KeyPair)> {
        stored_chain(&self.state, spec)
    }

    /// When `spec` next needs work, from its persisted state.
    fn due(&self, spec: &CertSpec, st: &CertState) -> SystemTime {
        let has_chain = self.stored_chain(spec).is_some();
        let due = due(
            spec,
            st,
            &self.backend.label(),
            has_chain,
            self.stored_chain_pem(spec).as_deref(),
        );
        if has_chain && self.first_deploy_waits(spec) {
            // The certificate exists; only its deployment waits for the rollover.
            return due.max(SystemTime::now() + self.roll_poll);
        }
        due
    }

    /// The rollover holds mxguard's first deployment to this MX (another key is live and the
    /// new key's record is not public for the hold time yet).
    fn first_deploy_waits(&self, spec: &CertSpec) -> bool {
        matches!(&spec.role, Role::Mx(mx) if mx.rollover)
            && self.roll.is_some()
            && crate::dane::executor::first_deploy_waits(self.state.root(), &spec.name)
    }

    fn stored_chain_pem(&self, spec: &CertSpec) -> Option<String> {
        std::fs::read_to_string(acme::cert_path(self.state.root(), &spec.name, "chain.pem")).ok()
    }

    /// Runs until `shutdown`: sleeps until the earliest due certificate (or a wake-up), then
    /// works on every due one.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        // The stored certificates were installed by the daemon before anything was served.
        // When each certificate (by its place in `specs`) next needs a look, UNIX_EPOCH for
        // now: kept in memory, so a wake-up costs nothing for the certificates that are not due.
        let mut specs = self.specs.load_full();
        let mut schedule: Vec<SystemTime> = vec![UNIX_EPOCH; specs.len()];
        let mut requests = crate::dane::files::RotateRequests::default();
        loop {
            let now = SystemTime::now();
            let current = self.specs.load_full();
            if !Arc::ptr_eq(&current, &specs) {
                specs = current; // reload: look at every certificate again
                schedule = vec![UNIX_EPOCH; specs.len()];
            }
            for host in requests.poll(self.state.root()) {
                for (spec, at) in specs.iter().zip(schedule.iter_mut()) {
                    if spec.name == host {
                        *at = now;
                    }
                }
            }
            let mut next = now + Duration::from_secs(3600);
            for (spec, at) in specs.iter().zip(schedule.iter_mut()) {
                if *at > now {
                    next = next.min(*at);
                    continue;
                }
                if shutdown.is_cancelled() {
                    return;
                }
                let Some(t) = self.pass(spec, now, &shutdown).await else {
                    return;
                };
                *at = t;
                next = next.min(t);
            }
            // Roll requests (`mxguard rotate`) are looked for at least every poll interval.
            let next = next.min(SystemTime::now() + self.roll_poll);
            let sleep = next
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::from_millis(100));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => schedule.fill(UNIX_EPOCH),
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Works on one certificate (and its rollover or external-certificate pass); returns when
    /// it next needs a look, or `None` at shutdown.
    async fn pass(
        &self,
        spec: &CertSpec,
        now: SystemTime,
        shutdown: &CancellationToken,
    ) -> Option<SystemTime> {
        let mut next = now + Duration::from_secs(3600);
        if let Role::ExternalMx(ext) = &spec.role {
            let ExternalRole { file, prepublish } = &**ext;
            if let Some(roll) = &self.roll {
                next = roll.external_pass(&spec.name, file, prepublish).await;
            }
            return Some(next);
        }
        if let Role::Mx(mx) = &spec.role
            && mx.rollover
            && let Some(roll) = &self.roll
        {
            next = next.min(roll.roll_pass(self, &spec.name, mx.verify).await);
            if crate::dane::executor::in_roll(self.state.root(), &spec.name) {
                // The roll owns this certificate until it completes.
                return Some(next);
            }
        }
        let st = read_state(&self.state, &spec.name);
        let due = self.due(spec, &st);
        if due <= now {
            // An order can take minutes (validation, dns-01 propagation): shutdown
            // abandons it. Nothing is lost: state is written only after a step
            // completes, so the next start orders again.
            tokio::select! {
                _ = shutdown.cancelled() => {
                    tracing::info!(cert = %spec.name, "certificate work abandoned at shutdown");
                    return None;
                }
                _ = self.work(spec, st) => {}
            }
            // Re-read: `work` persisted the new schedule.
            let st = read_state(&self.state, &spec.name);
            Some(next.min(self.due(spec, &st).max(now + Duration::from_secs(1))))
        } else {
            Some(next.min(due))
        }
    }

    async fn work(&self, spec: &CertSpec, mut st: CertState) {
        let now = SystemTime::now();
        let needs_issue = st.issuer.as_deref() != Some(self.backend.label().as_str())
            || self.stored_chain(spec).is_none()
            || st.next_attempt.is_none_or(|t| from_unix(t) <= now);
        if needs_issue {
            match self.issue(spec, &mut st).await {
                Ok(()) => {}
                Err(e) => {
                    st.attempts += 1;
                    st.failed_issuer = Some(self.backend.label());
                    st.last_error = Some(e.message.clone());
                    st.last_error_class = Some(e.class);
                    // The certificate being served expires at `not_after`: retry before.
                    let retry = renewal::retry_time_before_expiry(
                        now,
                        st.attempts,
                        e.class,
                        e.retry_after,
                        self.backoff,
                        st.not_after.map(from_unix),
                    );
                    st.next_attempt = Some(unix(retry));
                    let near = match (st.not_before, st.not_after) {
                        (Some(a), Some(b)) => renewal::near_expiry(from_unix(a), from_unix(b), now),
                        _ => true,
                    };
                    if near || e.class == FailureClass::Permanent {
                        tracing::error!(cert = %spec.name, err = %e.message, attempts = st.attempts, retry_in_s = retry.duration_since(now).map_or(0, |d| d.as_secs()), "certificate could not be obtained");
                    } else {
                        tracing::warn!(cert = %spec.name, err = %e.message, attempts = st.attempts, "certificate renewal failed; will retry");
                    }
                    if let Err(e) = write_state(&self.state, &spec.name, &st) {
                        tracing::error!(cert = %spec.name, err = %e, "cannot persist certificate state");
                    }
                    return;
                }
            }
        }
        if let Role::Mx(m) = &spec.role {
            self.deploy_mx(spec, &m.deploy, &mut st).await;
        }
        if let Err(e) = write_state(&self.state, &spec.name, &st) {
            tracing::error!(cert = %spec.name, err = %e, "cannot persist certificate state");
        }
    }

    async fn issue(&self, spec: &CertSpec, st: &mut CertState) -> Result<(), acme::AcmeError> {
        let key = load_or_create_key(&self.state, &spec.name).map_err(transient)?;
        let previous = self.stored_chain(spec).map(|(c, _)| c[0].to_vec());
        let chain_pem = self.order_chain(spec, &key, previous.as_deref()).await?;
        self.commit_chain(spec, st, &chain_pem).await
    }

    /// Orders a certificate for `spec`'s names with `key` (ACME or the local CA) and checks
    /// that it carries that key. Writes nothing.
    pub(crate) async fn order_chain(
        &self,
        spec: &CertSpec,
        key: &rcgen::KeyPair,
        previous: Option<&[u8]>,
    ) -> Result<String, acme::AcmeError> {
        tracing::info!(cert = %spec.name, issuer = %self.backend.label(), challenge = spec.challenge.as_str(), "ordering certificate");
        let chain_pem = match &self.backend {
            Backend::Local(ca) => {
                ca.issue_pem(spec.sans(), key, SystemTime::now())
                    .map_err(|e| {
                        transient(CertError::Bad {
                            path: self.state.path(crate::acme::tls::LOCAL_CA_CERT),
                            message: e.to_string(),
                        })
                    })?
            }
            Backend::Acme { settings, client } => {
                let csr = acme::csr(spec.sans(), key).map_err(acme::AcmeError::permanent)?;
                let c = acme_login(&self.state, settings, client).await?;
                self.refresh_caa().await;
                let ari = match previous {
                    Some(der) => c.renewal_window(der).await.ok().flatten(),
                    None => None,
                };
                let replaces = if ari.is_some() { previous } else { None };
                let ordered = c
                    .order(spec.sans(), &csr, spec.challenge, &self.responder, replaces)
                    .await;
                let (_, chain_pem) = match ordered {
                    Err(e) if e.account_does_not_exist() => {
                        // The CA deleted the account or lost its data (a test CA restarted):
                        // nothing but a new registration helps, and waiting makes it no better.
                        let c = acme_register(&self.state, settings, client, &c).await?;
                        self.refresh_caa().await;
                        // `replaces` names a certificate of the old account: order afresh.
                        let pem = c
                            .order(spec.sans(), &csr, spec.challenge, &self.responder, None)
                            .await?;
                        (c, pem)
                    }
                    other => (c, other?),
                };
                chain_pem
            }
        };
        let chain = parse_chain(&chain_pem);
        let leaf = chain
            .first()
            .ok_or_else(|| acme::AcmeError::transient("CA returned no certificate"))?;
        if spki_of_cert(leaf).as_deref()
            != Some(rcgen::PublicKeyData::subject_public_key_info(key).as_slice())
        {
            return Err(acme::AcmeError::transient(
                "issued certificate does not carry our key",
            ));
        }
        tracing::info!(cert = %spec.name, issuer = %self.backend.label(), "certificate issued");
        Ok(chain_pem)
    }

    /// The logged-in ACME client, if the backend is ACME and it has logged in.
    async fn acme_client(&self) -> Option<Arc<acme::Client>> {
        match &self.backend {
            Backend::Acme { client, .. } => client.lock().await.clone(),
            Backend::Local(_) => None,
        }
    }

    /// Makes `chain_pem` (issued for the key that is already `certs/<name>/key.pem`) the
    /// current certificate: stores it, installs it (HTTPS role), schedules its renewal.
    pub(crate) async fn commit_chain(
        &self,
        spec: &CertSpec,
        st: &mut CertState,
        chain_pem: &str,
    ) -> Result<(), acme::AcmeError> {
        let chain = parse_chain(chain_pem);
        let leaf = chain
            .first()
            .ok_or_else(|| acme::AcmeError::transient("empty certificate chain"))?;
        let (nb, na) = validity(leaf)
            .ok_or_else(|| acme::AcmeError::transient("issued certificate is unparseable"))?;
        let acme_client = self.acme_client().await;
        store::write_atomic(
            &acme::cert_path(self.state.root(), &spec.name, "chain.pem"),
            chain_pem.as_bytes(),
            store::PUBLIC_MODE,
        )
        .map_err(|e| transient(e.into()))?;
        if let Role::Https = spec.role {
            let host = &spec.name;
            // Checked as the resolver will read it (chain.pem with key.pem), then served.
            match crate::acme::tls::load_stored(self.state.root(), host) {
                Ok(Some(_)) => self.resolver.set_stored(host),
                Ok(None) => {
                    return Err(transient(CertError::Bad {
                        path: PathBuf::from(&spec.name),
                        message: "chain.pem or key.pem vanished as it was stored".into(),
                    }));
                }
                Err(e) => {
                    return Err(transient(CertError::Bad {
                        path: PathBuf::from(&spec.name),
                        message: e.to_string(),
                    }));
                }
            }
        }
        let now = SystemTime::now();
        let jitter: f64 = rand::random();
        let next = match &acme_client {
            Some(c) => match c.renewal_window(leaf).await {
                Ok(Some((a, b))) => renewal::ari_time(a, b, now, jitter),
                _ => renewal::one_third_rule(nb, na, jitter),
            },
            None => renewal::one_third_rule(nb, na, jitter),
        };
        st.issuer = Some(self.backend.label());
        st.not_before = Some(unix(nb));
        st.not_after = Some(unix(na));
        st.next_attempt = Some(unix(next));
        st.attempts = 0;
        st.last_error = None;
        st.last_error_class = None;
        st.failed_issuer = None;
        st.last_success = Some(unix(now));
        st.deployed = None; // a new chain must be deployed
        tracing::info!(cert = %spec.name, not_after = %rfc3339(unix(na)), next_renewal = %rfc3339(unix(next)), "certificate installed");
        self.changes.record(
            "certificate",
            &spec.name,
            format!("installed; valid until {}", rfc3339(unix(na))),
        );
        Ok(())
    }

    pub(crate) async fn deploy_mx(&self, spec: &CertSpec, d: &Deploy, st: &mut CertState) {
        if self.first_deploy_waits(spec) {
            return;
        }
        let Some((chain, key)) = self.stored_chain(spec) else {
            return;
        };
        let Ok(chain_pem) =
            std::fs::read_to_string(acme::cert_path(self.state.root(), &spec.name, "chain.pem"))
        else {
            return;
        };
        debug_assert!(!chain.is_empty());
        if !needs_deploy(d, st, &chain_pem) {
            return;
        }
        let digest = deployment_fingerprint(d, &chain_pem);
        let now = SystemTime::now();
        if let Some(n) = st.next_deploy
            && from_unix(n) > now
        {
            return;
        }
        let pid_file = acme::cert_path(self.state.root(), &spec.name, "reload.pid");
        match deploy(d, &chain_pem, &key.serialize_pem(), &pid_file).await {
            Ok(()) => {
                if d.reload.is_empty() {
                    tracing::info!(cert = %spec.name, file = %d.cert_file.display(), "certificate deployed (no reload command configured)");
                } else {
                    tracing::info!(cert = %spec.name, file = %d.cert_file.display(), "certificate deployed and MTA reloaded");
                }
                st.deployed = Some(digest);
                self.changes.record(
                    "certificate",
                    &spec.name,
                    format!("deployed to {}", d.cert_file.display()),
                );
                st.deploy_error = None;
                st.next_deploy = None;
                st.deploy_attempts = 0;
            }
            Err(e) => {
                st.deploy_attempts += 1;
                let retry = renewal::retry_time(
                    now,
                    st.deploy_attempts,
                    FailureClass::Transient,
                    None,
                    self.backoff,
                );
                tracing::error!(cert = %spec.name, err = %e, attempts = st.deploy_attempts, "deployment failed; will retry");
                st.deploy_error = Some(e.to_string());
                st.next_deploy = Some(unix(retry));
            }
        }
    }
}

/// When `spec` next needs work: `label` is the current issuer, `have_chain` whether a chain
/// matching the key is stored, `chain_pem` that chain (for the MX deployment check).
fn due(
    spec: &CertSpec,
    st: &CertState,
    label: &str,
    have_chain: bool,
    chain_pem: Option<&str>,
) -> SystemTime {
    let scheduled = st.next_attempt.map_or(UNIX_EPOCH, from_unix);
    if st.issuer.as_deref() != Some(label) || !have_chain {
        // Never issued by this issuer: now, unless a retry after a failure with this very
        // issuer is scheduled. `next_attempt` may be the renewal time of another issuer's
        // certificate (the CA was switched, e.g. from staging to production): not a reason
        // to keep serving that certificate until then.
        let retrying = st.attempts > 0 && st.failed_issuer.as_deref() == Some(label);
        return if retrying { scheduled } else { UNIX_EPOCH };
    }
    let mut due = scheduled;
    if let (Role::Mx(mx), Some(chain_pem)) = (&spec.role, chain_pem) {
        match st.next_deploy {
            Some(n) => due = due.min(from_unix(n)),
            None if needs_deploy(&mx.deploy, st, chain_pem) => due = UNIX_EPOCH,
            None => {}
        }
    }
    due
}

impl<R: Responder> Manager<R> {
    /// Puts the current account URL into the CAA records (after an account was created or
    /// re-registered); no change, no new serial.
    async fn refresh_caa(&self) {
        let Some(sink) = &self.sink else {
            return;
        };
        let account = crate::acme::account_url(self.state.root());
        let policy = crate::publish::records::CaaPolicy::clone(&self.caa.load());
        let mut last = self.caa_account.lock().await;
        if last
            .as_ref()
            .is_some_and(|(a, p)| *a == account && *p == policy)
        {
            return; // nothing changed: no work per order at any number of zones
        }
        let changes = match policy.changes(account.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(err = %e, "cannot build CAA records");
                return;
            }
        };
        match sink.apply(changes).await {
            Ok(_) => *last = Some((account, policy)),
            Err(e) => tracing::warn!(err = %e, "cannot update CAA records"),
        }
    }
}

/// The logged-in ACME client, logging in (or registering) on first use.
async fn acme_login(
    state: &StateDir,
    settings: &acme::AcmeSettings,
    cell: &tokio::sync::Mutex<Option<Arc<acme::Client>>>,
) -> Result<Arc<acme::Client>, acme::AcmeError> {
    let mut guard = cell.lock().await;
    if let Some(c) = guard.as_ref() {
        return Ok(c.clone());
    }
    let c = Arc::new(acme::Client::login(state, settings).await?);
    *guard = Some(c.clone());
    Ok(c)
}

/// Registers a new account in place of `gone`, which the CA no longer knows.
async fn acme_register(
    state: &StateDir,
    settings: &acme::AcmeSettings,
    cell: &tokio::sync::Mutex<Option<Arc<acme::Client>>>,
    gone: &acme::Client,
) -> Result<Arc<acme::Client>, acme::AcmeError> {
    let mut guard = cell.lock().await;
    *guard = None;
    tracing::error!(
        account = %gone.account_id(),
        directory = %settings.directory,
        "the CA no longer knows account {}; registering a new account",
        gone.account_id()
    );
    let c = Arc::new(acme::Client::register(state, settings).await?);
    tracing::warn!(
        old_account = %gone.account_id(),
        account = %c.account_id(),
        "new ACME account registered and stored; update CAA accounturi parameters that name the old account"
    );
    *guard = Some(c.clone());
    Ok(c)
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
