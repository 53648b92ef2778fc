//! The request handler: one snapshot of the zones per request, authoritative answers, EDNS0,
//! truncation over UDP, TSIG, and zone transfers: AXFR, and IXFR from the journal (RFC 1995;
//! the whole zone when the secondary's version is no longer kept).
//!
//! Never panics on input: every request-derived value is checked, and failures to encode
//! become SERVFAIL.
//!
//! Parts: `acl` (transfer ACL and TSIG check), `answer` (one request from one snapshot),
//! `encode` (EDNS, truncation, TSIG signing, the UDP writer), `axfr` (zone transfers), `query`
//! (the plain UDP query read without hickory's decoder).

mod acl;
mod answer;
mod axfr;
mod encode;
mod query;

#[allow(unused_imports)]
// each child's items, for the others, the tests and (pub ones) the crate
pub use acl::*;
#[allow(unused_imports)]
// each child's items, for the others, the tests and (pub ones) the crate
pub use answer::*;
#[allow(unused_imports)]
// each child's items, for the others, the tests and (pub ones) the crate
pub use axfr::*;
#[allow(unused_imports)]
// each child's items, for the others, the tests and (pub ones) the crate
pub use encode::*;
#[allow(unused_imports)]
// each child's items, for the others, the tests and (pub ones) the crate
pub use query::*;

use crate::zone::Zones;
use arc_swap::ArcSwap;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::debug;

/// Largest UDP response we send (DNS Flag Day 2020 recommendation).
pub const UDP_PAYLOAD_MAX: u16 = 1232;

/// The RequestHandler serving the zones in the `ArcSwap`.
#[derive(Clone)]
pub struct Authority {
    zones: Arc<ArcSwap<Zones>>,
    policy: Arc<TransferPolicy>,
    /// Previous zone versions, for IXFR.
    journal: super::journal::Journal,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The source addresses hickory-server refuses to answer (port 0, unspecified, broadcast).
pub(super) fn answerable(src: SocketAddr) -> bool {
    src.port() != 0
        && match src.ip() {
            IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_broadcast(),
            IpAddr::V6(v6) => !v6.is_unspecified(),
        }
}

impl Authority {
    pub fn new(zones: Arc<ArcSwap<Zones>>, policy: TransferPolicy) -> Self {
        Authority {
            zones,
            policy: Arc::new(policy),
            journal: Default::default(),
        }
    }

    /// Answers IXFR from `journal` where it has the secondary's version.
    pub fn with_journal(mut self, journal: super::journal::Journal) -> Self {
        self.journal = journal;
        self
    }

    /// The zones being served now (one snapshot per request).
    pub(super) fn snapshot(&self) -> arc_swap::Guard<Arc<Zones>> {
        self.zones.load()
    }
}

#[async_trait::async_trait]
impl RequestHandler for Authority {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        // One snapshot for the whole request: a concurrent swap never mixes zone versions.
        let zones = self.zones.load_full();
        match self.respond(&zones, request, response_handle).await {
            Ok(info) => info,
            Err(e) => {
                debug!(src = %request.src(), err = %e, "failed to send dns response");
                servfail_info(request)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Header, MessageType, ResponseCode};
    use hickory_proto::rr::{Name, Record, RecordType, TSigner};
    use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
    use hickory_server::net::NetError;
    use hickory_server::net::xfer::Protocol;

    use crate::dns::settings::Secondary;
    use crate::zone::{DnssecSettings, ZoneData, ZoneKey, build_signed_zone, keys};
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
    use hickory_server::net::runtime::TokioTime;
    use hickory_server::zone_handler::MessageResponse;
    use proptest::prelude::*;
    use std::path::Path;
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    /// A ResponseHandler that keeps the encoded responses.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Vec<u8>>>>);

    #[async_trait::async_trait]
    impl ResponseHandler for Capture {
        async fn send_response<'a>(
            &mut self,
            response: MessageResponse<
                '_,
                'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
            >,
        ) -> Result<ResponseInfo, NetError> {
            let mut buf = Vec::new();
            let mut enc = BinEncoder::new(&mut buf);
            let info = response.destructive_emit(&mut enc)?;
            self.0
                .lock()
                .map_err(|_| NetError::from("poisoned"))?
                .push(buf);
            Ok(info)
        }
    }

    const ZONE: &str = "$ORIGIN example.com.
$TTL 3600
@   IN SOA ns1 hostmaster ( 1 3600 600 1209600 300 )
    IN NS  ns1
    IN MX  10 mx1
ns1 IN A   192.0.2.1
mx1 IN A   192.0.2.25
www IN CNAME mx1
*.wild IN TXT \"w\"
*.alias IN CNAME mx1
_25._tcp.mx1 IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
";

    fn signer() -> TSigner {
        TSigner::new(
            b"0123456789abcdef0123456789abcdef".to_vec(),
            TsigAlgorithm::HmacSha256,
            Name::from_ascii("xfr-key.").unwrap(),
            300,
        )
        .unwrap()
    }

    /// `text` signed for example.com. (NSEC3) with a new key.
    fn signed(text: &str) -> Zones {
        let origin = Name::from_ascii("example.com.").unwrap();
        let data = ZoneData::parse(text, Path::new("fuzz.zone"), &origin).unwrap();
        let alg = crate::zone::DnssecAlgorithm::EcdsaP256Sha256;
        let der = keys::generate_pkcs8(alg).unwrap();
        let key = ZoneKey::from_pkcs8(alg, &der, Path::new("mem")).unwrap();
        let settings = DnssecSettings {
            nsec3: true,
            ..DnssecSettings::default()
        };
        let (zone, _) = build_signed_zone(&data, &key.into(), None, unix_now(), &settings).unwrap();
        Zones::new().with(zone)
    }

    fn authority() -> &'static Authority {
        static A: OnceLock<Authority> = OnceLock::new();
        A.get_or_init(|| {
            let zones = Arc::new(ArcSwap::from_pointee(signed(ZONE)));
            let mut sec = Secondary::new("s", "127.0.0.1:53".parse().unwrap());
            sec.tsig = Some(signer());
            Authority::new(zones, TransferPolicy::new(&[sec]))
        })
    }

    /// Valid queries to mutate: several types, with and without EDNS/DO, one TSIG-signed AXFR.
    fn seeds() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (name, rtype) in [
            ("example.com.", RecordType::SOA),
            ("www.example.com.", RecordType::A),
            ("nope.example.com.", RecordType::TXT),
            ("_tcp.mx1.example.com.", RecordType::TLSA),
            ("example.com.", RecordType::ANY),
            ("example.com.", RecordType::AXFR),
            ("example.org.", RecordType::A),
            ("A.b.Wild.example.com.", RecordType::TXT),
            ("a.wild.example.com.", RecordType::A),
            ("x.alias.example.com.", RecordType::A),
        ] {
            for dnssec in [false, true] {
                let mut m = Message::query();
                m.metadata.id = 4242;
                m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
                if dnssec {
                    let mut e = Edns::new();
                    e.set_dnssec_ok(true);
                    e.set_max_payload(1232);
                    m.set_edns(e);
                }
                if rtype == RecordType::AXFR && dnssec {
                    m.finalize(&signer(), unix_now()).unwrap();
                }
                out.push(m.to_vec().unwrap());
            }
        }
        out
    }

    fn src() -> SocketAddr {
        "127.0.0.1:5353".parse().unwrap()
    }

    /// The request through the hickory `RequestHandler` path (what TCP uses).
    fn handle_hickory(request: &Request) -> Result<Vec<Vec<u8>>, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let capture = Capture::default();
        let done = rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(2),
                authority().handle_request::<_, TokioTime>(request, capture.clone()),
            )
            .await
        });
        if done.is_err() {
            return Err("no answer within 2 s".into());
        }
        let sent = capture.0.lock().map_err(|e| e.to_string())?.clone();
        Ok(sent)
    }

    fn check(sent: &[Vec<u8>], id: u16, tcp: bool) -> Result<(), String> {
        if sent.is_empty() {
            return Err("no response sent".into());
        }
        for r in sent {
            let m = Message::from_vec(r).map_err(|e| format!("unparsable response: {e}"))?;
            if m.metadata.id != id {
                return Err("response id differs".into());
            }
            if !tcp && r.len() > 1232 {
                return Err(format!("udp response of {} bytes", r.len()));
            }
        }
        Ok(())
    }

    fn handle(bytes: Vec<u8>, tcp: bool) -> Result<Vec<Vec<u8>>, String> {
        if !tcp {
            return handle_udp(bytes);
        }
        let Ok(request) = Request::from_bytes(bytes, src(), Protocol::Tcp) else {
            return Ok(Vec::new()); // the server answers undecodable packets itself (FORMERR)
        };
        let sent = handle_hickory(&request)?;
        check(&sent, request.metadata.id, true)?;
        Ok(sent)
    }

    /// Every record's TTL in message order (`Record`'s equality ignores TTLs).
    fn ttls(m: &Message) -> Vec<u32> {
        m.answers
            .iter()
            .chain(&m.authorities)
            .chain(&m.additionals)
            .map(|r| r.ttl)
            .collect()
    }

    /// The datagram through our UDP path; it must decode to the same message as the hickory
    /// path with `Protocol::Udp` (what served UDP before) gives.
    fn handle_udp(bytes: Vec<u8>) -> Result<Vec<Vec<u8>>, String> {
        let mut out = Vec::new();
        let zones = authority().snapshot();
        let answer = authority().answer_udp(&zones, &bytes, src(), &mut out);
        let sent = answer != UdpAnswer::Nothing;
        if answer == UdpAnswer::Reusable {
            // What the response cache relies on: the same bytes with another ID, from another
            // address, get the same response but for the ID.
            let mut again = bytes.clone();
            again[0] ^= 0xff;
            let other: SocketAddr = "192.0.2.7:5300".parse().unwrap();
            let mut out2 = Vec::new();
            let a2 = authority().answer_udp(&zones, &again, other, &mut out2);
            if a2 != UdpAnswer::Reusable || out2[..2] != again[..2] || out2[2..] != out[2..] {
                return Err("a reusable answer depends on more than the request bytes".into());
            }
        }
        let Ok(header) = Header::read(&mut BinDecoder::new(&bytes)) else {
            return if sent {
                Err("answered a datagram shorter than a header".into())
            } else {
                Ok(Vec::new())
            };
        };
        let Ok(request) = Request::from_bytes(bytes, src(), Protocol::Udp) else {
            // FORMERR: the bare header, as hickory-server sends it.
            let m = Message::from_vec(&out).map_err(|e| format!("unparsable FORMERR: {e}"))?;
            if !sent || m.metadata.response_code != ResponseCode::FormErr || out.len() != 12 {
                return Err("undecodable datagram not answered FORMERR".into());
            }
            check(std::slice::from_ref(&out), header.metadata.id, false)?;
            return Ok(vec![out]);
        };
        if request.metadata.message_type == MessageType::Response {
            return if sent {
                Err("answered a response".into())
            } else {
                Ok(Vec::new())
            };
        }
        check(std::slice::from_ref(&out), request.metadata.id, false)?;
        if request.signature.is_none() {
            // Where hickory's path (what served UDP before) answers within 512 bytes, ours
            // gives the same message (compression may differ, so compare decoded).
            // Where only one of them had to truncate, the sizes straddle the limit.
            let old = handle_hickory(&request)?;
            if let [old] = &old[..] {
                let ours = Message::from_vec(&out).map_err(|e| e.to_string())?;
                let theirs = Message::from_vec(old).map_err(|e| e.to_string())?;
                let same = if ours.metadata.truncation == theirs.metadata.truncation {
                    ours == theirs && ttls(&ours) == ttls(&theirs)
                } else {
                    old.len().abs_diff(out.len()) < 200
                };
                if !same || out.len() > old.len() + 64 {
                    return Err(format!(
                        "udp path differs from the hickory path:\n{ours:?}\n{theirs:?}"
                    ));
                }
            }
        }
        Ok(vec![out])
    }

    /// The real loop on a socket: garbage and mutated packets, then a valid query is answered.
    #[test]
    fn udp_loop_survives_garbage() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let server = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
            let addr = server.local_addr().unwrap();
            let task = tokio::spawn(super::super::udp::serve(
                server,
                authority().clone(),
                16,
                std::sync::Arc::new(std::sync::Mutex::new(crate::dns::rrl::RateLimiter::new(
                    0, 0,
                ))),
            ));
            let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut junk: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0xff; 11], vec![0xff; 4096]];
            for (i, seed) in seeds().into_iter().enumerate() {
                let mut m = seed.clone();
                let n = m.len();
                m[i % n] ^= 0x5a;
                junk.push(m);
                junk.push(seed[..seed.len() / 2].to_vec());
                junk.push(seed);
            }
            for j in &junk {
                client.send_to(j, addr).await.unwrap();
            }
            let mut q = Message::query();
            q.metadata.id = 777;
            q.add_query(Query::query(
                Name::from_ascii("mx1.example.com.").unwrap(),
                RecordType::A,
            ));
            client.send_to(&q.to_vec().unwrap(), addr).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let answer = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    let (n, _) = client.recv_from(&mut buf).await.unwrap();
                    let m = Message::from_vec(&buf[..n]).unwrap();
                    if m.metadata.id == 777 {
                        return m;
                    }
                }
            })
            .await
            .expect("no answer from the udp loop");
            assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
            assert_eq!(answer.answers.len(), 1);
            assert!(!task.is_finished());
            task.abort();
        });
    }

    /// The real loop with its response cache: repeated queries are answered with their own ID,
    /// and a new zone snapshot is served at once (nothing from the cache of the old one).
    #[test]
    fn udp_cache_follows_zone_swaps() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let zones = Arc::new(ArcSwap::from_pointee(signed(ZONE)));
            let authority = Authority::new(zones.clone(), TransferPolicy::default());
            let server = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
            let addr = server.local_addr().unwrap();
            let task = tokio::spawn(super::super::udp::serve(
                server,
                authority,
                16,
                std::sync::Arc::new(std::sync::Mutex::new(crate::dns::rrl::RateLimiter::new(
                    0, 0,
                ))),
            ));
            let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let ask = |id: u16| {
                let mut q = Message::query();
                q.metadata.id = id;
                q.add_query(Query::query(
                    Name::from_ascii("mx1.example.com.").unwrap(),
                    RecordType::A,
                ));
                q.to_vec().unwrap()
            };
            let mut buf = vec![0u8; 4096];
            let mut answer = async |id: u16| {
                client.send_to(&ask(id), addr).await.unwrap();
                let (n, _) =
                    tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
                        .await
                        .expect("no answer from the udp loop")
                        .unwrap();
                let m = Message::from_vec(&buf[..n]).unwrap();
                assert_eq!(m.metadata.id, id);
                let [a] = &m.answers[..] else {
                    panic!("expected one answer: {m:?}");
                };
                a.data.to_string()
            };
            assert_eq!(answer(1).await, "192.0.2.25");
            assert_eq!(answer(2).await, "192.0.2.25");
            zones.store(Arc::new(signed(&ZONE.replace("192.0.2.25", "192.0.2.26"))));
            assert_eq!(answer(3).await, "192.0.2.26");
            assert_eq!(answer(4).await, "192.0.2.26");
            task.abort();
        });
    }

    #[test]
    fn badkey_answers_name_the_algorithm_of_the_request() {
        for alg in [TsigAlgorithm::HmacSha512, TsigAlgorithm::HmacSha256] {
            let unknown = TSigner::new(
                b"another secret, another key name".to_vec(),
                alg.clone(),
                Name::from_ascii("nobody-key.").unwrap(),
                300,
            )
            .unwrap();
            let mut m = Message::query();
            m.metadata.id = 77;
            m.add_query(Query::query(
                Name::from_ascii("example.com.").unwrap(),
                RecordType::SOA,
            ));
            m.finalize(&unknown, unix_now()).unwrap();
            for tcp in [true, false] {
                let sent = handle(m.to_vec().unwrap(), tcp).unwrap();
                let r = Message::from_vec(&sent[0]).unwrap();
                assert_eq!(r.metadata.response_code, ResponseCode::NotAuth);
                let tsig = r.signature.as_ref().expect("a TSIG record");
                assert_eq!(tsig.name.to_ascii(), "nobody-key.");
                assert_eq!(tsig.data.algorithm, alg, "tcp {tcp}");
                assert_eq!(
                    tsig.data.error,
                    Some(hickory_proto::rr::rdata::tsig::TsigError::BadKey)
                );
            }
        }
    }

    #[test]
    fn seeds_are_answered() {
        for s in seeds() {
            for tcp in [true, false] {
                let r = handle(s.clone(), tcp).unwrap();
                assert!(!r.is_empty());
            }
        }
    }

    proptest! {
        // PROPTEST_CASES=20000 for a longer run.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
            ..ProptestConfig::default()
        })]

        #[test]
        fn random_packets_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700), tcp in any::<bool>()) {
            handle(bytes, tcp).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn mutated_queries_never_panic(
            seed in 0usize..20,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in proptest::option::of(any::<usize>()),
            tcp in any::<bool>(),
        ) {
            let mut bytes = seeds()[seed % 14].clone();
            for (i, v) in flips {
                let len = bytes.len();
                bytes[i % len] ^= v;
            }
            if let Some(c) = cut {
                bytes.truncate(c % (bytes.len() + 1));
            }
            handle(bytes, tcp).map_err(TestCaseError::fail)?;
        }
    }
}
