//! Response rate limiting for UDP (as knot and nsd do): one limiter, shared by the query
//! tasks, counts the datagrams answered per client network (IPv4 /24, IPv6 /56) in a token bucket, before looking
//! anything up. Over the rate, every `slip`-th query gets an empty truncated answer built from
//! the query alone (a real resolver then asks over TCP, which a spoofed source cannot), the
//! others are dropped. A flood of spoofed queries thus cannot use mxguard to amplify traffic at
//! a victim, and costs no lookups. Pure apart from the clock passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Client networks remembered; beyond, idle ones are forgotten first.
const MAX_NETWORKS: usize = 100_000;

/// What to do with one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Send,
    /// Send an empty answer with TC set instead.
    Slip,
    Drop,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The limiter of the server's UDP query tasks (behind one lock, taken once per batch).
pub(crate) struct RateLimiter {
    /// Queries answered per second per client network (0: no limit).
    rate: u32,
    /// Every `slip`-th limited query gets a truncated answer instead of none (0: all dropped).
    slip: u32,
    buckets: HashMap<[u8; 8], Bucket>,
    limited: u64,
}

/// The client network of `ip`: IPv4 /24 or IPv6 /56.
fn network(ip: IpAddr) -> [u8; 8] {
    let mut k = [0u8; 8];
    match ip {
        IpAddr::V4(v4) => {
            k[0] = 4;
            k[1..4].copy_from_slice(&v4.octets()[..3]);
        }
        IpAddr::V6(v6) => {
            k[0] = 6;
            k[1..8].copy_from_slice(&v6.octets()[..7]);
        }
    }
    k
}

impl RateLimiter {
    pub(crate) fn new(rate: u32, slip: u32) -> RateLimiter {
        RateLimiter {
            rate,
            slip,
            buckets: HashMap::new(),
            limited: 0,
        }
    }

    /// The verdict for one more query from `ip` at `now`.
    pub(crate) fn check(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        if self.rate == 0 {
            return Verdict::Send;
        }
        let rate = f64::from(self.rate);
        if self.buckets.len() >= MAX_NETWORKS {
            self.buckets
                .retain(|_, b| now.duration_since(b.last) < Duration::from_secs(1));
            if self.buckets.len() >= MAX_NETWORKS {
                self.buckets.clear();
            }
        }
        let b = self.buckets.entry(network(ip)).or_insert(Bucket {
            tokens: rate,
            last: now,
        });
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Verdict::Send;
        }
        self.limited += 1;
        if self.slip > 0 && self.limited.is_multiple_of(u64::from(self.slip)) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// Writes into `out` an empty answer with TC set to `request`, built from the request alone
/// (no lookup: what a rate-limited query gets, so that a flood costs no answers): the header
/// with the ID, opcode, RD and CD kept, QR and TC set, NOERROR, the question, and an OPT record
/// without options when the request's first additional record is an OPT (RFC 6891 7; its DO
/// bit copied). `false` (nothing to send) unless the request is a query (QR clear, opcode
/// QUERY) with one question.
pub(crate) fn truncated_reply(request: &[u8], out: &mut Vec<u8>) -> bool {
    if request.len() < 12 || request[2] & 0xf8 != 0 || request[4..6] != [0, 1] {
        return false;
    }
    // The question: from offset 12, labels up to the root, then type and class.
    let mut i = 12;
    loop {
        let Some(&len) = request.get(i) else {
            return false;
        };
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xc0 != 0 {
            return false; // no compression in a question
        }
        i += 1 + usize::from(len);
    }
    let end = i + 4;
    if request.len() < end {
        return false;
    }
    out.clear();
    out.extend_from_slice(&request[..end]);
    out[2] = 0x80 | 0x02 | (request[2] & 0x01); // QR, TC, RD as asked
    out[3] = request[3] & 0x10; // CD as asked; NOERROR
    out[6..12].fill(0); // ANCOUNT, NSCOUNT, ARCOUNT
    // An OPT right after the question (no answer or authority records in a query): root
    // owner, type 41, then class (payload size) and TTL (extended RCODE, version, DO bit).
    if request[6..10] == [0, 0, 0, 0]
        && request[10..12] != [0, 0]
        && request.get(end..end + 3) == Some(&[0, 0, 41][..])
        && let Some(&flags) = request.get(end + 7)
    {
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&crate::dns::handler::UDP_PAYLOAD_MAX.to_be_bytes());
        out.extend_from_slice(&[0, 0, flags & 0x80, 0, 0, 0]); // TTL, RDLENGTH 0
        out[11] = 1; // ARCOUNT
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_over_the_rate_gets_every_slip_th_response_truncated() {
        let mut rl = RateLimiter::new(10, 2);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let same_net: IpAddr = "192.0.2.200".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        let verdicts: Vec<Verdict> = (0..20)
            .map(|i| rl.check(if i % 2 == 0 { a } else { same_net }, t0))
            .collect();
        assert!(verdicts[..10].iter().all(|v| *v == Verdict::Send));
        assert_eq!(
            verdicts[10..]
                .iter()
                .filter(|v| **v == Verdict::Slip)
                .count(),
            5
        );
        assert_eq!(
            verdicts[10..]
                .iter()
                .filter(|v| **v == Verdict::Drop)
                .count(),
            5
        );
        // Another network is not affected; the limited one refills with time.
        assert_eq!(rl.check(other, t0), Verdict::Send);
        assert_eq!(rl.check(a, t0 + Duration::from_millis(200)), Verdict::Send);
        // Rate 0: no limit.
        let mut off = RateLimiter::new(0, 2);
        assert!((0..1000).all(|_| off.check(a, t0) == Verdict::Send));
    }

    #[test]
    fn a_truncated_reply_is_built_from_a_query_alone() {
        let mut m = hickory_proto::op::Message::query();
        m.metadata.id = 9;
        m.metadata.recursion_desired = true;
        m.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii("example.com.").unwrap(),
            hickory_proto::rr::RecordType::TXT,
        ));
        let mut e = hickory_proto::op::Edns::new();
        e.set_dnssec_ok(true);
        m.set_edns(e);
        let request = m.to_vec().unwrap();
        let mut out = vec![1, 2, 3];
        assert!(truncated_reply(&request, &mut out));
        let back = hickory_proto::op::Message::from_vec(&out).unwrap();
        assert_eq!(
            back.metadata.message_type,
            hickory_proto::op::MessageType::Response
        );
        assert!(back.metadata.truncation && back.metadata.recursion_desired);
        assert!(!back.metadata.authoritative);
        assert_eq!(back.metadata.id, 9);
        assert_eq!(back.queries, m.queries);
        assert!(back.answers.is_empty() && back.additionals.is_empty());
        let edns = back.edns.expect("an OPT for a query with one");
        assert!(edns.flags().dnssec_ok && edns.options().as_ref().is_empty());
        assert!(
            out.len() <= request.len(),
            "no larger than the query: no amplification"
        );
        // Without EDNS in the query, none in the answer.
        let mut plain = hickory_proto::op::Message::query();
        plain.add_query(m.queries[0].clone());
        let plain = plain.to_vec().unwrap();
        assert!(truncated_reply(&plain, &mut out));
        assert!(
            hickory_proto::op::Message::from_vec(&out)
                .unwrap()
                .edns
                .is_none()
        );
        assert_eq!(out.len(), plain.len());
        // Not for a cut question, a response or another opcode.
        assert!(!truncated_reply(&request[..14], &mut out));
        let mut response = request.clone();
        response[2] |= 0x80;
        assert!(!truncated_reply(&response, &mut out));
        let mut notify = request.clone();
        notify[2] |= 4 << 3;
        assert!(!truncated_reply(&notify, &mut out));
    }
}
