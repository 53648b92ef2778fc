//! The UDP answer writer: a response built straight into the output buffer, without
//! hickory's general message builder (which allocates for every name it may compress).
//!
//! Layout: the header, the request's question copied byte for byte (its case preserved, as
//! hickory-server does), the records, then the OPT record when the request had EDNS. Owner
//! names are compressed against the question name (the longest common suffix, as a pointer
//! into the question) or, when equal to the last owner written with a literal label, against
//! that one; names inside RDATA are written uncompressed (always allowed, and required for
//! RRSIG and NSEC; an SOA or MX answer is some 20 bytes longer than fully compressed).

use hickory_proto::ProtoError;
use hickory_proto::op::{Header, HeaderCounts, Metadata};
use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use crate::zone::Rr;

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
/// (with `out` unfinished) as soon as it would exceed `limit` bytes. `synthesized`: the
/// question's name and how many of the first answers it owns instead of their own owner (a
/// wildcard's records).
pub(super) fn write_response(
    out: &mut Vec<u8>,
    metadata: Metadata,
    question: &[u8],
    sections: [&[Rr<'_>]; 3],
    synthesized: Option<(&Name, usize)>,
    opt: Option<Opt>,
    limit: usize,
) -> Result<bool, ProtoError> {
    let opt_len = if opt.is_some() { OPT_LEN } else { 0 };
    out.clear();
    out.resize(QUESTION, 0);
    out.extend_from_slice(question);
    let labels = QuestionLabels::parse(question);
    let mut counts = [0u16; 3];
    let (qname, synthesized) = match synthesized {
        Some((name, n)) if n > 0 => (wire_name(name)?, n),
        _ => (Vec::new(), 0),
    };
    // The owners of records made for this answer (rare: none allocates nothing).
    let owned = sections
        .iter()
        .flat_map(|s| s.iter())
        .filter_map(|r| match r {
            Rr::Owned(r) => Some(wire_name(&r.name)),
            Rr::Zone { .. } => None,
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut owned = owned.iter();
    // The last owner written with at least one literal label, and where.
    let mut last: Option<(&[u8], u16)> = None;
    for (s, (section, count)) in sections.iter().zip(counts.iter_mut()).enumerate() {
        for (i, record) in section.iter().enumerate() {
            let own = match record {
                Rr::Owned(_) => owned.next().map(Vec::as_slice),
                Rr::Zone { set, .. } => Some(set.owner()),
            };
            let owner: &[u8] = match own {
                _ if s == 0 && i < synthesized => &qname,
                Some(o) => o,
                None => return Err(ProtoError::from("owner missing")),
            };
            write_record(out, owner, record, question, &labels, &mut last)?;
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

/// `name` in wire form, uncompressed, lowercase.
fn wire_name(name: &Name) -> Result<Vec<u8>, ProtoError> {
    let mut buf = Vec::with_capacity(name.len() + 1);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_name_encoding(NameEncoding::UncompressedLowercase);
    name.emit(&mut enc)?;
    Ok(buf)
}

/// Writes `record` with `owner` (wire form, lowercase) as its owner: its own, or the query
/// name it was synthesized for.
fn write_record<'o>(
    out: &mut Vec<u8>,
    owner: &'o [u8],
    record: &Rr<'_>,
    question: &[u8],
    labels: &QuestionLabels,
    last: &mut Option<(&'o [u8], u16)>,
) -> Result<(), ProtoError> {
    match *last {
        Some((previous, at)) if previous == owner => {
            out.extend_from_slice(&(0xC000 | at).to_be_bytes());
        }
        _ => {
            let start = out.len();
            if write_owner(out, owner, question, labels) {
                // Pointers need 14 bits; the messages we write are far shorter.
                if let Ok(at) = u16::try_from(start)
                    && at < 0x4000
                {
                    *last = Some((owner, at));
                }
            }
        }
    }
    out.extend_from_slice(&u16::from(record.record_type()).to_be_bytes());
    match record {
        Rr::Zone { rdata, .. } => {
            out.extend_from_slice(&1u16.to_be_bytes()); // class IN
            out.extend_from_slice(&record.ttl().to_be_bytes());
            let length = u16::try_from(rdata.len())
                .map_err(|_| ProtoError::from("rdata longer than 65535 bytes"))?;
            out.extend_from_slice(&length.to_be_bytes());
            out.extend_from_slice(rdata);
        }
        Rr::Owned(r) => {
            out.extend_from_slice(&u16::from(r.dns_class).to_be_bytes());
            out.extend_from_slice(&r.ttl.to_be_bytes());
            let start = out.len();
            out.extend_from_slice(&[0, 0]);
            {
                let offset =
                    u32::try_from(out.len()).map_err(|_| ProtoError::from("message too long"))?;
                let mut enc = BinEncoder::with_offset(out, offset);
                enc.set_name_encoding(NameEncoding::Uncompressed);
                r.data.emit(&mut enc)?;
            }
            let length = u16::try_from(out.len() - start - 2)
                .map_err(|_| ProtoError::from("rdata longer than 65535 bytes"))?;
            out[start..start + 2].copy_from_slice(&length.to_be_bytes());
        }
    }
    Ok(())
}

/// Writes `owner` (wire form), its longest suffix shared with the question name as a pointer
/// into the question. Returns whether at least one label was written literally.
fn write_owner(out: &mut Vec<u8>, owner: &[u8], question: &[u8], labels: &QuestionLabels) -> bool {
    // Where each label of the owner starts (a valid name has at most 127 labels).
    let mut starts = [0u8; 128];
    let mut n = 0;
    let mut pos = 0usize;
    while let Some(&len) = owner.get(pos) {
        if len == 0 || n == starts.len() {
            break;
        }
        // Owners are at most 255 bytes.
        starts[n] = pos as u8;
        n += 1;
        pos += 1 + usize::from(len);
    }
    let label = |i: usize| {
        let at = usize::from(starts[i]);
        let len = usize::from(owner[at]);
        owner.get(at + 1..at + 1 + len).unwrap_or_default()
    };
    let mut shared = 0;
    for (mine, i) in (0..n).rev().zip((0..labels.count).rev()) {
        if !label(mine).eq_ignore_ascii_case(labels.label(question, i)) {
            break;
        }
        shared += 1;
    }
    let own = n - shared;
    if shared == 0 {
        out.extend_from_slice(owner);
    } else {
        out.extend_from_slice(&owner[..usize::from(starts[own])]);
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
    use hickory_proto::rr::{RData, Record, RecordType};

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
        let rec = |n: &Name, d: RData| Rr::Owned(Box::new(Record::from_rdata(n.clone(), 300, d)));
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
        )
        .unwrap();
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 4711);
        assert!(m.metadata.authoritative);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        // The question keeps the client's case.
        assert_eq!(m.queries[0].name().to_ascii(), "WwW.Example.COM.");
        let own = |v: &[Rr<'_>]| v.iter().map(|r| r.to_record().unwrap()).collect::<Vec<_>>();
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
                Rr::Owned(Box::new(Record::from_rdata(
                    www.clone(),
                    60,
                    RData::A(A::new(192, 0, 2, i)),
                )))
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
                1232
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
                4200
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
        let answers = vec![Rr::Owned(Box::new(Record::from_rdata(
            www.clone(),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        )))];
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
                512
            )
            .unwrap()
        );
        // The owner is written in full right after the question.
        assert_eq!(&out[18..35], b"\x03www\x07example\x03com\x00");
    }
}
