//! Response rate limiting for UDP (as knot and nsd do): each query task counts the responses
//! it sends per client network (IPv4 /24, IPv6 /56) in a token bucket. Over the rate, every
//! `slip`-th response is sent as an empty truncated one (a real resolver then asks over TCP,
//! which a spoofed source cannot), the others are dropped. A flood of spoofed queries thus
//! cannot use mxguard to amplify traffic at a victim. Pure apart from the clock passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Client networks remembered per task; beyond, idle ones are forgotten first.
const MAX_NETWORKS: usize = 100_000;

/// What to do with one response.
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

/// One query task's limiter.
pub(crate) struct RateLimiter {
    /// Responses per second per client network (0: no limit).
    rate: u32,
    /// Every `slip`-th limited response is truncated instead of dropped (0: all dropped).
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

    /// The verdict for one more response to `ip` at `now`.
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

/// Turns the response in `out` (to `request`) into an empty one with TC set: header with the
/// counts of the question only, and the question. `false` if the request's question cannot
/// be found (then nothing is sent).
pub(crate) fn truncate_in_place(request: &[u8], out: &mut Vec<u8>) -> bool {
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
            return false; // no compression in a question we answered
        }
        i += 1 + usize::from(len);
    }
    let end = i + 4;
    if out.len() < end || request.len() < end {
        return false;
    }
    out.truncate(end);
    out[2] |= 0x02; // TC
    out[4..6].copy_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    out[6..12].fill(0); // ANCOUNT, NSCOUNT, ARCOUNT
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
    fn truncation_keeps_header_and_question_only() {
        let mut m = hickory_proto::op::Message::query();
        m.metadata.id = 9;
        m.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii("example.com.").unwrap(),
            hickory_proto::rr::RecordType::TXT,
        ));
        let request = m.to_vec().unwrap();
        let mut response = m.clone();
        response.metadata.message_type = hickory_proto::op::MessageType::Response;
        response.add_answer(hickory_proto::rr::Record::from_rdata(
            hickory_proto::rr::Name::from_ascii("example.com.").unwrap(),
            60,
            hickory_proto::rr::RData::TXT(hickory_proto::rr::rdata::TXT::new(vec![
                "x".repeat(200),
            ])),
        ));
        let mut out = response.to_vec().unwrap();
        assert!(truncate_in_place(&request, &mut out));
        let back = hickory_proto::op::Message::from_vec(&out).unwrap();
        assert!(back.metadata.truncation);
        assert_eq!(back.metadata.id, 9);
        assert!(back.answers.is_empty());
        assert_eq!(back.queries.len(), 1);
        assert!(!truncate_in_place(&request[..14], &mut out));
    }
}
