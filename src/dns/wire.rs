//! The UDP answer writer: a response built straight into the output buffer, without
//! hickory's general message builder (which allocates for every name it may compress).
//!
//! Layout: the header, the request's question copied byte for byte (its case preserved, as
//! hickory-server does), the records, then the OPT record when the request had EDNS. Owner
//! names are compressed against the question name (the longest common suffix, as a pointer
//! into the question) or, when equal to the last owner written with a literal label, against
//! that one; names inside RDATA are written uncompressed (always allowed, and required for
//! RRSIG and NSEC; an SOA or MX answer is some 20 bytes longer than fully compressed).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use hickory_proto::ProtoError;
use hickory_proto::op::{Header, HeaderCounts, Metadata};
use hickory_proto::rr::{Name, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use super::cache::SnapshotTag;
use crate::zone::Zones;

/// Offset of the question in a message (right after the header).
const QUESTION: usize = 12;
/// RR type of the EDNS OPT pseudo-record.
const OPT: u16 = 41;
/// Length of our OPT record (root owner, no options).
const OPT_LEN: usize = 11;

/// The response's OPT record.
#[derive(Debug, Clone, Copy)]
pub(super) struct Opt {
    pub max_payload: u16,
    pub dnssec_ok: bool,
}

/// Encoded RDATA of the zone's records, one cache per query task, for one zone snapshot: keyed
/// by the record's address inside that (immutable) snapshot, never dereferenced. RRSIG and
/// NSEC RDATA are the costly part of an answer, and the same few are in many answers.
pub(crate) struct RdataCache {
    zones: SnapshotTag,
    /// Keyed by address (not chosen by clients): a fast unseeded hash will do.
    entries: HashMap<usize, Box<[u8]>, foldhash::fast::FixedState>,
}

/// Records whose RDATA one task keeps (RDATA is a few hundred bytes at most in practice).
const RDATA_CACHE_ENTRIES: usize = 4096;

impl RdataCache {
    pub(super) fn new() -> Self {
        RdataCache {
            zones: SnapshotTag::default(),
            entries: HashMap::default(),
        }
    }

    /// Makes the cache belong to `zones`, dropping every entry of an earlier snapshot.
    pub(super) fn follow(&mut self, zones: &Arc<Zones>) {
        if self.zones.follow(zones) {
            self.entries.clear();
        }
    }
}

/// The labels of the question name: the offset of each one's length byte within the question.
/// Empty when the name cannot serve as a compression target (compressed in the request,
/// malformed, or too far into the message for a pointer). Plain offsets, so that the array is
/// cleared as one block of memory.
struct QuestionLabels {
    labels: [u16; 128],
    count: usize,
}

impl QuestionLabels {
    fn parse(question: &[u8]) -> QuestionLabels {
        let mut q = QuestionLabels {
            labels: [0; 128],
            count: 0,
        };
        let mut pos = 0usize;
        loop {
            let Some(&len) = question.get(pos) else {
                q.count = 0;
                return q;
            };
            if len == 0 {
                return q;
            }
            if len > 63 || q.count == q.labels.len() || pos + 1 + usize::from(len) > question.len()
            {
                q.count = 0;
                return q;
            }
            q.labels[q.count] = pos as u16;
            q.count += 1;
            pos += 1 + usize::from(len);
        }
    }

    fn label<'q>(&self, question: &'q [u8], i: usize) -> &'q [u8] {
        let start = usize::from(self.labels[i]) + 1;
        // Checked by `parse`: the length byte is at most 63 and the label within the question.
        &question[start..start + usize::from(question[start - 1])]
    }
}

/// Writes a complete response into `out` (cleared first) and returns true, or returns false
/// (with `out` unfinished) as soon as it would exceed `limit` bytes. `rdata`, when given, must
/// follow the snapshot the borrowed records come from. `synthesized`: the question's name and
/// how many of the first answers it owns instead of their own owner (a wildcard's records).
#[allow(clippy::too_many_arguments)]
pub(super) fn write_response<'r>(
    out: &mut Vec<u8>,
    metadata: Metadata,
    question: &[u8],
    sections: [&[Cow<'r, Record>]; 3],
    synthesized: Option<(&'r Name, usize)>,
    opt: Option<Opt>,
    limit: usize,
    mut rdata: Option<&mut RdataCache>,
) -> Result<bool, ProtoError> {
    let opt_len = if opt.is_some() { OPT_LEN } else { 0 };
    out.clear();
    out.resize(QUESTION, 0);
    out.extend_from_slice(question);
    let labels = QuestionLabels::parse(question);
    let mut counts = [0u16; 3];
    // The last owner written with at least one literal label, and where.
    let mut last: Option<(&Name, u16)> = None;
    let (qname, synthesized) = match synthesized {
        Some((name, n)) => (Some(name), n),
        None => (None, 0),
    };
    for (s, (section, count)) in sections.iter().zip(counts.iter_mut()).enumerate() {
        for (i, record) in section.iter().enumerate() {
            let cache = match record {
                Cow::Borrowed(_) => rdata.as_deref_mut(),
                Cow::Owned(_) => None,
            };
            let owner = match qname {
                Some(q) if s == 0 && i < synthesized => q,
                _ => &record.name,
            };
            write_record(out, owner, record, question, &labels, &mut last, cache)?;
            if out.len() + opt_len > limit {
                return Ok(false);
            }
            *count = count
                .checked_add(1)
                .ok_or_else(|| ProtoError::from("too many records"))?;
        }
    }
    let mut additionals = counts[2];
    if let Some(opt) = opt {
        out.push(0); // root
        out.extend_from_slice(&OPT.to_be_bytes());
        out.extend_from_slice(&opt.max_payload.to_be_bytes());
        // TTL: extended RCODE, version 0, flags (DO is the top bit).
        out.push(metadata.response_code.high());
        out.push(0);
        out.push(if opt.dnssec_ok { 0x80 } else { 0 });
        out.push(0);
        out.extend_from_slice(&[0, 0]); // no options
        additionals = additionals
            .checked_add(1)
            .ok_or_else(|| ProtoError::from("too many records"))?;
    }
    let header = Header {
        metadata,
        counts: HeaderCounts {
            queries: 1,
            answers: counts[0],
            authorities: counts[1],
            additionals,
        },
    };
    // Overwrites the 12 placeholder bytes.
    header.emit(&mut BinEncoder::with_offset(out, 0))?;
    Ok(out.len() <= limit)
}

/// Writes `record` with `name` as its owner (its own, or the query name it was synthesized
/// for).
fn write_record<'r>(
    out: &mut Vec<u8>,
    name: &'r Name,
    record: &Record,
    question: &[u8],
    labels: &QuestionLabels,
    last: &mut Option<(&'r Name, u16)>,
    rdata: Option<&mut RdataCache>,
) -> Result<(), ProtoError> {
    match *last {
        // Equal lengths first: most owners differ in length. Then the labels byte for byte
        // from the first, where NSEC3 owners differ (the zone's names are lowercase; a name
        // equal but for case is merely written again).
        Some((previous, at))
            if std::ptr::eq(previous, name)
                || (previous.len() == name.len() && previous.iter().eq(name.iter())) =>
        {
            out.extend_from_slice(&(0xC000 | at).to_be_bytes());
        }
        _ => {
            let start = out.len();
            if write_owner(out, name, question, labels) {
                // Pointers need 14 bits; the messages we write are far shorter.
                if let Ok(at) = u16::try_from(start)
                    && at < 0x4000
                {
                    *last = Some((name, at));
                }
            }
        }
    }
    out.extend_from_slice(&u16::from(record.record_type()).to_be_bytes());
    out.extend_from_slice(&u16::from(record.dns_class).to_be_bytes());
    out.extend_from_slice(&record.ttl.to_be_bytes());
    let key = std::ptr::from_ref(record) as usize;
    if let Some(bytes) = rdata.as_ref().and_then(|c| c.entries.get(&key)) {
        out.extend_from_slice(bytes);
        return Ok(());
    }
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    {
        let offset = u32::try_from(out.len()).map_err(|_| ProtoError::from("message too long"))?;
        let mut enc = BinEncoder::with_offset(out, offset);
        enc.set_name_encoding(NameEncoding::Uncompressed);
        record.data.emit(&mut enc)?;
    }
    let length = u16::try_from(out.len() - start - 2)
        .map_err(|_| ProtoError::from("rdata longer than 65535 bytes"))?;
    out[start..start + 2].copy_from_slice(&length.to_be_bytes());
    if let Some(cache) = rdata {
        if cache.entries.len() >= RDATA_CACHE_ENTRIES {
            cache.entries.clear();
        }
        // RDLENGTH and RDATA: position independent (no compression inside).
        cache.entries.insert(key, out[start..].into());
    }
    Ok(())
}

/// Writes `name`, its longest suffix shared with the question name as a pointer into the
/// question. Returns whether at least one label was written literally.
fn write_owner(out: &mut Vec<u8>, name: &Name, question: &[u8], labels: &QuestionLabels) -> bool {
    let mut shared = 0;
    for (mine, i) in name.iter().rev().zip((0..labels.count).rev()) {
        if !mine.eq_ignore_ascii_case(labels.label(question, i)) {
            break;
        }
        shared += 1;
    }
    let own = name.iter().len() - shared;
    for label in name.iter().take(own) {
        // Names hold labels of at most 63 bytes.
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    if shared == 0 {
        out.push(0);
    } else {
        let at = QUESTION as u16 + labels.labels[labels.count - shared];
        out.extend_from_slice(&(0xC000 | at).to_be_bytes());
    }
    own > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
    use hickory_proto::rr::rdata::{A, TXT};
    use hickory_proto::rr::{RData, RecordType};

    fn question(name: &str) -> Vec<u8> {
        let mut q = Vec::new();
        let mut enc = BinEncoder::new(&mut q);
        Name::from_ascii(name).unwrap().emit(&mut enc).unwrap();
        enc.emit_u16(1).unwrap();
        enc.emit_u16(1).unwrap();
        q
    }

    #[test]
    fn response_decodes_with_every_record_and_owner() {
        let q = question("WwW.Example.COM.");
        let www = Name::from_ascii("www.example.com.").unwrap();
        let other = Name::from_ascii("mx1.example.com.").unwrap();
        let apex = Name::from_ascii("example.com.").unwrap();
        let elsewhere = Name::from_ascii("example.net.").unwrap();
        let rec = |n: &Name, d: RData| Cow::Owned(Record::from_rdata(n.clone(), 300, d));
        let a = |n: &Name, last: u8| rec(n, RData::A(A::new(192, 0, 2, last)));
        let answers = vec![a(&www, 1), a(&www, 2), a(&other, 3), a(&other, 4)];
        let authorities = vec![
            rec(&apex, RData::TXT(TXT::new(vec!["x".into()]))),
            a(&elsewhere, 5),
        ];
        let additionals = vec![a(&Name::root(), 6)];
        let mut metadata = Metadata::new(4711, MessageType::Response, OpCode::Query);
        metadata.authoritative = true;
        metadata.response_code = ResponseCode::NXDomain;
        let mut out = Vec::new();
        write_response(
            &mut out,
            metadata,
            &q,
            [&answers, &authorities, &additionals],
            None,
            Some(Opt {
                max_payload: 1232,
                dnssec_ok: true,
            }),
            usize::MAX,
            None,
        )
        .unwrap();
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 4711);
        assert!(m.metadata.authoritative);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        // The question keeps the client's case.
        assert_eq!(m.queries[0].name().to_ascii(), "WwW.Example.COM.");
        let own = |v: &[Cow<'_, Record>]| v.iter().map(|r| r.as_ref().clone()).collect::<Vec<_>>();
        assert_eq!(m.answers, own(&answers));
        assert_eq!(m.authorities, own(&authorities));
        assert_eq!(m.additionals, own(&additionals));
        let ttls = |v: &[Record]| v.iter().map(|r| r.ttl).collect::<Vec<_>>();
        assert_eq!(ttls(&m.answers), [300; 4]);
        assert_eq!(ttls(&m.authorities), [300; 2]);
        assert_eq!(ttls(&m.additionals), [300]);
        let edns: &Edns = m.edns.as_ref().unwrap();
        assert!(edns.flags().dnssec_ok);
        assert_eq!(edns.max_payload(), 1232);
        assert_eq!(m.answers[0].record_type(), RecordType::A);
        // Compressed: www.example.com. twice is two pointers to the question (2 bytes each).
        let plain: usize = 12
            + q.len()
            + own(&answers)
                .iter()
                .chain(&own(&authorities))
                .chain(&own(&additionals))
                .map(|r| r.to_bytes().unwrap().len())
                .sum::<usize>()
            + 11;
        assert!(out.len() < plain, "{} >= {plain}", out.len());
    }

    #[test]
    fn stops_at_the_limit() {
        let q = question("www.example.com.");
        let www = Name::from_ascii("www.example.com.").unwrap();
        let answers: Vec<_> = (0..=255u8)
            .map(|i| {
                Cow::Owned(Record::from_rdata(
                    www.clone(),
                    60,
                    RData::A(A::new(192, 0, 2, i)),
                ))
            })
            .collect();
        let metadata = Metadata::new(1, MessageType::Response, OpCode::Query);
        let opt = Some(Opt {
            max_payload: 1232,
            dnssec_ok: false,
        });
        let mut out = Vec::new();
        // 12 + 21 + 256 * 16 + 11 bytes: over 1232, within 64 KiB.
        assert!(
            !write_response(
                &mut out,
                metadata,
                &q,
                [&answers, &[], &[]],
                None,
                opt,
                1232,
                None
            )
            .unwrap()
        );
        assert!(
            out.len() <= 1232 + 16,
            "stopped at the first record over: {}",
            out.len()
        );
        assert!(
            write_response(
                &mut out,
                metadata,
                &q,
                [&answers, &[], &[]],
                None,
                opt,
                4200,
                None
            )
            .unwrap()
        );
        assert_eq!(out.len(), 12 + q.len() + 256 * 16 + 11);
        assert_eq!(Message::from_vec(&out).unwrap().answers.len(), 256);
    }

    #[test]
    fn a_question_that_cannot_be_a_target_still_gives_a_valid_message() {
        // A question whose name is a pointer (as a client could send): no compression.
        let q = [0xC0, 0x0C, 0, 1, 0, 1];
        let www = Name::from_ascii("www.example.com.").unwrap();
        let answers = vec![Cow::Owned(Record::from_rdata(
            www.clone(),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        ))];
        let mut out = Vec::new();
        let metadata = Metadata::new(1, MessageType::Response, OpCode::Query);
        assert!(
            write_response(
                &mut out,
                metadata,
                &q,
                [&answers, &[], &[]],
                None,
                None,
                512,
                None
            )
            .unwrap()
        );
        // The owner is written in full right after the question.
        assert_eq!(&out[18..35], b"\x03www\x07example\x03com\x00");
    }
}
