//! TLSA record data (RFC 6698, RFC 7671, RFC 7672): a key id (the hex SHA-256 of a
//! SubjectPublicKeyInfo, see [`super::probe::key_id`]) is the data of the key's `3 1 1`
//! record. The records themselves are built by `crate::publish::records::dane_ee`.
//!
//! Pure. Which keys are published when is decided by the rollover state machine.

/// The `3 1 1` digest of a key id (hex, any case); `None` if it is not hex.
pub(crate) fn hex_decode(hex: &str) -> Option<Vec<u8>> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex.as_bytes())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_is_the_spki_sha256_a_311_record_carries() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let id = super::super::probe::key_id(&spki);
        let digest = hex_decode(&id).unwrap();
        assert_eq!(
            digest,
            ring::digest::digest(&ring::digest::SHA256, &spki).as_ref()
        );
        assert_eq!(hex_decode(&id.to_uppercase()), Some(digest));
        assert_eq!(hex_decode("not hex"), None);
        assert_eq!(
            crate::publish::records::tlsa_owner("mx1.example.com.", 25)
                .unwrap()
                .to_ascii(),
            "_25._tcp.mx1.example.com."
        );
    }
}
