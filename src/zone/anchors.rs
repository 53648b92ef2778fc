//! Trust-anchor files: DS and DNSKEY lines as `mxguard ds`, dnssec-keygen or `dig +short`
//! print them (one record per line, owner names fully qualified). Pure: text in, records out.

use hickory_proto::dnssec::{Algorithm, DigestType, PublicKeyBuf};
use hickory_proto::rr::Name;

/// One line of a trust-anchor file.
#[derive(Debug)]
pub(crate) enum Anchor {
    Ds(Name, hickory_proto::dnssec::rdata::DS),
    Key(Name, PublicKeyBuf),
}

/// DS and DNSKEY records from zone-file lines (`owner [ttl] [class] DS|DNSKEY …`, one record
/// per line, as `mxguard ds`, dnssec-keygen and `dig +short` print them); comments and other
/// types are skipped.
pub(crate) fn parse_anchor_lines(text: &str) -> Result<Vec<Anchor>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.split(';').next().unwrap_or("").trim();
        let words: Vec<&str> = l.split_whitespace().collect();
        let Some(pos) = words
            .iter()
            .position(|w| w.eq_ignore_ascii_case("DS") || w.eq_ignore_ascii_case("DNSKEY"))
        else {
            continue;
        };
        let err = |m: String| format!("line {}: {m}", i + 1);
        let owner =
            Name::from_ascii(words[0]).map_err(|e| err(format!("owner {:?}: {e}", words[0])))?;
        if !owner.is_fqdn() {
            return Err(err(format!("owner {:?} must end with a dot", words[0])));
        }
        let fields = &words[pos + 1..];
        let num = |k: usize, what: &str| -> Result<u64, String> {
            fields
                .get(k)
                .and_then(|w| w.parse::<u64>().ok())
                .ok_or_else(|| err(format!("{what} missing or not a number")))
        };
        if words[pos].eq_ignore_ascii_case("DS") {
            let tag = u16::try_from(num(0, "key tag")?).map_err(|_| err("key tag".into()))?;
            let alg = u8::try_from(num(1, "algorithm")?).map_err(|_| err("algorithm".into()))?;
            let dt = u8::try_from(num(2, "digest type")?).map_err(|_| err("digest type".into()))?;
            let digest = data_encoding::HEXLOWER_PERMISSIVE
                .decode(fields.get(3..).unwrap_or(&[]).concat().as_bytes())
                .map_err(|e| err(format!("digest: {e}")))?;
            if digest.is_empty() {
                return Err(err("digest missing".into()));
            }
            out.push(Anchor::Ds(
                owner,
                hickory_proto::dnssec::rdata::DS::new(
                    tag,
                    Algorithm::from_u8(alg),
                    DigestType::from(dt),
                    digest,
                ),
            ));
        } else {
            let alg = u8::try_from(num(2, "algorithm")?).map_err(|_| err("algorithm".into()))?;
            let key = data_encoding::BASE64
                .decode(fields.get(3..).unwrap_or(&[]).concat().as_bytes())
                .map_err(|e| err(format!("public key: {e}")))?;
            if key.is_empty() {
                return Err(err("public key missing".into()));
            }
            out.push(Anchor::Key(
                owner,
                PublicKeyBuf::new(key, Algorithm::from_u8(alg)),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::dnssec::PublicKey;

    #[test]
    fn anchor_lines_accept_ds_and_dnskey_and_skip_the_rest() {
        let text = "; from mxguard ds\n\
            example.com. 3600 IN DS 12345 13 2 0123456789ABCDEF0123456789ABCDEF 0123456789ABCDEF0123456789ABCDEF\n\
            example.com. 3600 IN SOA a. b. 1 2 3 4 5\n\
            example.com. IN DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==\n";
        let r = parse_anchor_lines(text).unwrap();
        assert_eq!(r.len(), 2);
        match &r[0] {
            Anchor::Ds(n, ds) => {
                assert_eq!(n.to_ascii(), "example.com.");
                assert_eq!(ds.key_tag(), 12345);
                assert_eq!(ds.digest().len(), 32);
            }
            other => panic!("{other:?}"),
        }
        match &r[1] {
            Anchor::Key(n, k) => {
                assert_eq!(n.to_ascii(), "example.com.");
                assert_eq!(k.algorithm(), Algorithm::ECDSAP256SHA256);
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "example.com. IN DS nonsense\n",
            "example.com IN DS 1 13 2 00\n",
            "example.com. IN DNSKEY 257 3 13 !!!\n",
            "example.com. IN DS 1 13 2\n",
        ] {
            assert!(parse_anchor_lines(bad).is_err(), "{bad}");
        }
    }
}
