//! Matching a presented chain against published TLSA records the way an SMTP sender does
//! (RFC 6698 §2.1, RFC 7671, RFC 7672 §3): DANE-EE(3) against the leaf, DANE-TA(2) against a
//! certificate of the chain (the chain is then verified up to it, with the name check);
//! PKIX-TA(0)/PKIX-EE(1) are not used by SMTP. Selector 0 (certificate) or 1 (SPKI),
//! matching type 0 (exact), 1 (SHA-256), 2 (SHA-512).
//!
//! Pure: the chain verification is passed in.

use rustls::pki_types::CertificateDer;

/// A TLSA record's fields as numbers (unknown values kept as they are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub mtype: u8,
    pub data: Vec<u8>,
}

impl Tlsa {
    /// Usable by an SMTP client (RFC 7672 §3.1).
    pub fn usable(&self) -> bool {
        matches!(self.usage, 2 | 3) && matches!(self.selector, 0 | 1) && matches!(self.mtype, 0..=2)
    }

    pub fn presentation(&self) -> String {
        format!(
            "{} {} {} {}",
            self.usage,
            self.selector,
            self.mtype,
            data_encoding::HEXLOWER.encode(&self.data)
        )
    }

    /// Does this record's selector/matching data equal `cert`'s?
    fn matches_cert(&self, cert: &CertificateDer<'_>) -> bool {
        let selected: Vec<u8> = match self.selector {
            0 => cert.as_ref().to_vec(),
            1 => match crate::x509::spki_of_cert(cert) {
                Some(s) => s,
                None => return false,
            },
            _ => return false,
        };
        let digest = match self.mtype {
            0 => selected,
            1 => ring::digest::digest(&ring::digest::SHA256, &selected)
                .as_ref()
                .to_vec(),
            2 => ring::digest::digest(&ring::digest::SHA512, &selected)
                .as_ref()
                .to_vec(),
            _ => return false,
        };
        digest == self.data
    }
}

/// Which record authenticated the chain, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// A DANE-EE record matches the leaf.
    EndEntity(String),
    /// A DANE-TA record matches a certificate of the chain that verifies the leaf for the name.
    TrustAnchor(String),
    /// A DANE-TA record matches, but the chain below it does not verify (the reason).
    TrustAnchorChainInvalid(String, String),
    None,
}

/// Matches `chain` (leaf first) against `records`. `verify_to` checks the chain up to the
/// given trust anchor for the MX name (DANE-TA requires a valid chain and the name check).
pub fn match_chain(
    records: &[Tlsa],
    chain: &[CertificateDer<'static>],
    verify_to: impl Fn(&CertificateDer<'static>) -> Result<(), String>,
) -> Match {
    let Some(leaf) = chain.first() else {
        return Match::None;
    };
    for r in records.iter().filter(|r| r.usable() && r.usage == 3) {
        if r.matches_cert(leaf) {
            return Match::EndEntity(r.presentation());
        }
    }
    let mut invalid = None;
    for r in records.iter().filter(|r| r.usable() && r.usage == 2) {
        for ta in chain.iter().skip(1) {
            if r.matches_cert(ta) {
                match verify_to(ta) {
                    Ok(()) => return Match::TrustAnchor(r.presentation()),
                    Err(e) => invalid = Some((r.presentation(), e)),
                }
            }
        }
    }
    match invalid {
        Some((r, e)) => Match::TrustAnchorChainInvalid(r, e),
        None => Match::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> (CertificateDer<'static>, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let c = rcgen::CertificateParams::new(vec!["mx1.example.com".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        (c.der().clone(), spki)
    }

    fn rec(usage: u8, selector: u8, mtype: u8, data: Vec<u8>) -> Tlsa {
        Tlsa {
            usage,
            selector,
            mtype,
            data,
        }
    }

    #[test]
    fn dane_ee_matches_by_spki_or_certificate_with_every_matching_type() {
        let (c, spki) = cert();
        let sha256 = |b: &[u8]| {
            ring::digest::digest(&ring::digest::SHA256, b)
                .as_ref()
                .to_vec()
        };
        let sha512 = |b: &[u8]| {
            ring::digest::digest(&ring::digest::SHA512, b)
                .as_ref()
                .to_vec()
        };
        let ok = |r: Tlsa| {
            matches!(
                match_chain(&[r], std::slice::from_ref(&c), |_| Ok(())),
                Match::EndEntity(_)
            )
        };
        assert!(ok(rec(3, 1, 1, sha256(&spki))));
        assert!(ok(rec(3, 1, 2, sha512(&spki))));
        assert!(ok(rec(3, 1, 0, spki.clone())));
        assert!(ok(rec(3, 0, 1, sha256(c.as_ref()))));
        assert!(!ok(rec(3, 1, 1, sha256(b"another key"))));
        // PKIX-EE is not used by SMTP even when its data matches.
        assert!(!ok(rec(1, 1, 1, sha256(&spki))));
        assert!(!rec(1, 1, 1, vec![]).usable());
        assert!(!rec(3, 2, 1, vec![]).usable());
    }

    #[test]
    fn dane_ta_needs_the_chain_below_it_to_verify() {
        let (leaf, _) = cert();
        let (ca, _) = cert();
        let sha256 = ring::digest::digest(&ring::digest::SHA256, ca.as_ref())
            .as_ref()
            .to_vec();
        let records = [rec(2, 0, 1, sha256)];
        let chain = vec![leaf, ca];
        assert!(matches!(
            match_chain(&records, &chain, |_| Ok(())),
            Match::TrustAnchor(_)
        ));
        assert!(matches!(
            match_chain(&records, &chain, |_| Err("not valid for this name".into())),
            Match::TrustAnchorChainInvalid(_, e) if e == "not valid for this name"
        ));
        // A DANE-TA record never matches the leaf itself.
        assert_eq!(match_chain(&records, &chain[..1], |_| Ok(())), Match::None);
    }
}
