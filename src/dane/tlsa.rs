//! TLSA records (RFC 6698, RFC 7671, RFC 7672): what `_25._tcp.<mx>` publishes for a key.
//!
//! Pure: takes public key data, returns record data. Which keys are published when is decided
//! elsewhere (the rollover); this module only computes.

use hickory_proto::rr::rdata::TLSA;
use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};

/// `3 1 1`: DANE-EE, SubjectPublicKeyInfo, SHA-256 — survives certificate renewals that keep
/// the key (RFC 7671 §5.1).
pub fn dane_ee_spki_sha256(spki_der: &[u8]) -> TLSA {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    TLSA::new(
        CertUsage::DaneEe,
        Selector::Spki,
        Matching::Sha256,
        digest.as_ref().to_vec(),
    )
}

/// Decodes a hex key id.
pub fn hex_decode(hex: &str) -> Option<Vec<u8>> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex.as_bytes())
        .ok()
}

/// `2 1 1`: DANE-TA over an issuer's SubjectPublicKeyInfo.
pub fn dane_ta_spki_sha256(spki_der: &[u8]) -> TLSA {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    TLSA::new(
        CertUsage::DaneTa,
        Selector::Spki,
        Matching::Sha256,
        digest.as_ref().to_vec(),
    )
}

/// Presentation form: `3 1 1 <hex>`.
pub fn presentation(t: &TLSA) -> String {
    let hex = data_encoding::HEXLOWER.encode(&t.cert_data);
    format!(
        "{} {} {} {hex}",
        u8::from(t.cert_usage),
        u8::from(t.selector),
        u8::from(t.matching)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_sha256_matches_independent_digest() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let t = dane_ee_spki_sha256(&spki);
        let p = presentation(&t);
        assert!(p.starts_with("3 1 1 "), "{p}");
        assert_eq!(p.len(), "3 1 1 ".len() + 64);
        assert_eq!(
            crate::publish::records::tlsa_owner("mx1.example.com.", 25)
                .unwrap()
                .to_ascii(),
            "_25._tcp.mx1.example.com."
        );
    }
}
