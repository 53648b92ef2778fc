//! Certificates as data: PEM chains (rustls-pki-types) and the parts of an X.509 certificate
//! mxguard reads (validity, SubjectPublicKeyInfo). Pure: no files, no clock. A leaf: anything
//! may use it, it uses nothing of the crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The certificates of a PEM text, in order (other PEM sections and broken ones are skipped).
pub fn parse_chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

/// Validity (not before, not after) of a DER certificate.
pub fn validity(der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let v = cert.validity();
    let at = |secs: i64| UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    Some((at(v.not_before.timestamp()), at(v.not_after.timestamp())))
}

/// The SubjectPublicKeyInfo (DER) of a certificate: what TLSA selector 1 hashes.
pub fn spki_of_cert(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.tbs_certificate.subject_pki.raw.to_vec())
}

/// The DNS names of a certificate's subjectAltName extension and its issuer (RFC 4514 text).
pub fn names_and_issuer(der: &[u8]) -> Option<(Vec<String>, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some((names, cert.issuer().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_skips_keys_and_garbage() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pem = format!(
            "{}junk\n{}-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n{}",
            key.serialize_pem(),
            cert.pem(),
            cert.pem()
        );
        let chain = parse_chain(&pem);
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0].as_ref(), cert.der().as_ref());
        assert_eq!(
            spki_of_cert(&chain[0]).unwrap(),
            rcgen::PublicKeyData::subject_public_key_info(&key)
        );
        let (nb, na) = validity(&chain[0]).unwrap();
        assert!(nb < na);
        let (names, issuer) = names_and_issuer(&chain[0]).unwrap();
        assert_eq!(names, ["a.example"]);
        assert!(!issuer.is_empty());
    }
}
