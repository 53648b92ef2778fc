//! The NSEC3 chain of a signed zone (RFC 5155): its RRsets by owner hash, the hashes of the
//! usual closest enclosers computed once, and the hash of any ancestor of a query name taken
//! over its wire form on the stack. Pure: no I/O. Built by [`super::sign`], searched by
//! [`super::signed`] for denial proofs; must not know about answers or transports.

use std::collections::BTreeMap;
use std::ops::Bound;

use hickory_proto::rr::Name;

use super::canon::Key;
use super::signed::{RrsetRef, SignedRrSet};
use super::zones::wire_suffixes;

/// An NSEC3 owner hash (SHA-1).
pub(crate) type Nsec3Hash = [u8; 20];

/// An NSEC3 owner hash as three big-endian integers: ordered as the bytes are, and compared
/// without a call to `memcmp` (the chain is searched three times for each NXDOMAIN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct HashKey(u64, u64, u32);

impl HashKey {
    /// The key of a SHA-1 hash (a shorter input is padded with zeros, a longer one cut).
    pub(crate) fn of(hash: &[u8]) -> HashKey {
        let mut b = [0u8; 20];
        let n = hash.len().min(20);
        b[..n].copy_from_slice(&hash[..n]);
        let [
            a0,
            a1,
            a2,
            a3,
            a4,
            a5,
            a6,
            a7,
            b0,
            b1,
            b2,
            b3,
            b4,
            b5,
            b6,
            b7,
            c0,
            c1,
            c2,
            c3,
        ] = b;
        HashKey(
            u64::from_be_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
            u64::from_be_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
            u32::from_be_bytes([c0, c1, c2, c3]),
        )
    }
}

/// The NSEC3 chain of a zone: RFC 9276 parameters and the NSEC3 RRsets by raw owner hash.
#[derive(Debug, Clone)]
pub(crate) struct Nsec3Chain {
    pub(crate) salt: Vec<u8>,
    pub(crate) iterations: u16,
    pub(crate) by_hash: BTreeMap<HashKey, SignedRrSet>,
    /// The hashes of the usual closest enclosers (the apex and every name with a wildcard
    /// child) and of the wildcard below each, by canonical key: denials below them hash only
    /// the next closer name. Filled by [`SignedZone::new`].
    pub(crate) enclosers: Vec<(Box<[u8]>, Nsec3Hash, Nsec3Hash)>,
}

impl Nsec3Chain {
    /// The NSEC3 hash (RFC 5155 5) of the ancestor of `name` with `labels` labels, with
    /// `first` in front as one more label when given (the wildcard `*`): the lowercase wire
    /// name hashed on the stack, without building names.
    pub(super) fn hash_of(&self, name: &Name, labels: usize, first: Option<&[u8]>) -> [u8; 20] {
        let mut buf = [0u8; 256];
        let mut offsets = [0usize; 128];
        // A valid name always fits; the root stands in otherwise (cannot happen).
        let (len, n) = wire_suffixes(name, &mut buf, &mut offsets).unwrap_or((1, 0));
        // The ancestor's wire form is a suffix of the name's (the root: its final 0).
        let start = if labels == 0 {
            len - 1
        } else {
            offsets[n.saturating_sub(labels)]
        };
        let sha1 = &ring::digest::SHA1_FOR_LEGACY_USE_ONLY;
        let mut ctx = ring::digest::Context::new(sha1);
        if let Some(f) = first {
            ctx.update(&[f.len() as u8]);
            ctx.update(f);
        }
        ctx.update(&buf[start..len]);
        ctx.update(&self.salt);
        let mut digest = ctx.finish();
        for _ in 0..self.iterations {
            let mut ctx = ring::digest::Context::new(sha1);
            ctx.update(digest.as_ref());
            ctx.update(&self.salt);
            digest = ctx.finish();
        }
        let mut out = [0u8; 20];
        out.copy_from_slice(digest.as_ref());
        out
    }

    /// The hashes of the ancestor of `name` (key `key`) with `labels` labels and of the
    /// wildcard below it: precomputed for the usual closest enclosers.
    pub(super) fn encloser_hashes(
        &self,
        name: &Name,
        key: &Key,
        labels: usize,
    ) -> ([u8; 20], [u8; 20]) {
        let ce = key.ancestor(labels);
        match self.enclosers.binary_search_by(|(k, _, _)| (**k).cmp(ce)) {
            Ok(i) => (self.enclosers[i].1, self.enclosers[i].2),
            Err(_) => (
                self.hash_of(name, labels, None),
                self.hash_of(name, labels, Some(b"*")),
            ),
        }
    }

    pub(super) fn matching(&self, hash: &[u8]) -> Option<RrsetRef<'_>> {
        self.by_hash.get(&HashKey::of(hash)).map(SignedRrSet::view)
    }

    pub(super) fn covering(&self, hash: &[u8]) -> Option<RrsetRef<'_>> {
        self.by_hash
            .range((Bound::Unbounded, Bound::Excluded(HashKey::of(hash))))
            .next_back()
            .or_else(|| self.by_hash.iter().next_back())
            .map(|(_, set)| set.view())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::dnssec::Nsec3HashAlgorithm;

    #[test]
    fn hash_keys_order_as_their_bytes() {
        let mut hashes: Vec<[u8; 20]> = (0..=255u8)
            .map(|i| {
                let mut h = [i.wrapping_mul(37); 20];
                h[(i % 20) as usize] = i;
                h[19] = i.rotate_left(3);
                h
            })
            .collect();
        hashes.push([0; 20]);
        hashes.push([0xff; 20]);
        for a in &hashes {
            for b in &hashes {
                assert_eq!(HashKey::of(a).cmp(&HashKey::of(b)), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn nsec3_hashes_of_ancestors_match_hickorys() {
        let name = Name::from_ascii("A.b.Example.COM.").unwrap();
        for (salt, iterations) in [(Vec::new(), 0u16), (vec![0xab, 0xcd], 3)] {
            let mut chain = Nsec3Chain {
                salt: salt.clone(),
                iterations,
                by_hash: BTreeMap::new(),
                enclosers: Vec::new(),
            };
            let hickory = |n: &str| {
                let n = Name::from_ascii(n).unwrap();
                let d = Nsec3HashAlgorithm::SHA1
                    .hash(&salt, &n, iterations)
                    .unwrap();
                d.as_ref().to_vec()
            };
            assert_eq!(
                chain.hash_of(&name, 4, None).to_vec(),
                hickory("a.b.example.com.")
            );
            assert_eq!(
                chain.hash_of(&name, 2, None).to_vec(),
                hickory("example.com.")
            );
            assert_eq!(chain.hash_of(&name, 0, None).to_vec(), hickory("."));
            assert_eq!(
                chain.hash_of(&name, 2, Some(b"*")).to_vec(),
                hickory("*.example.com.")
            );
            // Precomputed for an encloser or not: the same hashes.
            let key = Key::of(&name);
            let computed = chain.encloser_hashes(&name, &key, 2);
            chain
                .enclosers
                .push((Box::from(key.ancestor(2)), computed.0, computed.1));
            assert_eq!(chain.encloser_hashes(&name, &key, 2), computed);
            assert_eq!(computed.0.to_vec(), hickory("example.com."));
            assert_eq!(computed.1.to_vec(), hickory("*.example.com."));
        }
    }
}
