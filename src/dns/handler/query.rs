//! The plain query read straight from a UDP datagram, without hickory's message decoder (which
//! copies the packet and allocates for every section, name and option): a query with one
//! question of class IN, no other records than an OPT without options (EDNS version 0), no
//! TSIG, and not a zone transfer. That is nearly every query a server gets; everything else
//! (and anything unusual about these) goes through `Request::from_bytes`. Both ways give the
//! same response, which the handler's tests check on random and mutated packets.

use hickory_proto::op::{Header, Metadata};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// Offset of the question in a message (right after the header).
const QUESTION: usize = 12;
/// RR type of the EDNS OPT pseudo-record.
const OPT: u16 = 41;
/// Longest name in wire form (RFC 1035 2.3.4).
const NAME_MAX: usize = 255;

/// A plain query (see the module documentation).
pub(crate) struct PlainQuery<'p> {
    pub(crate) metadata: Metadata,
    /// The question as the client sent it (name, type, class), for the response.
    pub(crate) question: &'p [u8],
    /// The question's name, lowercase and absolute.
    pub(crate) name: Name,
    pub(crate) qtype: RecordType,
    /// The OPT record's payload size and DO bit; None without EDNS.
    pub(crate) edns: Option<(u16, bool)>,
}

fn u16_at(packet: &[u8], at: usize) -> Option<u16> {
    let b = packet.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

impl<'p> PlainQuery<'p> {
    /// `packet` as a plain query, or None when it is anything else (not necessarily invalid).
    pub(crate) fn parse(packet: &'p [u8]) -> Option<Self> {
        let flags = *packet.get(2)?;
        // QR set (a response) or an opcode other than QUERY.
        if flags & 0xf8 != 0 {
            return None;
        }
        let (qd, an, ns, ar) = (
            u16_at(packet, 4)?,
            u16_at(packet, 6)?,
            u16_at(packet, 8)?,
            u16_at(packet, 10)?,
        );
        if qd != 1 || an != 0 || ns != 0 || ar > 1 {
            return None;
        }
        let metadata = Header::read(&mut BinDecoder::new(packet)).ok()?.metadata;
        // The name, lowercased into `lower` (uncompressed labels only).
        let mut lower = [0u8; NAME_MAX];
        let mut len = 0;
        let mut pos = QUESTION;
        loop {
            let n = usize::from(*packet.get(pos)?);
            if n == 0 {
                break;
            }
            if n > 63 || len + 1 + n + 1 > NAME_MAX {
                return None; // a pointer, an extended label type, or too long
            }
            let label = packet.get(pos + 1..pos + 1 + n)?;
            lower[len] = n as u8;
            for (to, from) in lower[len + 1..len + 1 + n].iter_mut().zip(label) {
                *to = from.to_ascii_lowercase();
            }
            len += 1 + n;
            pos += 1 + n;
        }
        len += 1; // the root label, a 0 already
        pos += 1;
        let qtype = RecordType::from(u16_at(packet, pos)?);
        if u16_at(packet, pos + 2)? != 1
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR | RecordType::OPT)
        {
            return None;
        }
        let question = &packet[QUESTION..pos + 4];
        pos += 4;
        let edns = if ar == 1 {
            // Root owner, type OPT, payload size, TTL (extended RCODE 0, version 0, flags),
            // no options.
            let opt = packet.get(pos..pos + 11)?;
            if opt[0] != 0
                || u16_at(opt, 1)? != OPT
                || opt[5] != 0
                || opt[6] != 0
                || u16_at(opt, 9)? != 0
            {
                return None;
            }
            Some((u16_at(opt, 3)?, opt[7] & 0x80 != 0))
        } else {
            None
        };
        let name = Name::read(&mut BinDecoder::new(&lower[..len])).ok()?;
        Some(PlainQuery {
            metadata,
            question,
            name,
            qtype,
            edns,
        })
    }

    /// The UDP size limit: the EDNS payload size clamped to 512..=1232, 512 without EDNS (as
    /// [`super::udp_limit`]).
    pub(crate) fn udp_limit(&self) -> usize {
        let client = self.edns.map_or(512, |(payload, _)| payload);
        usize::from(client.clamp(512, super::UDP_PAYLOAD_MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};

    fn query(name: &str, rtype: RecordType, edns: Option<Edns>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 99;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        if let Some(e) = edns {
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn reads_a_plain_query_as_hickory_does() {
        let mut e = Edns::new();
        e.set_dnssec_ok(true);
        e.set_max_payload(4096);
        let bytes = query("WwW.Example.COM.", RecordType::TLSA, Some(e));
        let q = PlainQuery::parse(&bytes).expect("a plain query");
        assert_eq!(q.name, Name::from_ascii("www.example.com.").unwrap());
        assert_eq!(q.name.to_ascii(), "www.example.com.");
        assert!(q.name.is_fqdn());
        assert_eq!(q.qtype, RecordType::TLSA);
        assert_eq!(q.edns, Some((4096, true)));
        assert_eq!(q.udp_limit(), 1232);
        assert_eq!(q.metadata.id, 99);
        assert!(q.metadata.recursion_desired);
        // The question as sent, case and all.
        assert_eq!(&q.question[..4], b"\x03WwW");
        assert_eq!(q.question.len(), 17 + 4);

        let bytes = query("example.com.", RecordType::A, None);
        let q = PlainQuery::parse(&bytes).unwrap();
        assert_eq!((q.edns, q.udp_limit()), (None, 512));
        assert_eq!(q.name.num_labels(), 2);
        let root = query(".", RecordType::NS, None);
        assert!(PlainQuery::parse(&root).unwrap().name.is_root());
    }

    #[test]
    fn anything_unusual_is_left_to_the_full_decoder() {
        let plain = query("example.com.", RecordType::A, None);
        assert!(PlainQuery::parse(&plain).is_some());
        // Transfers, a response, another opcode, two questions, a class other than IN.
        assert!(PlainQuery::parse(&query("example.com.", RecordType::AXFR, None)).is_none());
        assert!(PlainQuery::parse(&query("example.com.", RecordType::IXFR, None)).is_none());
        let mut response = plain.clone();
        response[2] |= 0x80;
        assert!(PlainQuery::parse(&response).is_none());
        let mut notify = plain.clone();
        notify[2] |= 4 << 3;
        assert!(PlainQuery::parse(&notify).is_none());
        let mut two = plain.clone();
        two[5] = 2;
        assert!(PlainQuery::parse(&two).is_none());
        let mut chaos = plain.clone();
        let n = chaos.len();
        chaos[n - 1] = 3;
        assert!(PlainQuery::parse(&chaos).is_none());
        // Cut anywhere.
        for cut in 0..plain.len() {
            assert!(PlainQuery::parse(&plain[..cut]).is_none(), "cut at {cut}");
        }
        // A compressed question name.
        let mut pointer = plain[..12].to_vec();
        pointer.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        assert!(PlainQuery::parse(&pointer).is_none());
        // EDNS version 1, an EDNS option (a cookie), an extended RCODE.
        let mut v1 = Edns::new();
        v1.set_version(1);
        assert!(PlainQuery::parse(&query("example.com.", RecordType::A, Some(v1))).is_none());
        let mut cookie = Edns::new();
        cookie
            .options_mut()
            .insert(EdnsOption::Unknown(EdnsCode::Cookie.into(), vec![7; 8]));
        assert!(PlainQuery::parse(&query("example.com.", RecordType::A, Some(cookie))).is_none());
        let mut high = query("example.com.", RecordType::A, Some(Edns::new()));
        let n = high.len();
        high[n - 6] = 1;
        assert!(PlainQuery::parse(&high).is_none());
        // The longest name is read; one byte more is not a plain query.
        let label = "a".repeat(63);
        let longest = format!("{label}.{label}.{label}.{}.", "b".repeat(61));
        assert!(PlainQuery::parse(&query(&longest, RecordType::A, None)).is_some());
        let mut too_long = plain[..12].to_vec();
        for _ in 0..4 {
            too_long.push(63);
            too_long.extend_from_slice(&[b'a'; 63]);
        }
        too_long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(PlainQuery::parse(&too_long).is_none());
    }
}
