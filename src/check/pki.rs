//! WebPKI as an MTA-STS sender applies it: the trusted roots (the system's store, or one
//! `--ca-file` for labs), chain and name verification, and the HTTPS fetch of the policy.
//!
//! Reads only; talks only to the address it is given.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use rustls::RootCertStore;
use rustls::pki_types::ServerName;

/// The largest policy a sender reads (RFC 8461 §3.3 leaves it open; 64 KiB as mxguard serves).
const MAX_BODY: usize = crate::mtasts::policy::MAX_POLICY_BYTES;

use crate::webpki::{describe, provider};
pub use crate::webpki::{roots, verify_chain};

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
