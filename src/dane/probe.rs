//! Live verification of an MX: connect, EHLO, STARTTLS, and report which key it presents
//! (as the `3 1 1` digest). Certificates are not PKIX-checked: DANE-EE matches keys.
//!
//! Read-only towards the MX; decides nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Accepts any certificate: the key is compared with the TLSA records by the caller.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why the live check of an MX failed (always worth retrying: the MX may come back).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr}: {what}")]
    Smtp { addr: SocketAddr, what: String },
    #[error("{addr}: TLS handshake: {reason}")]
    Tls { addr: SocketAddr, reason: String },
    #[error("{addr}: no STARTTLS handshake within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
}

/// Reads one (possibly multi-line) SMTP reply; returns (code, text).
async fn reply<R: tokio::io::AsyncBufRead + Unpin>(
    addr: SocketAddr,
    r: &mut R,
) -> Result<(u16, String), ProbeError> {
    let smtp = |what: String| ProbeError::Smtp { addr, what };
    let mut text = String::new();
    loop {
        let mut line = String::new();
        let n = r
            .read_line(&mut line)
            .await
            .map_err(|source| ProbeError::Io { addr, source })?;
        if n == 0 {
            return Err(smtp("connection closed during SMTP reply".into()));
        }
        if line.len() < 4 {
            return Err(smtp(format!("malformed SMTP reply {line:?}")));
        }
        text.push_str(&line);
        let code: u16 = line[..3]
            .parse()
            .map_err(|_| smtp(format!("malformed SMTP reply {line:?}")))?;
        if line.as_bytes()[3] != b'-' {
            return Ok((code, text));
        }
        if text.len() > 64 * 1024 {
            return Err(smtp("SMTP reply too long".into()));
        }
    }
}

/// Connects to the MX at `addr` (SNI `host`), performs STARTTLS and returns the SHA-256 of
/// the presented certificate's SubjectPublicKeyInfo (hex), i.e. its `3 1 1` data.
pub async fn presented_key(
    addr: SocketAddr,
    host: &str,
    timeout: Duration,
) -> Result<String, ProbeError> {
    let chain = presented_chain(addr, host, timeout).await?;
    let tls_err = |reason: String| ProbeError::Tls { addr, reason };
    let leaf = chain
        .first()
        .ok_or_else(|| tls_err("no certificate presented".into()))?;
    let spki =
        crate::x509::spki_of_cert(leaf).ok_or_else(|| tls_err("unparseable certificate".into()))?;
    Ok(key_id(&spki))
}

/// Connects to the MX at `addr` (SNI `host`), performs STARTTLS and returns the certificate
/// chain it presents, leaf first (not verified: the caller decides what to trust).
pub async fn presented_chain(
    addr: SocketAddr,
    host: &str,
    timeout: Duration,
) -> Result<Vec<CertificateDer<'static>>, ProbeError> {
    tokio::time::timeout(timeout, presented_chain_inner(addr, host))
        .await
        .map_err(|_| ProbeError::Timeout { addr, timeout })?
}

async fn presented_chain_inner(
    addr: SocketAddr,
    host: &str,
) -> Result<Vec<CertificateDer<'static>>, ProbeError> {
    let io = |source: std::io::Error| ProbeError::Io { addr, source };
    let smtp = |what: String| ProbeError::Smtp { addr, what };
    let tls_err = |reason: String| ProbeError::Tls { addr, reason };
    let tcp = TcpStream::connect(addr).await.map_err(io)?;
    let mut r = BufReader::new(tcp);
    let (code, text) = reply(addr, &mut r).await?;
    if code != 220 {
        return Err(smtp(format!("banner {text:?}")));
    }
    r.get_mut()
        .write_all(b"EHLO mxguard.invalid\r\n")
        .await
        .map_err(io)?;
    let (code, text) = reply(addr, &mut r).await?;
    if code != 250 {
        return Err(smtp(format!("EHLO answered {text:?}")));
    }
    if !text.to_ascii_uppercase().contains("STARTTLS") {
        return Err(smtp("the MX does not offer STARTTLS".into()));
    }
    r.get_mut().write_all(b"STARTTLS\r\n").await.map_err(io)?;
    let (code, text) = reply(addr, &mut r).await?;
    if code != 220 {
        return Err(smtp(format!("STARTTLS answered {text:?}")));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let name =
        ServerName::try_from(host.to_string()).map_err(|e| tls_err(format!("{host}: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, r.into_inner())
        .await
        .map_err(|e| tls_err(e.to_string()))?;
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect::<Vec<_>>())
        .unwrap_or_default();
    if chain.is_empty() {
        return Err(tls_err("no certificate presented".into()));
    }
    Ok(chain)
}

/// The key id (hex SHA-256 of the SPKI): the data of its `3 1 1` record.
pub fn key_id(spki_der: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(ring::digest::digest(&ring::digest::SHA256, spki_der).as_ref())
}
