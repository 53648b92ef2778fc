//! The ACME client (RFC 8555, instant-acme): the stored account, and one order from new-order
//! to certificate with a key and CSR of our own. Challenges are answered through a
//! [`Responder`] that the daemon implements (http-01 on the plain listener, tls-alpn-01 on the
//! HTTPS listener, dns-01 in the own zone).
//!
//! This module does not decide when to order (see `manager` and `renewal`) and never writes
//! files except the account credentials, through `crate::state_dir`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use crate::acme::renewal::FailureClass;
use crate::state_dir::{self as store, StateDir};

/// Where the account credentials live in the state directory (0600).
pub(crate) const ACCOUNT_FILE: &str = "acme/account.json";

/// The URL of the stored ACME account, once it exists (what CAA `accounturi` names).
pub(crate) fn account_url(state_root: &std::path::Path) -> Option<String> {
    std::fs::read(state_root.join(ACCOUNT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["credentials"]["id"].as_str().map(str::to_string))
}

/// A challenge type, as chosen per certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum ChallengeKind {
    #[serde(rename = "dns-01")]
    Dns01,
    #[serde(rename = "http-01")]
    Http01,
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl ChallengeKind {
    fn acme_type(self) -> ChallengeType {
        match self {
            ChallengeKind::Dns01 => ChallengeType::Dns01,
            ChallengeKind::Http01 => ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Dns01 => "dns-01",
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// A challenge response to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// Serve `key_authorization` at `http://<host>/.well-known/acme-challenge/<token>`.
    Http01 {
        host: String,
        token: String,
        key_authorization: String,
    },
    /// Present a self-signed certificate for `host` with this acmeIdentifier digest to
    /// clients offering ALPN `acme-tls/1`.
    TlsAlpn01 { host: String, digest: [u8; 32] },
    /// Publish `_acme-challenge.<host> TXT <value>`.
    Dns01 { host: String, value: String },
}

/// Publishes and withdraws challenge responses. `publish` returns once the response is
/// visible where the CA will look (for dns-01: on every authoritative server).
pub(crate) trait Responder: Send + Sync {
    fn publish(
        &self,
        challenge: &Challenge,
    ) -> impl Future<Output = Result<(), ChallengeError>> + Send;
    fn withdraw(&self, challenge: &Challenge) -> impl Future<Output = ()> + Send;
}

/// Why a challenge could not be published.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChallengeError {
    /// This challenge type cannot work with this setup (e.g. dns-01 without mxguard's DNS).
    #[error("{0}")]
    Unsupported(String),
    #[error("building the tls-alpn-01 certificate: {0}")]
    Certificate(String),
    #[error(transparent)]
    Record(#[from] crate::publish::SinkError),
    #[error(transparent)]
    Name(#[from] crate::publish::records::BadName),
    /// The record is not served by every authoritative server in time.
    #[error(transparent)]
    NotServed(#[from] crate::publish::NotServed),
}

impl ChallengeError {
    /// Whether the same order may succeed later without a change by the operator.
    pub(crate) fn is_temporary(&self) -> bool {
        match self {
            ChallengeError::Unsupported(_) | ChallengeError::Name(_) => false,
            ChallengeError::Record(e) => e.is_temporary(),
            ChallengeError::Certificate(_) | ChallengeError::NotServed(_) => true,
        }
    }
}

/// An ACME failure, classed for the retry schedule.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct AcmeError {
    pub class: FailureClass,
    pub message: String,
    /// The CA's Retry-After, where it sent one.
    pub retry_after: Option<SystemTime>,
    /// The RFC 8555 problem type the CA sent, without the `urn:ietf:params:acme:error:` prefix.
    pub problem: Option<String>,
}

impl AcmeError {
    pub(crate) fn permanent(message: impl Into<String>) -> Self {
        AcmeError {
            class: FailureClass::Permanent,
            message: message.into(),
            retry_after: None,
            problem: None,
        }
    }

    pub(crate) fn transient(message: impl Into<String>) -> Self {
        AcmeError {
            class: FailureClass::Transient,
            message: message.into(),
            retry_after: None,
            problem: None,
        }
    }

    /// The CA does not know the account that signed the request (RFC 8555 §7.3.1
    /// `accountDoesNotExist`): it was deleted at the CA, or the CA lost its data. Only a new
    /// registration helps.
    pub(crate) fn account_does_not_exist(&self) -> bool {
        self.problem.as_deref() == Some("accountDoesNotExist")
    }

    fn from_acme(context: &str, e: instant_acme::Error) -> Self {
        use instant_acme::Error as E;
        let class = match &e {
            E::Api(p) => classify_problem(p.r#type.as_deref()),
            E::Timeout(_) => FailureClass::Transient,
            E::Http(_) | E::Hyper(_) | E::Other(_) => FailureClass::Transient,
            E::Json(_) | E::Str(_) => FailureClass::Transient,
            E::Crypto | E::KeyRejected | E::InvalidUri(_) | E::Unsupported(_) => {
                FailureClass::Permanent
            }
            _ => FailureClass::Transient,
        };
        let retry_after = match &e {
            E::Timeout(Some(at)) => {
                Some(SystemTime::now() + at.saturating_duration_since(std::time::Instant::now()))
            }
            _ => None,
        };
        let problem = match &e {
            E::Api(p) => p.r#type.as_deref().map(|t| {
                t.trim_start_matches("urn:ietf:params:acme:error:")
                    .to_string()
            }),
            _ => None,
        };
        AcmeError {
            class,
            message: format!("{context}: {}", error_chain(&e)),
            retry_after,
            problem,
        }
    }
}

/// An error and its sources on one line (`client error (Connect): tcp connect error:
/// Connection refused (os error 111)`): the outermost message alone rarely says what failed.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        // Some errors repeat their source in their own message.
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// RFC 8555 §6.7 problem types: which ones a retry can fix by itself.
pub(crate) fn classify_problem(problem_type: Option<&str>) -> FailureClass {
    let t = problem_type
        .unwrap_or("")
        .trim_start_matches("urn:ietf:params:acme:error:");
    match t {
        "badNonce" | "serverInternal" | "rateLimited" | "connection" | "dns" | "" => {
            FailureClass::Transient
        }
        _ => FailureClass::Permanent,
    }
}

/// ACME settings the client needs.
#[derive(Debug, Clone)]
pub(crate) struct AcmeSettings {
    pub directory: String,
    pub ca_file: Option<PathBuf>,
    pub email: Option<String>,
    /// External account binding: key id and the file holding the base64url HMAC key.
    pub eab: Option<(String, PathBuf)>,
    /// Certificate profile to order, where the CA offers it.
    pub profile: Option<String>,
}

/// The stored account, reused across restarts.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// A logged-in ACME account.
pub(crate) struct Client {
    account: Account,
    pub directory: String,
    /// The profile to order with (`acme.profile`), if the CA offers it.
    profile: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("directory", &self.directory)
            .field("account", &self.account.id())
            .finish()
    }
}

fn builder(settings: &AcmeSettings) -> Result<instant_acme::AccountBuilder, AcmeError> {
    match &settings.ca_file {
        Some(path) => Account::builder_with_root(path)
            .map_err(|e| AcmeError::permanent(format!("acme.ca_file {}: {e}", path.display()))),
        None => Account::builder().map_err(|e| AcmeError::from_acme("acme client", e)),
    }
}

fn decode_b64url(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    data_encoding::BASE64URL_NOPAD.decode(s.as_bytes()).ok()
}

impl Client {
    /// Loads the account from the state directory, or creates it at the CA and stores it.
    /// A stored account of another directory is replaced.
    pub(crate) async fn login(
        state: &StateDir,
        settings: &AcmeSettings,
    ) -> Result<Client, AcmeError> {
        let path = state.path(ACCOUNT_FILE);
        let stored = store::read_optional(&path)
            .map_err(|e| AcmeError::transient(e.to_string()))?
            .and_then(|b| serde_json::from_slice::<StoredAccount>(&b).ok());
        if let Some(stored) = stored.filter(|s| s.directory == settings.directory) {
            let account = builder(settings)?
                .from_credentials(stored.credentials)
                .await
                .map_err(|e| AcmeError::from_acme("loading stored ACME account", e))?;
            return Ok(Client {
                account,
                directory: settings.directory.clone(),
                profile: settings.profile.clone(),
            });
        }
        Client::register(state, settings).await
    }

    /// Registers a new account at the CA and stores it, replacing any stored account (which
    /// the CA no longer knows, or which belongs to another directory).
    pub(crate) async fn register(
        state: &StateDir,
        settings: &AcmeSettings,
    ) -> Result<Client, AcmeError> {
        let path = state.path(ACCOUNT_FILE);
        let contact: Vec<String> = settings
            .email
            .iter()
            .map(|e| format!("mailto:{e}"))
            .collect();
        let contact_refs: Vec<&str> = contact.iter().map(String::as_str).collect();
        let eab = match &settings.eab {
            Some((kid, file)) => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    AcmeError::permanent(format!("acme.eab_hmac_key_file {}: {e}", file.display()))
                })?;
                let key = decode_b64url(&text).ok_or_else(|| {
                    AcmeError::permanent(format!(
                        "acme.eab_hmac_key_file {}: not base64url",
                        file.display()
                    ))
                })?;
                Some(instant_acme::ExternalAccountKey::new(kid.clone(), &key))
            }
            None => None,
        };
        let (account, credentials) = builder(settings)?
            .create(
                &NewAccount {
                    contact: &contact_refs,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                settings.directory.clone(),
                eab.as_ref(),
            )
            .await
            .map_err(|e| AcmeError::from_acme("creating ACME account", e))?;
        let json = serde_json::to_vec_pretty(&StoredAccount {
            directory: settings.directory.clone(),
            credentials,
        })
        .map_err(|e| AcmeError::permanent(format!("serializing account: {e}")))?;
        store::ensure_dir(&state.path("acme")).map_err(|e| AcmeError::transient(e.to_string()))?;
        store::write_atomic(&path, &json, store::SECRET_MODE)
            .map_err(|e| AcmeError::transient(e.to_string()))?;
        tracing::info!(account = %account.id(), directory = %settings.directory, "acme account created");
        Ok(Client {
            account,
            directory: settings.directory.clone(),
            profile: settings.profile.clone(),
        })
    }

    /// Whether the directory lists `profile` (draft-ietf-acme-profiles).
    pub(crate) fn offers_profile(&self, profile: &str) -> bool {
        self.account.profiles().any(|p| p.name == profile)
    }

    /// The account URL (for CAA `accounturi`).
    pub(crate) fn account_id(&self) -> &str {
        self.account.id()
    }

    /// ARI (RFC 9773): the suggested renewal window for a certificate, when the CA offers
    /// `renewalInfo`; `Ok(None)` when it does not.
    pub(crate) async fn renewal_window(
        &self,
        cert_der: &[u8],
    ) -> Result<Option<(SystemTime, SystemTime)>, AcmeError> {
        let der = rustls::pki_types::CertificateDer::from(cert_der.to_vec());
        let id = instant_acme::CertificateIdentifier::try_from(&der)
            .map_err(|e| AcmeError::permanent(format!("certificate identifier: {e}")))?;
        match self.account.renewal_info(&id).await {
            Ok((info, _retry)) => Ok(Some((
                info.suggested_window.start.into(),
                info.suggested_window.end.into(),
            ))),
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(AcmeError::from_acme("renewalInfo", e)),
        }
    }

    /// Orders a certificate for `names` with our own CSR (DER), answering challenges of
    /// `kind` through `responder`. Returns the PEM chain. Challenge responses are withdrawn
    /// whatever the outcome. `replaces` (the DER of the certificate being renewed) is sent
    /// only where the CA offers ARI (the caller learnt that from [`Client::renewal_window`]).
    pub(crate) async fn order<R: Responder>(
        &self,
        names: &[String],
        csr_der: &[u8],
        kind: ChallengeKind,
        responder: &R,
        replaces: Option<&[u8]>,
    ) -> Result<String, AcmeError> {
        let identifiers: Vec<Identifier> =
            names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let replaces_id = match replaces {
            Some(der) => {
                let der = rustls::pki_types::CertificateDer::from(der.to_vec());
                instant_acme::CertificateIdentifier::try_from(&der)
                    .ok()
                    .map(|id| id.into_owned())
            }
            None => None,
        };
        let mut new_order = NewOrder::new(&identifiers);
        if let Some(id) = replaces_id.clone() {
            new_order = new_order.replaces(id);
        }
        if let Some(profile) = &self.profile {
            if self.offers_profile(profile) {
                new_order = new_order.profile(profile);
            } else {
                tracing::warn!(profile = %profile, "the CA does not offer this certificate profile; ordering its default");
            }
        }
        let mut order = self
            .account
            .new_order(&new_order)
            .await
            .map_err(|e| AcmeError::from_acme("new order", e))?;
        let mut published = Vec::new();
        let result = self
            .answer_and_finalize(&mut order, csr_der, kind, responder, &mut published)
            .await;
        withdraw_all(responder, &published).await;
        result
    }

    async fn answer_and_finalize<R: Responder>(
        &self,
        order: &mut instant_acme::Order,
        csr_der: &[u8],
        kind: ChallengeKind,
        responder: &R,
        published: &mut Vec<Challenge>,
    ) -> Result<String, AcmeError> {
        let mut authorizations = order.authorizations();
        while let Some(result) = authorizations.next().await {
            let mut authz = result.map_err(|e| AcmeError::from_acme("authorization", e))?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(AcmeError::permanent(format!(
                        "authorization for {} is {other:?}",
                        authz.identifier()
                    )));
                }
            }
            let host = authz.identifier().to_string();
            let mut challenge = authz.challenge(kind.acme_type()).ok_or_else(|| {
                AcmeError::permanent(format!(
                    "the CA offers no {} challenge for {host}",
                    kind.as_str()
                ))
            })?;
            let ka = challenge.key_authorization();
            let ch = match kind {
                ChallengeKind::Http01 => Challenge::Http01 {
                    host: host.clone(),
                    token: challenge.token.clone(),
                    key_authorization: ka.as_str().to_string(),
                },
                ChallengeKind::TlsAlpn01 => {
                    let mut digest = [0u8; 32];
                    digest.copy_from_slice(ka.digest().as_ref());
                    Challenge::TlsAlpn01 {
                        host: host.clone(),
                        digest,
                    }
                }
                ChallengeKind::Dns01 => Challenge::Dns01 {
                    host: host.clone(),
                    value: ka.dns_value(),
                },
            };
            publish_tracked(responder, ch, published)
                .await
                .map_err(|e| {
                    let message = format!("publishing {} for {host}: {e}", kind.as_str());
                    if e.is_temporary() {
                        AcmeError::transient(message)
                    } else {
                        AcmeError::permanent(message)
                    }
                })?;
            challenge
                .set_ready()
                .await
                .map_err(|e| AcmeError::from_acme(&format!("challenge for {host}"), e))?;
        }
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(Duration::from_secs(120));
        let status = order
            .poll_ready(&retry)
            .await
            .map_err(|e| AcmeError::from_acme("waiting for validation", e))?;
        if status != OrderStatus::Ready {
            let mut reasons = Vec::new();
            let mut authorizations = order.authorizations();
            while let Some(Ok(a)) = authorizations.next().await {
                for c in &a.challenges {
                    if let Some(err) = &c.error {
                        reasons.push(format!("{}: {err}", a.identifier()));
                    }
                }
            }
            let class = if reasons.is_empty() {
                FailureClass::Transient
            } else {
                FailureClass::Permanent
            };
            return Err(AcmeError {
                class,
                message: format!(
                    "order is {status:?}: {}",
                    if reasons.is_empty() {
                        "no reason given".to_string()
                    } else {
                        reasons.join("; ")
                    }
                ),
                retry_after: None,
                problem: None,
            });
        }
        order
            .finalize_csr(csr_der)
            .await
            .map_err(|e| AcmeError::from_acme("finalize", e))?;
        order
            .poll_certificate(&retry)
            .await
            .map_err(|e| AcmeError::from_acme("downloading certificate", e))
    }
}

/// Builds a DER CSR for `names` signed by `key` (no subject CN: SANs only).
pub(crate) fn csr(names: &[String], key: &rcgen::KeyPair) -> Result<Vec<u8>, String> {
    let mut params =
        rcgen::CertificateParams::new(names.to_vec()).map_err(|e| format!("CSR: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let req = params
        .serialize_request(key)
        .map_err(|e| format!("CSR: {e}"))?;
    Ok(req.der().to_vec())
}

/// Publishes `ch`, tracked in `published` *before* it is published: a publish that fails half
/// way (a dns-01 record that is in the zone but not yet on every secondary) is withdrawn with
/// the rest.
async fn publish_tracked<R: Responder>(
    responder: &R,
    ch: Challenge,
    published: &mut Vec<Challenge>,
) -> Result<(), ChallengeError> {
    published.push(ch);
    match published.last() {
        Some(ch) => responder.publish(ch).await,
        None => Ok(()),
    }
}

/// Withdraws every challenge of an order, whatever its outcome.
async fn withdraw_all<R: Responder>(responder: &R, published: &[Challenge]) {
    for ch in published {
        responder.withdraw(ch).await;
    }
}

/// The tls-alpn-01 certificate (RFC 8737): self-signed for `host`, critical acmeIdentifier
/// extension with the key authorization digest.
pub(crate) fn tls_alpn_certificate(
    host: &str,
    digest: &[u8; 32],
) -> Result<std::sync::Arc<rustls::sign::CertifiedKey>, String> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![host.to_string()]).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    crate::acme::tls::certified_key(vec![cert.der().clone()], key.serialized_der())
        .map_err(|e| e.to_string())
}

/// Path of a file in the state directory for the certificate named `name`.
pub(crate) fn cert_path(state_root: &Path, name: &str, file: &str) -> PathBuf {
    state_root.join("certs").join(name).join(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    /// A responder that puts a challenge "in place" and then fails, like a dns-01 record that
    /// is in the zone while a secondary is down.
    #[derive(Default)]
    struct HalfPublishes {
        in_place: std::sync::Mutex<Vec<Challenge>>,
    }

    impl Responder for HalfPublishes {
        async fn publish(&self, ch: &Challenge) -> Result<(), ChallengeError> {
            self.in_place.lock().unwrap().push(ch.clone());
            Err(ChallengeError::NotServed(crate::publish::NotServed {
                server: "secondary ns2 (127.0.0.1:1)".into(),
                zone: "example.com.".into(),
                serial: 7,
                answer: "connection refused".into(),
            }))
        }

        async fn withdraw(&self, ch: &Challenge) {
            self.in_place.lock().unwrap().retain(|c| c != ch);
        }
    }

    #[tokio::test]
    async fn a_challenge_that_failed_half_way_is_withdrawn() {
        let responder = HalfPublishes::default();
        let mut published = Vec::new();
        let ch = Challenge::Dns01 {
            host: "mta-sts.example.com".into(),
            value: "v1".into(),
        };
        let e = publish_tracked(&responder, ch.clone(), &mut published)
            .await
            .unwrap_err();
        assert!(e.is_temporary(), "{e}");
        assert_eq!(*responder.in_place.lock().unwrap(), vec![ch]);
        withdraw_all(&responder, &published).await;
        assert!(responder.in_place.lock().unwrap().is_empty());
    }

    #[test]
    fn problem_types_are_classed() {
        assert_eq!(
            classify_problem(Some("urn:ietf:params:acme:error:badNonce")),
            FailureClass::Transient
        );
        assert_eq!(
            classify_problem(Some("urn:ietf:params:acme:error:rateLimited")),
            FailureClass::Transient
        );
        assert_eq!(
            classify_problem(Some("urn:ietf:params:acme:error:unauthorized")),
            FailureClass::Permanent
        );
        assert_eq!(
            classify_problem(Some("urn:ietf:params:acme:error:caa")),
            FailureClass::Permanent
        );
    }

    #[test]
    fn base64url_decodes() {
        assert_eq!(decode_b64url("aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode_b64url("aGVsbG8=").unwrap(), b"hello");
        assert!(decode_b64url("a b").is_none());
    }

    #[test]
    fn csr_has_no_common_name() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = csr(&["mta-sts.example.com".into()], &key).unwrap();
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        assert_eq!(req.certification_request_info.subject.iter().count(), 0);
    }
}
