//! A cache of encoded UDP responses, one per query task (no locking), exact for one zone
//! snapshot: a response is reused only for a request that is byte for byte the same except for
//! its ID, and only while the very snapshot that answered it is being served.
//!
//! Only answers that depend on nothing but the request bytes and the zones are stored (the
//! handler says which: lookups without TSIG, never transfers, never errors about the packet
//! itself), so a hit is exactly the answer the handler would have built, with the request's ID.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Weak};

use crate::zone::Zones;
use hashbrown::HashTable;

/// Longest request that is cached (ordinary queries are well under 100 bytes).
const MAX_REQUEST: usize = 512;
/// Smallest DNS message: a header.
const HEADER: usize = 12;

/// Which zone snapshot a per-task cache belongs to. Weak: an idle task does not keep old zones
/// alive, yet the allocation stays, so a later snapshot can never have the same address.
#[derive(Default)]
pub(super) struct SnapshotTag(Weak<Zones>);

impl SnapshotTag {
    /// Makes the tag name `zones`; true when it named another snapshot before (the cache's
    /// entries must then go).
    pub(super) fn follow(&mut self, zones: &Arc<Zones>) -> bool {
        if std::ptr::eq(self.0.as_ptr(), Arc::as_ptr(zones)) {
            return false;
        }
        self.0 = Arc::downgrade(zones);
        true
    }

    /// Whether the tagged snapshot is still served by someone.
    fn is_live(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// Request bytes after the ID, and the full encoded response.
type Entry = (Box<[u8]>, Box<[u8]>);

pub(super) struct ResponseCache {
    /// The snapshot the entries were answered from.
    zones: SnapshotTag,
    /// (Request bytes after the ID, the full encoded response), by the keyed hash of the
    /// former: one hash per request serves the lookup, the fingerprint and the insertion.
    entries: HashTable<Entry>,
    capacity: usize,
    /// Fingerprints of requests answered once, one per slot (direct-mapped): a response is
    /// stored the second time its request is seen, so that a stream of names asked once (a
    /// random-subdomain flood) neither costs a copy per query nor pushes out the rest.
    seen: Vec<u64>,
    hasher: RandomState,
}

impl ResponseCache {
    /// A cache of at most `capacity` responses; 0 disables it.
    pub(super) fn new(capacity: usize) -> Self {
        ResponseCache {
            zones: SnapshotTag::default(),
            entries: HashTable::new(),
            capacity,
            seen: vec![0; capacity],
            hasher: RandomState::new(),
        }
    }

    /// Makes the cache belong to `zones`, dropping every entry of an earlier snapshot.
    pub(super) fn follow(&mut self, zones: &Arc<Zones>) {
        if self.capacity == 0 {
            return;
        }
        if self.zones.follow(zones) {
            self.entries.clear();
        }
    }

    /// The keyed hash of `request` for [`Self::answer`] and [`Self::insert`] (0, without
    /// hashing, when the cache is off or the request's length rules it out; both check that
    /// themselves, and keys are compared in full, so a real hash of 0 does no harm).
    pub(super) fn hash(&self, request: &[u8]) -> u64 {
        if self.capacity == 0 || !(HEADER..=MAX_REQUEST).contains(&request.len()) {
            return 0;
        }
        self.hasher.hash_one(&request[2..])
    }

    /// Writes the cached response to `request` (whose [`Self::hash`] is `hash`) into `out`
    /// (with the request's ID) and returns true, or returns false on a miss.
    pub(super) fn answer(&self, hash: u64, request: &[u8], out: &mut Vec<u8>) -> bool {
        if request.len() < HEADER || self.entries.is_empty() {
            return false;
        }
        let Some((_, response)) = self.entries.find(hash, |(k, _)| **k == request[2..]) else {
            return false;
        };
        out.clear();
        out.extend_from_slice(&request[..2]);
        out.extend_from_slice(&response[2..]);
        true
    }

    /// Stores `response` (answered from the snapshot given to the last [`Self::follow`]) for
    /// `request` (whose [`Self::hash`] is `hash`) if the same request was seen before (else
    /// remembers its fingerprint). When full, starts over: memory stays bounded.
    pub(super) fn insert(&mut self, hash: u64, request: &[u8], response: &[u8]) {
        if self.capacity == 0
            || !self.zones.is_live()
            || !(HEADER..=MAX_REQUEST).contains(&request.len())
            || response.len() < HEADER
            || response[..2] != request[..2]
        {
            return;
        }
        let fingerprint = hash | 1; // 0: an empty slot
        let slot = &mut self.seen[(fingerprint >> 1) as usize % self.capacity];
        if *slot != fingerprint {
            *slot = fingerprint;
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.clear();
        }
        let key = &request[2..];
        if self.entries.find(hash, |(k, _)| **k == *key).is_some() {
            return;
        }
        let hasher = &self.hasher;
        self.entries
            .insert_unique(hash, (key.into(), response.into()), |(k, _)| {
                hasher.hash_one(&**k)
            });
    }

    #[cfg(test)]
    fn insert_request(&mut self, request: &[u8], response: &[u8]) {
        self.insert(self.hash(request), request, response);
    }

    #[cfg(test)]
    fn answer_request(&self, request: &[u8], out: &mut Vec<u8>) -> bool {
        self.answer(self.hash(request), request, out)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, tail: &[u8]) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        q.extend_from_slice(tail);
        q
    }

    #[test]
    fn hit_copies_the_response_with_the_request_id() {
        let zones = Arc::new(Zones::new());
        let mut c = ResponseCache::new(8);
        c.follow(&zones);
        let q1 = query(0x1234, b"\x03www\x00\x00\x01\x00\x01");
        let mut r1 = q1.clone();
        r1[2] |= 0x80;
        r1.extend_from_slice(b"answer");
        c.insert_request(&q1, &r1);
        let mut out = Vec::new();
        assert!(
            !c.answer_request(&q1, &mut out),
            "stored the second time only"
        );
        c.insert_request(&q1, &r1);
        assert!(c.answer_request(&query(0xabcd, b"\x03www\x00\x00\x01\x00\x01"), &mut out));
        assert_eq!(&out[..2], &[0xab, 0xcd]);
        assert_eq!(&out[2..], &r1[2..]);
        // Any other byte (here the case of the name) is another request.
        assert!(!c.answer_request(&query(0x1234, b"\x03WWW\x00\x00\x01\x00\x01"), &mut out));
        assert!(
            !c.answer_request(&q1[..11], &mut out),
            "shorter than a header"
        );
    }

    #[test]
    fn another_snapshot_empties_the_cache() {
        let (a, b) = (Arc::new(Zones::new()), Arc::new(Zones::new()));
        let mut c = ResponseCache::new(8);
        c.follow(&a);
        let q = query(1, b"\x00\x00\x01\x00\x01");
        c.insert_request(&q, &q);
        c.insert_request(&q, &q);
        c.follow(&a);
        assert_eq!(c.len(), 1, "same snapshot keeps entries");
        c.follow(&b);
        let mut out = Vec::new();
        assert!(!c.answer_request(&q, &mut out));
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn names_asked_once_are_not_stored() {
        let zones = Arc::new(Zones::new());
        let mut c = ResponseCache::new(16);
        c.follow(&zones);
        let popular = query(1, b"popular");
        c.insert_request(&popular, &popular);
        c.insert_request(&popular, &popular);
        for i in 0..1000u16 {
            let q = query(2, &i.to_be_bytes());
            c.insert_request(&q, &q);
        }
        assert_eq!(c.len(), 1, "only the name asked twice");
        assert!(c.answer_request(&popular, &mut Vec::new()));
    }

    #[test]
    fn bounded_and_disableable() {
        let zones = Arc::new(Zones::new());
        let mut c = ResponseCache::new(3);
        c.follow(&zones);
        for i in 0..10u8 {
            let q = query(7, &[i]);
            c.insert_request(&q, &q);
            c.insert_request(&q, &q);
            assert!(c.len() <= 3);
        }
        let mut off = ResponseCache::new(0);
        off.follow(&zones);
        let q = query(7, b"x");
        off.insert_request(&q, &q);
        assert!(!off.answer_request(&q, &mut Vec::new()));
        // Oversized requests and responses to another ID are not stored.
        let big = query(9, &[0; MAX_REQUEST]);
        c.insert_request(&big, &big);
        c.insert_request(&big, &big);
        assert!(!c.answer_request(&big, &mut Vec::new()));
        let q = query(9, b"y");
        c.insert_request(&q, &query(8, b"y"));
        c.insert_request(&q, &query(8, b"y"));
        assert!(!c.answer_request(&q, &mut Vec::new()));
    }
}
