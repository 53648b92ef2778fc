//! TLS for the HTTPS listener: a certificate resolver whose entries are swapped at runtime
//! (chosen by SNI), the rustls server configuration, and the local issuer (mxguard's own CA
//! in the state directory, for demos, tests and until ACME has issued).
//!
//! This module does not decide when certificates change; it holds what it is given.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::state_dir::{self as store, StateDir, StoreError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what}: {source}")]
    Rcgen {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("{}: {reason}", .path.display())]
    Unusable { path: PathBuf, reason: String },
    #[error("{what}: {source}")]
    Rustls {
        what: String,
        #[source]
        source: rustls::Error,
    },
}

/// Certificates by host name; the HTTPS listener's rustls resolver.
///
/// A host's certificate is either *held* in memory (the local CA's stand-ins, served until
/// the first real certificate exists) or *stored*: `certs/<host>/chain.pem` and `key.pem` in
/// the state directory, read when a handshake asks for it and kept in a cache of the
/// [`CACHE_HOSTS`] most recently used. Held for every host, a chain and its parsed key cost
/// about 0.9 KB per domain; policy fetches are rare (a sender caches a policy for its
/// `max_age`), so most hosts need none most of the time.
pub(crate) struct CertResolver {
    /// The state directory the stored certificates are read from.
    state_root: PathBuf,
    /// Every host served, behind a lock that handshakes share (held for a lookup or an
    /// insert): a map copied for every change cost O(N) per certificate, O(N²) for a start.
    hosts: RwLock<HashMap<Box<str>, Source>>,
    cache: Mutex<Cache>,
    /// tls-alpn-01 challenge certificates (RFC 8737), presented only to clients that offer
    /// ALPN `acme-tls/1`.
    alpn_challenges: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

/// Where a host's certificate comes from.
enum Source {
    /// In the state directory, checked when it was installed.
    Stored,
    Held(Arc<CertifiedKey>),
}

/// Most stored certificates kept parsed at once (about 1 KB each).
pub(crate) const CACHE_HOSTS: usize = 1024;

/// The stored certificates used last, at most [`CACHE_HOSTS`].
#[derive(Default)]
struct Cache {
    /// Each with the `clock` of its last use.
    keys: HashMap<Box<str>, (Arc<CertifiedKey>, u64)>,
    /// Counts lookups and inserts.
    clock: u64,
    /// Changes whenever a host's certificate may have changed: a certificate read before
    /// that is not kept.
    generation: u64,
}

impl Cache {
    fn get(&mut self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.clock += 1;
        let (key, used) = self.keys.get_mut(host)?;
        *used = self.clock;
        Some(key.clone())
    }

    /// Keeps `key` unless the certificates changed since `generation`; the entry used
    /// longest ago makes room.
    fn insert(&mut self, host: &str, key: Arc<CertifiedKey>, generation: u64) {
        if generation != self.generation {
            return;
        }
        if self.keys.len() >= CACHE_HOSTS
            && let Some(oldest) = self
                .keys
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(h, _)| h.clone())
        {
            self.keys.remove(&oldest);
        }
        self.clock += 1;
        self.keys.insert(host.into(), (key, self.clock));
    }

    fn forget(&mut self, keep: impl Fn(&str) -> bool) {
        self.generation += 1;
        self.keys.retain(|h, _| keep(h));
    }
}

/// The ALPN protocol of tls-alpn-01 validation.
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts = self.read();
        let mut names: Vec<_> = hosts.keys().collect();
        names.sort();
        f.debug_struct("CertResolver")
            .field("hosts", &names)
            .finish()
    }
}

impl CertResolver {
    /// A resolver with no hosts that reads stored certificates from `state_root`.
    pub(crate) fn new(state_root: &Path) -> CertResolver {
        CertResolver {
            state_root: state_root.to_path_buf(),
            hosts: RwLock::default(),
            cache: Mutex::default(),
            alpn_challenges: ArcSwap::default(),
        }
    }

    /// Serves `key` for `host` (held in memory) from the next handshake on.
    pub(crate) fn set(&self, host: &str, key: Arc<CertifiedKey>) {
        self.install(host, Source::Held(key));
    }

    /// Serves the stored certificate of `host` from the next handshake on: the caller has
    /// checked it ([`load_stored`]).
    pub(crate) fn set_stored(&self, host: &str) {
        self.install(host, Source::Stored);
    }

    fn install(&self, host: &str, source: Source) {
        let host = host.to_ascii_lowercase();
        self.cache_lock().forget(|h| h != host);
        self.hosts
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(host.into(), source);
    }

    /// Removes hosts not in `keep`.
    pub(crate) fn retain(&self, keep: &[String]) {
        let keep: std::collections::HashSet<&str> = keep.iter().map(String::as_str).collect();
        self.cache_lock().forget(|h| keep.contains(h));
        self.hosts
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|h, _| keep.contains(&**h));
    }

    /// Whether `host` has a certificate (held or stored), without reading it.
    pub(crate) fn has(&self, host: &str) -> bool {
        self.read().contains_key(host.to_ascii_lowercase().as_str())
    }

    /// The certificate of `host`: held, cached, or read from the state directory. A stored
    /// certificate that cannot be read any more is not served (a warning says why).
    pub(crate) fn get(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let host = host.to_ascii_lowercase();
        match self.read().get(host.as_str())? {
            Source::Held(key) => return Some(key.clone()),
            Source::Stored => {}
        }
        let generation = {
            let mut cache = self.cache_lock();
            if let Some(key) = cache.get(&host) {
                return Some(key);
            }
            cache.generation
        };
        match load_stored(&self.state_root, &host) {
            Ok(Some(key)) => {
                self.cache_lock().insert(&host, key.clone(), generation);
                Some(key)
            }
            Ok(None) => {
                if let Some(skipped) = crate::logfield::throttle("https: stored certificate gone") {
                    tracing::warn!(host = %host, skipped, "stored certificate or key is missing: not served");
                }
                None
            }
            Err(e) => {
                if let Some(skipped) =
                    crate::logfield::throttle("https: stored certificate unusable")
                {
                    tracing::warn!(host = %host, err = %e, skipped, "stored certificate unusable: not served");
                }
                None
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Box<str>, Source>> {
        self.hosts.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The host that sorts first (without sorting them all).
    fn first_host(&self) -> Option<String> {
        self.read().keys().min().map(|h| h.to_string())
    }

    /// Presents `key` to tls-alpn-01 validators for `host` (None: stop).
    pub(crate) fn set_alpn_challenge(&self, host: &str, key: Option<Arc<CertifiedKey>>) {
        let host = host.to_ascii_lowercase();
        self.alpn_challenges.rcu(|old| {
            let mut m = HashMap::clone(old);
            match &key {
                Some(k) => m.insert(host.clone(), k.clone()),
                None => m.remove(&host),
            };
            m
        });
    }
}

/// The stored certificate of `host` (`certs/<host>/chain.pem` and `key.pem` under
/// `state_root`), checked to carry that key; `None` when either file does not exist.
pub(crate) fn load_stored(
    state_root: &Path,
    host: &str,
) -> Result<Option<Arc<CertifiedKey>>, TlsError> {
    let chain_path = crate::acme::cert_path(state_root, host, "chain.pem");
    let key_path = crate::acme::cert_path(state_root, host, "key.pem");
    let (Some(chain), Some(key)) = (
        store::read_optional(&chain_path)?,
        store::read_optional(&key_path)?,
    ) else {
        return Ok(None);
    };
    let unusable = |path: &Path, reason: &str| TlsError::Unusable {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let chain = crate::x509::parse_chain(&String::from_utf8_lossy(&chain));
    if chain.is_empty() {
        return Err(unusable(&chain_path, "no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|_| unusable(&key_path, "no private key in it"))?;
    let ck = certified_key_der(chain, &key).map_err(|e| unusable(&key_path, &e.to_string()))?;
    ck.keys_match().map_err(|_| {
        unusable(
            &chain_path,
            "its certificate does not carry the key of key.pem",
        )
    })?;
    Ok(Some(ck))
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // RFC 8461 senders always send SNI; without it there is no host to choose.
        let name = hello.server_name()?.to_ascii_lowercase();
        let acme = hello
            .alpn()
            .is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_ALPN));
        if acme {
            return self.alpn_challenges.load().get(&name).cloned();
        }
        self.get(&name)
    }
}

/// The rustls configuration of the HTTPS listener (h2 and HTTP/1.1).
pub(crate) fn server_config(resolver: Arc<CertResolver>) -> Arc<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring provider supports the default protocol versions")
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    // acme-tls/1 last: only validators that offer nothing else negotiate it.
    // http/1.0 too: an HTTP/1.0 client that offers only it is served, not refused.
    cfg.alpn_protocols = vec![
        b"h2".to_vec(),
        b"http/1.1".to_vec(),
        b"http/1.0".to_vec(),
        ACME_TLS_ALPN.to_vec(),
    ];
    Arc::new(cfg)
}

/// For SMTP STARTTLS: the certificate for the SNI name if there is one, else any (senders
/// doing opportunistic TLS for reports accept it; DANE/MTA-STS do not apply to this listener).
#[derive(Debug)]
struct AnyHostResolver(Arc<CertResolver>);

impl ResolvesServerCert for AnyHostResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(ck) = hello.server_name().and_then(|n| self.0.get(n)) {
            return Some(ck);
        }
        self.0.get(&self.0.first_host()?)
    }
}

/// The rustls configuration of the SMTP listener's STARTTLS (no ALPN).
pub(crate) fn smtp_server_config(resolver: Arc<CertResolver>) -> Arc<rustls::ServerConfig> {
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring provider supports the default protocol versions")
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(AnyHostResolver(resolver)));
    Arc::new(cfg)
}

/// Distinct issuer certificates kept once for every served chain that carries them.
const MAX_SHARED_ISSUERS: usize = 32;

/// `der` (an issuer certificate of a served chain) as the one copy kept for every chain: each
/// chain from one CA carries the same intermediates (some 1.3 KiB each from a public CA), and
/// a host with thousands of domains held them thousands of times. At most
/// [`MAX_SHARED_ISSUERS`] distinct ones are kept, for the life of the process (a CA uses a
/// few at a time); past that a chain keeps its own copy.
fn shared_issuer(der: CertificateDer<'static>) -> CertificateDer<'static> {
    static SHARED: std::sync::Mutex<Vec<&'static [u8]>> = std::sync::Mutex::new(Vec::new());
    let Ok(mut shared) = SHARED.lock() else {
        return der;
    };
    if let Some(kept) = shared.iter().find(|k| **k == der.as_ref()) {
        return CertificateDer::from(*kept);
    }
    if shared.len() >= MAX_SHARED_ISSUERS {
        return der;
    }
    // Leaked on purpose, bounded above: these live as long as the process serves chains.
    let kept: &'static [u8] = Box::leak(Box::from(der.as_ref()));
    shared.push(kept);
    CertificateDer::from(kept)
}

/// Builds a rustls `CertifiedKey` from a DER chain (leaf first) and a PKCS#8 key; the issuer
/// certificates are shared with the other chains ([`shared_issuer`]).
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: &[u8],
) -> Result<Arc<CertifiedKey>, TlsError> {
    certified_key_der(
        chain,
        &PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.to_vec())),
    )
}

fn certified_key_der(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'_>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = chain
        .into_iter()
        .enumerate()
        .map(|(i, c)| if i == 0 { c } else { shared_issuer(c) })
        .collect();
    let signing =
        rustls::crypto::ring::sign::any_supported_type(key).map_err(|e| TlsError::Rustls {
            what: "loading certificate key".into(),
            source: e,
        })?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// mxguard's own certificate authority, kept in `<state_dir>/local-ca/`. Its certificates are
/// not publicly trusted: senders will not accept them; they serve demos, tests and the time
/// before the first ACME certificate.
pub(crate) struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCa").finish_non_exhaustive()
    }
}

/// Relative paths of the local CA in the state directory.
pub(crate) const LOCAL_CA_CERT: &str = "local-ca/ca.pem";
pub(crate) const LOCAL_CA_KEY: &str = "local-ca/ca.key";

/// Lifetime of certificates the local CA issues.
pub(crate) const LOCAL_CERT_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

fn rcgen_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> TlsError {
    let what = what.into();
    move |source| TlsError::Rcgen { what, source }
}

impl LocalCa {
    /// Loads the CA from the state directory, creating it on first use (key 0600).
    pub(crate) fn load_or_create(state: &StateDir) -> Result<LocalCa, TlsError> {
        let cert_path = state.path(LOCAL_CA_CERT);
        let key_path = state.path(LOCAL_CA_KEY);
        if let (Some(cert), Some(key)) = (
            store::read_optional(&cert_path)?,
            store::read_optional(&key_path)?,
        ) {
            let key_pem = String::from_utf8_lossy(&key);
            let cert_pem = String::from_utf8_lossy(&cert).into_owned();
            let key = KeyPair::from_pem(&key_pem)
                .map_err(rcgen_err(format!("{}", key_path.display())))?;
            let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
                .map_err(rcgen_err(format!("{}", cert_path.display())))?;
            return Ok(LocalCa { issuer, cert_pem });
        }
        store::ensure_dir(&state.path("local-ca"))?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(rcgen_err("generating local CA key"))?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err("local CA"))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "mxguard");
        dn.push(
            DnType::CommonName,
            "mxguard local CA (not publicly trusted)",
        );
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_err("self-signing local CA"))?;
        store::write_atomic(
            &key_path,
            key.serialize_pem().as_bytes(),
            store::SECRET_MODE,
        )?;
        store::write_atomic(&cert_path, cert.pem().as_bytes(), store::PUBLIC_MODE)?;
        let issuer = Issuer::new(params, key);
        Ok(LocalCa {
            issuer,
            cert_pem: cert.pem(),
        })
    }

    #[cfg(test)]
    /// The CA certificate (PEM) that clients must trust to accept local certificates.
    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `host` with a fresh P-256 key, valid from an hour before `now`.
    pub(crate) fn issue(&self, host: &str, now: SystemTime) -> Result<Arc<CertifiedKey>, TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(rcgen_err(format!("generating key for {host}")))?;
        let pem = self.issue_pem(&[host.to_string()], &key, now)?;
        certified_key(crate::x509::parse_chain(&pem), key.serialized_der())
    }
}

impl LocalCa {
    /// Issues a certificate for `sans` with the given key; returns the PEM chain (leaf, CA).
    pub(crate) fn issue_pem(
        &self,
        sans: &[String],
        key: &KeyPair,
        now: SystemTime,
    ) -> Result<String, TlsError> {
        let first = sans.first().cloned().unwrap_or_default();
        let mut params = CertificateParams::new(sans.to_vec()).map_err(rcgen_err(&first))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, first.as_str());
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::from(now);
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::try_from(LOCAL_CERT_LIFETIME).unwrap_or_default();
        let cert = params
            .signed_by(key, &self.issuer)
            .map_err(rcgen_err(format!("issuing certificate for {first}")))?;
        Ok(format!("{}{}", cert.pem(), self.cert_pem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_certificates_are_kept_once() {
        let a = shared_issuer(CertificateDer::from(vec![0x30, 3, 1, 2, 3]));
        let b = shared_issuer(CertificateDer::from(vec![0x30, 3, 1, 2, 3]));
        let other = shared_issuer(CertificateDer::from(vec![0x30, 3, 9, 9, 9]));
        assert_eq!(a.as_ref(), b.as_ref());
        assert_eq!(a.as_ref().as_ptr(), b.as_ref().as_ptr(), "one copy");
        assert_ne!(a.as_ref(), other.as_ref());
    }

    #[test]
    fn local_ca_persists_and_issues_chains() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_locked(dir.path()).unwrap();
        let ca = LocalCa::load_or_create(&state).unwrap();
        let pem1 = ca.cert_pem().to_string();
        let ck = ca.issue("mta-sts.example.com", SystemTime::now()).unwrap();
        assert_eq!(ck.cert.len(), 2, "leaf + CA");
        let again = LocalCa::load_or_create(&state).unwrap();
        assert_eq!(again.cert_pem(), pem1, "CA reused after restart");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.path(LOCAL_CA_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn resolver_swaps_entries() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_locked(dir.path()).unwrap();
        let ca = LocalCa::load_or_create(&state).unwrap();
        let r = CertResolver::new(dir.path());
        let a = ca.issue("mta-sts.a.example", SystemTime::now()).unwrap();
        r.set("MTA-STS.A.example", a.clone());
        assert!(Arc::ptr_eq(&r.get("mta-sts.a.example").unwrap(), &a));
        r.retain(&[]);
        assert!(r.get("mta-sts.a.example").is_none());
    }

    /// Stores a chain from `ca` for `host` with a fresh key, as the certificate manager does.
    fn store(state: &StateDir, ca: &LocalCa, host: &str) -> String {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = ca
            .issue_pem(&[host.to_string()], &key, SystemTime::now())
            .unwrap();
        store::ensure_dir(&state.root().join("certs").join(host)).unwrap();
        let path = |f| crate::acme::cert_path(state.root(), host, f);
        store::write_atomic(&path("key.pem"), key.serialize_pem().as_bytes(), 0o600).unwrap();
        store::write_atomic(&path("chain.pem"), pem.as_bytes(), 0o644).unwrap();
        pem
    }

    fn leaf(ck: &CertifiedKey) -> Vec<u8> {
        ck.cert[0].to_vec()
    }

    #[test]
    fn stored_certificates_are_read_when_asked_for_and_again_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_locked(dir.path()).unwrap();
        let ca = LocalCa::load_or_create(&state).unwrap();
        let r = CertResolver::new(dir.path());
        let host = "mta-sts.a.example";
        assert!(
            load_stored(dir.path(), host).unwrap().is_none(),
            "nothing stored yet"
        );
        let first = crate::x509::parse_chain(&store(&state, &ca, host));
        r.set_stored(host);
        assert!(r.has("MTA-STS.a.example"));
        let got = r.get(host).expect("read from the state directory");
        assert_eq!(leaf(&got), first[0].to_vec());
        assert!(Arc::ptr_eq(&got, &r.get(host).unwrap()), "cached");
        // A renewal writes a new chain, then installs it: the next handshake gets the new one.
        let second = crate::x509::parse_chain(&store(&state, &ca, host));
        r.set_stored(host);
        assert_eq!(leaf(&r.get(host).unwrap()), second[0].to_vec());
        // Files that vanish are not served; nor is a host that was removed.
        std::fs::remove_file(crate::acme::cert_path(dir.path(), host, "chain.pem")).unwrap();
        r.set_stored(host);
        assert!(r.get(host).is_none());
        r.retain(&[]);
        assert!(!r.has(host));
    }

    #[test]
    fn a_stored_chain_without_its_key_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_locked(dir.path()).unwrap();
        let ca = LocalCa::load_or_create(&state).unwrap();
        let host = "mta-sts.b.example";
        store(&state, &ca, host);
        let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key_path = crate::acme::cert_path(dir.path(), host, "key.pem");
        store::write_atomic(&key_path, other.serialize_pem().as_bytes(), 0o600).unwrap();
        let err = load_stored(dir.path(), host).unwrap_err().to_string();
        assert!(
            err.contains("chain.pem") && err.contains("does not carry"),
            "{err}"
        );
        store::write_atomic(&key_path, b"not a key", 0o600).unwrap();
        let err = load_stored(dir.path(), host).unwrap_err().to_string();
        assert!(
            err.contains("key.pem") && err.contains("no private key"),
            "{err}"
        );
    }

    #[test]
    fn the_cache_keeps_the_most_recently_used_and_nothing_read_before_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_locked(dir.path()).unwrap();
        let ca = LocalCa::load_or_create(&state).unwrap();
        let ck = ca.issue("mta-sts.c.example", SystemTime::now()).unwrap();
        let mut cache = Cache::default();
        for i in 0..CACHE_HOSTS {
            cache.insert(&format!("h{i}"), ck.clone(), 0);
        }
        assert!(cache.get("h0").is_some(), "h0 used last, h1 longest ago");
        cache.insert("new", ck.clone(), 0);
        assert_eq!(cache.keys.len(), CACHE_HOSTS);
        assert!(cache.get("h1").is_none() && cache.get("h0").is_some());
        assert!(cache.get("new").is_some());
        // Read before a change (generation 0), kept after it: not cached.
        cache.forget(|_| true);
        cache.insert("late", ck, 0);
        assert!(cache.get("late").is_none());
    }
}
