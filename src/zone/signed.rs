//! The immutable signed zone and the authoritative answer logic over it.
//!
//! Owns how a query is answered from one [`SignedZone`]: positive answers, CNAME chains inside the
//! zone, NODATA and NXDOMAIN with NSEC or NSEC3 proofs (RFC 4035 3.1.3, RFC 5155 7.2), and the
//! record order of a zone transfer. Each RRset is held in the wire form it is served in
//! ([`SignedRrSet`]); answers borrow those bytes ([`Rr`]). Pure: no sockets, no clock. Must not
//! build or sign zones ([`super::sign`] does) and must not know about messages or transports
//! (`crate::dns` does).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use hickory_proto::ProtoError;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::rrset::Shape;
pub use super::rrset::{Rr, RrsetRef, SignedRrSet};

use super::canon::{Key, KeySet, NodeMap, key_of};
use super::nsec3::Nsec3Chain;
use super::serial::SigningState;

/// Longest CNAME chain followed inside one zone.
const MAX_CNAME_CHAIN: usize = 8;

/// The RRsets of one owner name, sorted by type, while a zone is built; a built zone keeps
/// them in its [`NodeMap`] and lends them as [`NodeRef`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node(Vec<SignedRrSet>);

impl Node {
    /// Adds or replaces the RRset of its type.
    pub fn insert(&mut self, set: SignedRrSet) {
        match self
            .0
            .binary_search_by(|s| s.record_type().cmp(&set.record_type()))
        {
            Ok(i) => self.0[i] = set,
            Err(i) => self.0.insert(i, set),
        }
    }

    pub(crate) fn sets(&self) -> &[SignedRrSet] {
        &self.0
    }
}

/// The RRsets of one owner name in a built zone, sorted by type: borrowed from the zone's
/// [`NodeMap`], whose buffer holds their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRef<'a> {
    /// The zone's buffer of RRset bytes.
    pub(crate) data: &'a [u8],
    /// Where this node's first RRset starts in `data`.
    pub(crate) start: u32,
    /// Each RRset's end in `data` and its shape.
    pub(crate) sets: &'a [(u32, Shape)],
}

impl<'a> NodeRef<'a> {
    fn set(self, i: usize) -> RrsetRef<'a> {
        let begin = if i == 0 {
            self.start
        } else {
            self.sets[i - 1].0
        };
        let (end, shape) = self.sets[i];
        RrsetRef::from_parts(&self.data[begin as usize..end as usize], shape)
    }

    pub fn get(self, rtype: &RecordType) -> Option<RrsetRef<'a>> {
        self.sets
            .binary_search_by(|(_, s)| s.type_code().cmp(&u16::from(*rtype)))
            .ok()
            .map(|i| self.set(i))
    }

    pub fn values(self) -> impl DoubleEndedIterator<Item = RrsetRef<'a>> {
        (0..self.sets.len()).map(move |i| self.set(i))
    }

    /// The owner name (of its RRsets; none for a node without any).
    pub fn name(self) -> Option<Name> {
        self.values().next()?.name().ok()
    }
}

/// A complete, signed zone. Built whole by [`super::build_signed_zone`], never edited.
#[derive(Debug, Clone)]
pub struct SignedZone {
    pub(crate) origin: Name,
    /// The origin's number of labels. Its canonical key is the first node's: the apex sorts
    /// before every name below it, and a built zone always has its SOA there.
    origin_labels: usize,
    pub(crate) nodes: NodeMap,
    /// Empty non-terminals.
    ents: KeySet,
    /// Delegation points: names below the apex with NS records.
    cuts: KeySet,
    /// The TTL of the SOA records in negative answers (RFC 2308 3: min(SOA TTL, SOA
    /// MINIMUM)); their signatures are the SOA RRset's.
    negative_ttl: u32,
    /// Boxed: most zones use NSEC, and inline the chain took about 80 bytes of each.
    pub(crate) nsec3: Option<Box<Nsec3Chain>>,
    pub(crate) state: SigningState,
}

/// The sections of an authoritative answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// A referral to a delegated child zone (not authoritative).
    pub referral: bool,
}

/// [`Answer`] borrowing the zone's records: what [`SignedZone::lookup_ref`] returns, so the
/// server encodes answers without copying RRsets. Only records renamed for a CNAME target
/// under a wildcard are owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRef<'a> {
    pub rcode: ResponseCode,
    pub answers: Vec<Rr<'a>>,
    pub authorities: Vec<Rr<'a>>,
    pub additionals: Vec<Rr<'a>>,
    /// A referral to a delegated child zone (not authoritative).
    pub referral: bool,
    /// The first this many answers are a wildcard's own records, answered with the query
    /// name as their owner (RFC 4592): they stay borrowed, and the writer puts the query name
    /// in front of them ([`AnswerRef::into_owned`] does the same).
    pub synthesized: usize,
}

impl<'a> AnswerRef<'a> {
    fn new(rcode: ResponseCode) -> Self {
        AnswerRef {
            rcode,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            referral: false,
            synthesized: 0,
        }
    }

    /// The same answer with its own copies of the records, the synthesized ones owned by
    /// `qname`.
    pub fn into_owned(self, qname: &Name) -> Result<Answer, ProtoError> {
        let own = |v: Vec<Rr<'a>>| v.iter().map(Rr::to_record).collect::<Result<Vec<_>, _>>();
        let mut answers: Vec<Record> = own(self.answers)?;
        for r in answers.iter_mut().take(self.synthesized) {
            r.name = qname.clone();
        }
        Ok(Answer {
            rcode: self.rcode,
            answers,
            authorities: own(self.authorities)?,
            additionals: own(self.additionals)?,
            referral: self.referral,
        })
    }
}

impl SignedZone {
    /// The zone of `origin` (lowercase, absolute) from its nodes, empty non-terminals and
    /// delegation points.
    pub(crate) fn new(
        origin: Name,
        nodes: BTreeMap<Name, Node>,
        ents: BTreeSet<Name>,
        cuts: BTreeSet<Name>,
        nsec3: Option<Nsec3Chain>,
        state: SigningState,
    ) -> SignedZone {
        let key = Key::of(&origin);
        let nodes = NodeMap::from(nodes);
        let mut nsec3 = nsec3;
        if let Some(chain) = &mut nsec3 {
            // The apex and each wildcard's parent.
            let mut enclosers = vec![origin.clone()];
            enclosers.extend(
                nodes
                    .values()
                    .filter_map(NodeRef::name)
                    .filter(|n| n.iter().next() == Some(b"*".as_slice()))
                    .map(|n| n.base_name()),
            );
            chain.enclosers = enclosers
                .iter()
                .map(|n| {
                    let labels = n.iter().count();
                    (
                        key_of(n),
                        chain.hash_of(n, labels, None),
                        chain.hash_of(n, labels, Some(b"*")),
                    )
                })
                .collect();
            chain.enclosers.sort_by(|a, b| a.0.cmp(&b.0));
            chain.enclosers.dedup_by(|a, b| a.0 == b.0);
        }
        let negative_ttl = nodes
            .get(&origin)
            .and_then(|n| n.get(&RecordType::SOA))
            .map_or(0, |soa| {
                let minimum = soa.records().iter().find_map(|r| match &r.data {
                    RData::SOA(s) => Some(s.minimum),
                    _ => None,
                });
                soa.ttl().min(minimum.unwrap_or(soa.ttl()))
            });
        SignedZone {
            origin_labels: key.labels(),
            origin,
            negative_ttl,
            nodes,
            ents: KeySet::from(ents),
            cuts: KeySet::from(cuts),
            nsec3: nsec3.map(Box::new),
            state,
        }
    }

    pub fn origin(&self) -> &Name {
        &self.origin
    }

    pub fn serial(&self) -> u32 {
        self.state.serial
    }

    /// The serial, content hash and signature window this zone was signed with.
    pub fn signing_state(&self) -> &SigningState {
        &self.state
    }

    /// The largest TTL of any RRset (denial records included).
    pub fn max_ttl(&self) -> u32 {
        let nodes = self.nodes.values().flat_map(|n| n.values());
        let chain = self
            .nsec3
            .iter()
            .flat_map(|c| c.by_hash.values().map(SignedRrSet::view));
        nodes
            .chain(chain)
            .filter(|s| !s.is_empty())
            .map(|s| s.ttl())
            .max()
            .unwrap_or(0)
    }

    /// Whether authenticated denial uses NSEC3.
    pub fn uses_nsec3(&self) -> bool {
        self.nsec3.is_some()
    }

    /// The RRset of `name` and `rtype`, if present.
    pub fn rrset(&self, name: &Name, rtype: RecordType) -> Option<RrsetRef<'_>> {
        self.nodes.get(name)?.get(&rtype)
    }

    /// The apex SOA RRset.
    pub fn soa(&self) -> Option<RrsetRef<'_>> {
        self.rrset(&self.origin, RecordType::SOA)
    }

    /// All records in zone transfer order: SOA, everything else (signatures, NSEC/NSEC3
    /// included), SOA again (RFC 5936 2.2).
    pub fn axfr_records(&self) -> Vec<Record> {
        let mut out = Vec::new();
        let Some(soa) = self.soa() else {
            return out;
        };
        soa.append_to(&mut out, true);
        // Every RRset but the apex SOA (the same one, by address), which opens and closes.
        for set in self.nodes.values().flat_map(NodeRef::values) {
            if !set.is(soa) {
                set.append_to(&mut out, true);
            }
        }
        if let Some(chain) = &self.nsec3 {
            for set in chain.by_hash.values() {
                set.view().append_to(&mut out, true);
            }
        }
        out.extend(soa.records());
        out
    }

    fn exists(&self, key: &[u8]) -> bool {
        self.nodes.contains_key(key) || self.ents.contains(key)
    }

    fn negative_soa<'a>(&'a self, answer: &mut AnswerRef<'a>, dnssec_ok: bool) {
        if let Some(soa) = self.soa() {
            let negative = soa.unsigned_with_ttl(self.negative_ttl);
            answer.authorities.extend(negative.refs(false));
            if dnssec_ok {
                answer.authorities.extend(soa.rrsig_refs());
            }
        }
    }

    /// Appends `set` with its signatures unless it is already in `out` (the same RRset of this
    /// zone: compared by address, as only the zone's own records are proofs).
    fn push_unique<'a>(out: &mut Vec<Rr<'a>>, set: RrsetRef<'a>) {
        let present = out
            .iter()
            .any(|o| matches!(o, Rr::Zone { set: s, .. } if s.is(set)));
        if !present {
            set.append_ref(out, true);
        }
    }

    /// NSEC covering a name that does not exist (its canonical predecessor in the chain;
    /// glue below a delegation has none and is skipped).
    fn nsec_covering(&self, key: &[u8]) -> Option<RrsetRef<'_>> {
        self.nodes
            .before(key)
            .find_map(|sets| sets.get(&RecordType::NSEC))
            .or_else(|| {
                self.nodes
                    .values()
                    .rev()
                    .find_map(|sets| sets.get(&RecordType::NSEC))
            })
    }

    /// The labels of the delegation point at or above the name of `key`, if it is at or below
    /// one.
    fn cut_at_or_above(&self, key: &Key) -> Option<usize> {
        if self.cuts.is_empty() {
            return None;
        }
        (self.origin_labels + 1..=key.labels())
            .rev()
            .find(|&n| self.cuts.contains(key.ancestor(n)))
    }

    /// A referral (RFC 1034 4.3.2, RFC 4035 3.1.4): the delegation's NS, its DS or the proof
    /// that there is none, and the glue.
    fn referral<'a>(&'a self, cut: &[u8], answer: &mut AnswerRef<'a>, dnssec_ok: bool) {
        answer.referral = true;
        let Some(node) = self.nodes.get_key(cut) else {
            return;
        };
        let Some(ns) = node.get(&RecordType::NS) else {
            return;
        };
        answer.authorities.extend(ns.refs(false));
        if dnssec_ok {
            match node.get(&RecordType::DS) {
                Some(ds) => ds.append_ref(&mut answer.authorities, true),
                None => {
                    if let Some(cut_name) = node.name() {
                        self.nodata_proof(&cut_name, cut, &mut answer.authorities);
                    }
                }
            }
        }
        for rdata in ns.record_data() {
            // NS RDATA is the target's name, uncompressed.
            let Ok(target) = Name::read(&mut BinDecoder::new(rdata)) else {
                continue;
            };
            if let Some(glue) = self.nodes.get(&target) {
                for t in [RecordType::A, RecordType::AAAA] {
                    if let Some(set) = glue.get(&t) {
                        answer.additionals.extend(set.refs(false));
                    }
                }
            }
        }
    }

    /// The denial record of `name` (key `key`) for a type it does not have.
    fn nodata_proof<'a>(&'a self, name: &Name, key: &[u8], out: &mut Vec<Rr<'a>>) {
        match &self.nsec3 {
            Some(chain) => {
                let all = name.iter().count();
                if let Some(set) = chain.matching(&chain.hash_of(name, all, None)) {
                    Self::push_unique(out, set);
                }
            }
            None => {
                let set = match self.nodes.get_key(key) {
                    Some(sets) => sets.get(&RecordType::NSEC),
                    None => self.nsec_covering(key), // empty non-terminal
                };
                if let Some(set) = set {
                    Self::push_unique(out, set);
                }
            }
        }
    }

    /// Proof that `name` does not exist and that no wildcard at its closest encloser (`ce`
    /// labels) could have answered.
    fn nxdomain_proof<'a>(&'a self, name: &Name, key: &Key, ce: usize, out: &mut Vec<Rr<'a>>) {
        match &self.nsec3 {
            Some(chain) => {
                let (ce_hash, wildcard_hash) = chain.encloser_hashes(name, key, ce);
                for set in [
                    chain.matching(&ce_hash),
                    chain.covering(&chain.hash_of(name, ce + 1, None)),
                    chain.covering(&wildcard_hash),
                ]
                .into_iter()
                .flatten()
                {
                    Self::push_unique(out, set);
                }
            }
            None => {
                let wildcard = key.child_of_ancestor(ce, b"*");
                for set in [
                    self.nsec_covering(key.bytes()),
                    self.nsec_covering(wildcard.bytes()),
                ]
                .into_iter()
                .flatten()
                {
                    Self::push_unique(out, set);
                }
            }
        }
    }

    /// Answers `qname`/`qtype` authoritatively. `dnssec_ok` adds RRSIGs and denial proofs.
    /// Names outside the zone get REFUSED.
    pub fn lookup(
        &self,
        qname: &Name,
        qtype: RecordType,
        dnssec_ok: bool,
    ) -> Result<Answer, ProtoError> {
        let mut owner = qname.to_lowercase();
        owner.set_fqdn(true);
        self.lookup_ref(qname, qtype, dnssec_ok).into_owned(&owner)
    }

    /// [`SignedZone::lookup`] without copying the zone's records.
    pub fn lookup_ref(&self, qname: &Name, qtype: RecordType, dnssec_ok: bool) -> AnswerRef<'_> {
        // The zone's names are lowercase and absolute; queries mostly are already.
        let mut name = if qname.is_fqdn() && !qname.iter().flatten().any(u8::is_ascii_uppercase) {
            Cow::Borrowed(qname)
        } else {
            let mut n = qname.to_lowercase();
            n.set_fqdn(true);
            Cow::Owned(n)
        };
        let mut key = Key::of(&name);
        // Without an apex node (not a built zone) nothing is answered.
        match self.nodes.first_key() {
            Some(origin) if key.bytes().starts_with(origin) => {}
            _ => return AnswerRef::new(ResponseCode::Refused),
        }
        let mut answer = AnswerRef::new(ResponseCode::NoError);
        for _ in 0..MAX_CNAME_CHAIN {
            // At or below a delegation the child answers; only the DS at the cut is ours.
            if let Some(cut) = self.cut_at_or_above(&key)
                && !(cut == key.labels() && qtype == RecordType::DS)
            {
                if answer.answers.is_empty() {
                    self.referral(key.ancestor(cut), &mut answer, dnssec_ok);
                }
                return answer;
            }
            // The node of the name, or of the wildcard it is synthesized from (RFC 4592),
            // whose key and the closest encloser's labels are kept for the proofs.
            let mut wildcard: Option<(Key, usize)> = None;
            let mut nxdomain_ce = None;
            let found = match self.nodes.get_key(key.bytes()) {
                Some(entry) => Some(entry),
                None if self.ents.contains(key.bytes()) => None,
                None => {
                    let ce = self.closest_encloser(&key);
                    let w = key.child_of_ancestor(ce, b"*");
                    match self.nodes.get_key(w.bytes()) {
                        Some(entry) => {
                            wildcard = Some((w, ce));
                            Some(entry)
                        }
                        None => {
                            nxdomain_ce = Some(ce);
                            None
                        }
                    }
                }
            };
            if let Some((_, ce)) = &wildcard
                && dnssec_ok
            {
                // The query name does not exist: NSEC covering it, or the NSEC3 covering
                // the next closer name (RFC 4035 3.1.3.3, RFC 5155 7.2.6).
                self.no_such_name_proof(&name, &key, *ce, &mut answer.authorities);
            }
            let synthesized = wildcard.is_some();
            let Some(sets) = found else {
                match nxdomain_ce {
                    None => {
                        // An empty non-terminal: NODATA.
                        self.negative_soa(&mut answer, dnssec_ok);
                        if dnssec_ok {
                            self.nodata_proof(&name, key.bytes(), &mut answer.authorities);
                        }
                    }
                    Some(ce) => {
                        answer.rcode = ResponseCode::NXDomain;
                        self.negative_soa(&mut answer, dnssec_ok);
                        if dnssec_ok {
                            self.nxdomain_proof(&name, &key, ce, &mut answer.authorities);
                        }
                    }
                }
                return answer;
            };
            if qtype == RecordType::ANY {
                // RFC 8482 4.1: one RRset of the name, not all of them (an ANY query is a cheap
                // amplifier otherwise). The first by type that is not a DNSSEC proof.
                if let Some(set) = sets
                    .values()
                    .find(|s| !matches!(s.record_type(), RecordType::NSEC | RecordType::NSEC3))
                {
                    Self::answer_set(set, synthesized, &name, &mut answer, dnssec_ok);
                }
                return answer;
            }
            if qtype == RecordType::RRSIG {
                for set in sets.values() {
                    answer.answers.extend(set.rrsig_refs());
                }
                return answer;
            }
            if let Some(set) = sets.get(&qtype) {
                Self::answer_set(set, synthesized, &name, &mut answer, dnssec_ok);
                return answer;
            }
            if let Some(cname) = sets.get(&RecordType::CNAME) {
                Self::answer_set(cname, synthesized, &name, &mut answer, dnssec_ok);
                // CNAME RDATA is the target's name, uncompressed.
                let target = cname
                    .record_data()
                    .next()
                    .and_then(|rd| Name::read(&mut BinDecoder::new(rd)).ok())
                    .map(|t| t.to_lowercase());
                match target {
                    Some(t) if self.origin.zone_of(&t) => {
                        key = Key::of(&t);
                        name = Cow::Owned(t);
                        continue;
                    }
                    _ => return answer,
                }
            }
            self.negative_soa(&mut answer, dnssec_ok);
            if dnssec_ok {
                match &wildcard {
                    // NODATA at a wildcard: the wildcard's own denial record (no such type)
                    // besides the proof above that the name does not exist.
                    Some((w, _)) => {
                        if let Some(wildcard_name) = sets.name() {
                            self.nodata_proof(&wildcard_name, w.bytes(), &mut answer.authorities);
                        }
                    }
                    None => self.nodata_proof(&name, key.bytes(), &mut answer.authorities),
                }
            }
            return answer;
        }
        answer
    }

    /// An RRset into an answer: as it is, or (`synthesized` from a wildcard) with the name
    /// asked for as owner (marked in [`AnswerRef::synthesized`] when that is the query name,
    /// copied when it is a CNAME's target); the signatures keep their label count, which tells
    /// validators.
    fn answer_set<'a>(
        set: RrsetRef<'a>,
        synthesized: bool,
        name: &Name,
        answer: &mut AnswerRef<'a>,
        dnssec_ok: bool,
    ) {
        let out = &mut answer.answers;
        if !synthesized || out.is_empty() {
            // The query name's own records, or a wildcard's answering the query name itself
            // (the first in the answer section): borrowed.
            set.append_ref(out, dnssec_ok);
            if synthesized {
                answer.synthesized = out.len();
            }
            return;
        }
        // Decoding what `SignedRrSet::new` checked decodes: nothing is skipped.
        out.extend(
            set.refs(dnssec_ok)
                .filter_map(|r| r.renamed(name).ok())
                .map(|r| Rr::Owned(Box::new(r))),
        );
    }

    /// The labels of the longest existing ancestor of the name of `key` (the apex always
    /// exists).
    fn closest_encloser(&self, key: &Key) -> usize {
        let mut ce = key.labels().saturating_sub(1);
        while ce > self.origin_labels && !self.exists(key.ancestor(ce)) {
            ce -= 1;
        }
        ce.max(self.origin_labels)
    }

    /// Proof that `name` (whose closest encloser has `ce` labels) does not exist: the NSEC
    /// covering it, or the NSEC3 covering the next closer name.
    fn no_such_name_proof<'a>(&'a self, name: &Name, key: &Key, ce: usize, out: &mut Vec<Rr<'a>>) {
        match &self.nsec3 {
            Some(chain) => {
                if let Some(set) = chain.covering(&chain.hash_of(name, ce + 1, None)) {
                    Self::push_unique(out, set);
                }
                // NODATA at a wildcard also needs the closest encloser's NSEC3.
                if let Some(set) = chain.matching(&chain.encloser_hashes(name, key, ce).0) {
                    Self::push_unique(out, set);
                }
            }
            None => {
                if let Some(set) = self.nsec_covering(key.bytes()) {
                    Self::push_unique(out, set);
                }
            }
        }
    }
}
