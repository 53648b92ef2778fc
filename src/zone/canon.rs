//! Canonical keys for a zone's names: byte strings whose plain comparison is the DNS canonical
//! order (RFC 4034 6.1), and whose prefixes are the keys of the name's ancestors.
//!
//! A key lists the labels from the root down, each lowercased, a NUL byte in a label written as
//! `00 FF` and each label ended by `00 00`. So a shorter label that is a prefix of another sorts
//! first, as the RFC wants, and the key of `example.com.` is the start of the key of
//! `www.example.com.`. Looking names up by key is a `memcmp` per step instead of hickory's
//! label-by-label case-insensitive comparison, and climbing to an ancestor (closest encloser,
//! delegation above a name) is cutting the key shorter, without building names.
//!
//! Owns the key format and the sorted name index of a zone ([`NodeMap`], [`KeySet`]). Pure.

use std::collections::{BTreeMap, BTreeSet};

use hickory_proto::rr::Name;

use super::rrset::Shape;
use super::signed::{Node, NodeRef};

/// Longest key: a name has at most 254 octets of labels and length bytes; each label byte takes
/// at most two key bytes and each length byte's label two more for its end mark.
const MAX_KEY: usize = 512;
/// Most labels in a name.
const MAX_LABELS: usize = 128;

/// The key of one name, on the stack, with where each ancestor's key ends.
pub(crate) struct Key {
    buf: [u8; MAX_KEY],
    /// `ends[i]`: the length of the key of the ancestor with `i + 1` labels.
    ends: [u16; MAX_LABELS],
    labels: usize,
}

impl Key {
    /// The key of `name` (any case; relative names are taken as absolute).
    pub(crate) fn of(name: &Name) -> Key {
        let mut k = Key {
            buf: [0; MAX_KEY],
            ends: [0; MAX_LABELS],
            labels: 0,
        };
        for label in name.iter().rev() {
            k.push_label(label);
        }
        k
    }

    fn push_label(&mut self, label: &[u8]) {
        let mut len = self.len();
        // A valid name always fits (see MAX_KEY); hickory names are valid.
        if self.labels == MAX_LABELS || len + 2 * label.len() + 2 > MAX_KEY {
            return;
        }
        for &b in label {
            if b == 0 {
                self.buf[len] = 0;
                self.buf[len + 1] = 0xFF;
                len += 2;
            } else {
                self.buf[len] = b.to_ascii_lowercase();
                len += 1;
            }
        }
        self.buf[len] = 0;
        self.buf[len + 1] = 0;
        self.ends[self.labels] = (len + 2) as u16;
        self.labels += 1;
    }

    fn len(&self) -> usize {
        match self.labels {
            0 => 0,
            n => usize::from(self.ends[n - 1]),
        }
    }

    /// The whole key.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len()]
    }

    /// Labels of the name (the root has none).
    pub(crate) fn labels(&self) -> usize {
        self.labels
    }

    /// The key of the ancestor with `labels` labels (at most [`Key::labels`]).
    pub(crate) fn ancestor(&self, labels: usize) -> &[u8] {
        match labels.min(self.labels) {
            0 => &[],
            n => &self.buf[..usize::from(self.ends[n - 1])],
        }
    }

    /// The key of the ancestor with `labels` labels with `label` added below it (e.g. the
    /// wildcard `*` below the closest encloser).
    pub(crate) fn child_of_ancestor(&self, labels: usize, label: &[u8]) -> Key {
        let mut k = Key {
            buf: [0; MAX_KEY],
            ends: [0; MAX_LABELS],
            labels: labels.min(self.labels),
        };
        let len = self.ancestor(labels).len();
        k.buf[..len].copy_from_slice(&self.buf[..len]);
        k.ends[..k.labels].copy_from_slice(&self.ends[..k.labels]);
        k.push_label(label);
        k
    }
}

/// The key of `name`, owned.
pub(crate) fn key_of(name: &Name) -> Box<[u8]> {
    Box::from(Key::of(name).bytes())
}

/// A zone's nodes in canonical order, found by key. Flat: every key in one buffer, the bytes
/// of every RRset in another, node after node, with where each key, RRset and node ends (a
/// vector and a boxed key per node, and an allocation per RRset, took about a third of a small
/// zone's memory). The names are not kept apart: each node's RRsets carry it
/// ([`NodeRef::name`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeMap {
    keys: Box<[u8]>,
    /// `ends[i]`: where the key of node `i` ends in `keys`, and where its RRsets end in `sets`.
    ends: Box<[(u32, u32)]>,
    /// The bytes of every RRset ([`RrsetRef::bytes`]).
    data: Box<[u8]>,
    /// Each RRset's shape and where its bytes end in `data`.
    sets: Box<[(u32, Shape)]>,
}

impl NodeMap {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Where node `i`'s key and RRsets start: where node `i - 1`'s end.
    fn starts(&self, i: usize) -> (usize, usize) {
        match i {
            0 => (0, 0),
            _ => (self.ends[i - 1].0 as usize, self.ends[i - 1].1 as usize),
        }
    }

    fn key(&self, i: usize) -> &[u8] {
        &self.keys[self.starts(i).0..self.ends[i].0 as usize]
    }

    /// The key of the first node in canonical order (a zone's apex), if there is any node.
    pub(crate) fn first_key(&self) -> Option<&[u8]> {
        (self.len() > 0).then(|| self.key(0))
    }

    fn node(&self, i: usize) -> NodeRef<'_> {
        let first = self.starts(i).1;
        NodeRef {
            data: &self.data,
            start: if first == 0 {
                0
            } else {
                self.sets[first - 1].0
            },
            sets: &self.sets[first..self.ends[i].1 as usize],
        }
    }

    /// The index of `key`, or where it would be.
    fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    pub(crate) fn get_key(&self, key: &[u8]) -> Option<NodeRef<'_>> {
        self.search(key).ok().map(|i| self.node(i))
    }

    /// The node of `name` (any case).
    pub fn get(&self, name: &Name) -> Option<NodeRef<'_>> {
        self.get_key(Key::of(name).bytes())
    }

    pub(crate) fn contains_key(&self, key: &[u8]) -> bool {
        self.search(key).is_ok()
    }

    /// The nodes before `key` in canonical order, nearest first.
    pub(crate) fn before(&self, key: &[u8]) -> impl Iterator<Item = NodeRef<'_>> {
        let end = match self.search(key) {
            Ok(i) | Err(i) => i,
        };
        (0..end).rev().map(|i| self.node(i))
    }

    /// Every node in canonical order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = NodeRef<'_>> {
        (0..self.len()).map(|i| self.node(i))
    }
}

impl From<BTreeMap<Name, Node>> for NodeMap {
    fn from(map: BTreeMap<Name, Node>) -> Self {
        let mut entries: Vec<(Box<[u8]>, Node)> = map
            .into_iter()
            .map(|(n, node)| (key_of(&n), node))
            .collect();
        // hickory's order is canonical too; sorting by key makes lookups exact whatever it does.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let all = || entries.iter().flat_map(|e| e.1.sets());
        let mut keys = Vec::with_capacity(entries.iter().map(|e| e.0.len()).sum());
        let mut data = Vec::with_capacity(all().map(|s| s.view().bytes().len()).sum());
        let mut sets = Vec::with_capacity(all().count());
        let mut ends = Vec::with_capacity(entries.len());
        // A zone is far below 4 GiB of keys or bytes, or 4 G RRsets (it is built in memory).
        let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        for (key, node) in &entries {
            keys.extend_from_slice(key);
            for set in node.sets() {
                data.extend_from_slice(set.view().bytes());
                sets.push((at(data.len()), set.view().shape()));
            }
            ends.push((at(keys.len()), at(sets.len())));
        }
        NodeMap {
            keys: keys.into_boxed_slice(),
            ends: ends.into_boxed_slice(),
            data: data.into_boxed_slice(),
            sets: sets.into_boxed_slice(),
        }
    }
}

/// A sorted set of name keys (empty non-terminals, delegation points).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet(Vec<Box<[u8]>>);

impl KeySet {
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.0.binary_search_by(|k| (**k).cmp(key)).is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<BTreeSet<Name>> for KeySet {
    fn from(set: BTreeSet<Name>) -> Self {
        let mut keys: Vec<Box<[u8]>> = set.iter().map(key_of).collect();
        keys.sort();
        keys.dedup();
        KeySet(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;

    fn name(labels: &[&[u8]]) -> Name {
        let mut n = Name::from_labels(labels.iter().copied()).unwrap();
        n.set_fqdn(true);
        n
    }

    #[test]
    fn key_order_is_the_canonical_order_of_rfc_4034() {
        // RFC 4034 6.1's example, plus case, NUL and high bytes and label-prefix cases.
        let names: Vec<Name> = vec![
            name(&[b"example"]),
            name(&[b"a", b"example"]),
            name(&[b"yljkjljk", b"a", b"example"]),
            name(&[b"Z", b"a", b"example"]),
            name(&[b"zABC", b"a", b"EXAMPLE"]),
            name(&[b"z", b"example"]),
            name(&[b"\x01", b"z", b"example"]),
            name(&[b"*", b"z", b"example"]),
            name(&[b"\xc8", b"z", b"example"]),
            name(&[b"a"]),
            name(&[b"a", b"a"]),
            name(&[b"x", b"a"]),
            name(&[b"a\x00"]),
            name(&[b"a\x00b"]),
            name(&[b"a\x01"]),
            name(&[b"ab"]),
            name(&[b"b"]),
        ];
        for a in &names {
            for b in &names {
                assert_eq!(
                    Key::of(a).bytes().cmp(Key::of(b).bytes()),
                    a.cmp(b),
                    "{a:?} vs {b:?}"
                );
            }
        }
        // The root sorts before everything.
        assert!(Key::of(&Name::root()).bytes() < Key::of(&names[0]).bytes());
    }

    #[test]
    fn ancestors_are_prefixes_and_a_child_extends_one() {
        let n = Name::from_ascii("www.Mail.example.com.").unwrap();
        let k = Key::of(&n);
        assert_eq!(k.labels(), 4);
        let apex = Name::from_ascii("example.com.").unwrap();
        assert_eq!(k.ancestor(2), Key::of(&apex).bytes());
        assert_eq!(k.ancestor(0), Key::of(&Name::root()).bytes());
        assert_eq!(k.ancestor(9), k.bytes());
        let w = Name::from_ascii("*.example.com.").unwrap();
        assert_eq!(k.child_of_ancestor(2, b"*").bytes(), Key::of(&w).bytes());
        assert_eq!(k.child_of_ancestor(2, b"*").labels(), 3);
    }

    #[test]
    fn the_node_map_finds_by_any_case_and_lists_predecessors() {
        use crate::zone::signed::SignedRrSet;
        use hickory_proto::rr::rdata::A;
        use hickory_proto::rr::{RData, RecordType};
        let mut m = BTreeMap::new();
        for n in ["example.", "a.example.", "c.example."] {
            let name = Name::from_ascii(n).unwrap();
            let a = RData::A(A::new(192, 0, 2, 1));
            let mut node = Node::default();
            node.insert(SignedRrSet::new(&name, RecordType::A, 60, &[a], &[]).unwrap());
            m.insert(name, node);
        }
        let map = NodeMap::from(m);
        assert!(map.get(&Name::from_ascii("A.Example.").unwrap()).is_some());
        assert!(map.get(&Name::from_ascii("b.example.").unwrap()).is_none());
        let b = Key::of(&Name::from_ascii("b.example.").unwrap());
        let before: Vec<String> = map
            .before(b.bytes())
            .map(|n| n.name().unwrap().to_string())
            .collect();
        assert_eq!(before, ["a.example.", "example."]);
        let a = Key::of(&Name::from_ascii("a.example.").unwrap());
        assert_eq!(map.before(a.bytes()).count(), 1, "strictly before");
    }

    #[test]
    fn each_node_lends_exactly_its_own_rrsets_from_the_shared_buffer() {
        use crate::zone::signed::SignedRrSet;
        use hickory_proto::rr::rdata::{A, AAAA, TXT};
        use hickory_proto::rr::{RData, RecordType};
        let mut m = BTreeMap::new();
        let mut want = Vec::new();
        for (i, n) in ["example.", "a.example.", "b.a.example.", "c.example."]
            .into_iter()
            .enumerate()
        {
            let name = Name::from_ascii(n).unwrap();
            let mut node = Node::default();
            // Inserted out of type order, with RRsets of different lengths.
            let sets = [
                (
                    RecordType::TXT,
                    RData::TXT(TXT::new(vec!["t".repeat(i * 7)])),
                ),
                (
                    RecordType::AAAA,
                    RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16)),
                ),
                (RecordType::A, RData::A(A::new(192, 0, 2, i as u8))),
            ];
            for (t, rd) in sets.into_iter().take(i + 1) {
                let set = SignedRrSet::new(&name, t, 60 + i as u32, &[rd], &[]).unwrap();
                want.push((name.clone(), set.clone()));
                node.insert(set);
            }
            m.insert(name, node);
        }
        let map = NodeMap::from(m);
        for (name, set) in &want {
            let got = map.get(name).unwrap().get(&set.record_type()).unwrap();
            assert_eq!(got, set.view(), "{name} {}", set.record_type());
        }
        // In type order within a node; every RRset once.
        let listed: Vec<(String, u16)> = map
            .values()
            .flat_map(|n| n.values())
            .map(|s| (s.name().unwrap().to_string(), u16::from(s.record_type())))
            .collect();
        assert_eq!(listed.len(), want.len());
        for w in listed.windows(2) {
            assert!(w[0].0 != w[1].0 || w[0].1 < w[1].1, "{w:?}");
        }
        assert!(
            map.get(&Name::from_ascii("example.").unwrap())
                .unwrap()
                .get(&RecordType::A)
                .is_none()
        );
        // An entry of the RRset index is 16 bytes (its end and its shape).
        assert_eq!(std::mem::size_of::<(u32, Shape)>(), 16);
    }
}
