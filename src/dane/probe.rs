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

/// Reads one (possibly multi-line) SMTP reply; returns (code, text).
async fn reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<(u16, String), String> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        let n = r
            .read_line(&mut line)
            .await
            .map_err(|e| format!("reading SMTP reply: {e}"))?;
        if n == 0 {
            return Err("connection closed during SMTP reply".into());
        }
        if line.len() < 4 {
            return Err(format!("malformed SMTP reply {line:?}"));
        }
        text.push_str(&line);
        let code: u16 = line[..3]
            .parse()
            .map_err(|_| format!("malformed SMTP reply {line:?}"))?;
        if line.as_bytes()[3] != b'-' {
            return Ok((code, text));
        }
        if text.len() > 64 * 1024 {
            return Err("SMTP reply too long".into());
        }
    }
}

/// Connects to the MX at `addr` (SNI `host`), performs STARTTLS and returns the SHA-256 of
/// the presented certificate's SubjectPublicKeyInfo (hex), i.e. its `3 1 1` data.
pub async fn presented_key(
    addr: SocketAddr,
    host: &str,
    timeout: Duration,
) -> Result<String, String> {
    tokio::time::timeout(timeout, presented_key_inner(addr, host))
        .await
        .map_err(|_| format!("{addr}: no STARTTLS handshake within {timeout:?}"))?
}

async fn presented_key_inner(addr: SocketAddr, host: &str) -> Result<String, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut r = BufReader::new(tcp);
    let (code, text) = reply(&mut r).await?;
    if code != 220 {
        return Err(format!("{addr}: banner {text:?}"));
    }
    r.get_mut()
        .write_all(b"EHLO mxguard.invalid\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let (code, text) = reply(&mut r).await?;
    if code != 250 {
        return Err(format!("{addr}: EHLO answered {text:?}"));
    }
    if !text.to_ascii_uppercase().contains("STARTTLS") {
        return Err(format!("{addr}: the MX does not offer STARTTLS"));
    }
    r.get_mut()
        .write_all(b"STARTTLS\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let (code, text) = reply(&mut r).await?;
    if code != 220 {
        return Err(format!("{addr}: STARTTLS answered {text:?}"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, r.into_inner())
        .await
        .map_err(|e| format!("{addr}: TLS handshake: {e}"))?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| format!("{addr}: no certificate presented"))?;
    let spki = crate::x509::spki_of_cert(leaf)
        .ok_or_else(|| format!("{addr}: unparseable certificate"))?;
    Ok(key_id(&spki))
}

/// The key id (hex SHA-256 of the SPKI): the data of its `3 1 1` record.
pub fn key_id(spki_der: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(ring::digest::digest(&ring::digest::SHA256, spki_der).as_ref())
}
