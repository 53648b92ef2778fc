//! WebPKI verification as senders apply it: the trusted roots (the system's store, or one CA
//! file), chain and name verification, errors in words. A leaf: used by the posture checks
//! and by the rollover (to trust a key an MX presents only when its certificate is valid).

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// The roots senders trust: `ca_file` alone when given, else the system's store.
pub fn roots(ca_file: Option<&Path>) -> Result<Arc<RootCertStore>, String> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let certs = crate::x509::parse_chain(&pem);
            if certs.is_empty() {
                return Err(format!("{}: no PEM certificate", path.display()));
            }
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("{}: no usable CA certificate", path.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(
                    "no trusted root certificates on this system (install ca-certificates, or pass --ca-file)"
                        .into(),
                );
            }
        }
    }
    Ok(Arc::new(store))
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies `chain` (leaf first) for `host` against `roots` at `now`: what an MTA-STS sender
/// (or a DANE-TA check with the TA as the only root) requires.
pub fn verify_chain(
    roots: &Arc<RootCertStore>,
    chain: &[CertificateDer<'static>],
    host: &str,
    now: UnixTime,
) -> Result<(), String> {
    let Some((leaf, rest)) = chain.split_first() else {
        return Err("no certificate".into());
    };
    let verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    verifier
        .verify_server_cert(leaf, rest, &name, &[], now)
        .map(|_| ())
        .map_err(|e| describe(&e))
}

/// rustls's certificate errors in words an operator reads.
pub(crate) fn describe(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => "the certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the certificate is not valid yet".into()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the certificate is not valid for this name".into()
            }
            C::UnknownIssuer => "the chain does not lead to a trusted root (unknown issuer)".into(),
            C::BadSignature => "a signature in the chain does not verify".into(),
            other => format!("invalid certificate: {other:?}"),
        },
        other => other.to_string(),
    }
}
