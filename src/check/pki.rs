//! WebPKI as an MTA-STS sender applies it: the trusted roots (the system's store, or one
//! `--ca-file` for labs), chain and name verification, and the HTTPS fetch of the policy.
//!
//! Reads only; talks only to the address it is given.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// The largest policy a sender reads (RFC 8461 §3.3 leaves it open; 64 KiB as mxguard serves).
const MAX_BODY: usize = crate::mtasts::policy::MAX_POLICY_BYTES;

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

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
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
fn describe(e: &rustls::Error) -> String {
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

/// What the policy host answered.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub content_type: Option<String>,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

/// GET `https://<host>/.well-known/mta-sts.txt` from `addr`, verifying the certificate for
/// `host` under `roots`; no redirects followed (RFC 8461 §3.3).
pub async fn fetch_policy(
    addr: SocketAddr,
    host: &str,
    roots: &Arc<RootCertStore>,
    timeout: Duration,
) -> Result<Fetched, String> {
    tokio::time::timeout(timeout, fetch_inner(addr, host, roots))
        .await
        .map_err(|_| format!("no answer from {addr} within {timeout:?}"))?
}

async fn fetch_inner(
    addr: SocketAddr,
    host: &str,
    roots: &Arc<RootCertStore>,
) -> Result<Fetched, String> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| {
            let inner = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .map(describe);
            format!(
                "TLS with {addr}: {}",
                inner.unwrap_or_else(|| e.to_string())
            )
        })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP with {addr}: {e}"))?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get("/.well-known/mta-sts.txt")
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "mxguard-check")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP with {addr}: {e}"))?;
    let header = |n: hyper::header::HeaderName| {
        resp.headers()
            .get(n)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let status = resp.status().as_u16();
    let content_type = header(hyper::header::CONTENT_TYPE);
    let location = header(hyper::header::LOCATION);
    let mut body = Vec::new();
    let mut stream = resp.into_body();
    while let Some(frame) = stream.frame().await {
        let frame = frame.map_err(|e| format!("HTTP body from {addr}: {e}"))?;
        if let Some(data) = frame.data_ref() {
            body.extend_from_slice(data);
            if body.len() > MAX_BODY {
                conn.abort();
                return Err(format!("the policy is larger than {MAX_BODY} bytes"));
            }
        }
    }
    conn.abort();
    Ok(Fetched {
        status,
        content_type,
        location,
        body,
    })
}
