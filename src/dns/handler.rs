//! The request handler: one snapshot of the zones per request, authoritative answers, EDNS0,
//! truncation over UDP, TSIG, and AXFR (IXFR answered AXFR-style, RFC 1995 4).
//!
//! Never panics on input: every request-derived value is checked, and failures to encode
//! become SERVFAIL.

use std::iter;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TSIG, TsigError, make_tsig_record};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType, TSigResponseContext, TSigner};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::{debug, warn};

use super::settings::Secondary;
use crate::zone::Zones;

/// Largest UDP response we send (DNS Flag Day 2020 recommendation).
pub const UDP_PAYLOAD_MAX: u16 = 1232;
/// Target size of one AXFR message over TCP.
const AXFR_MESSAGE_TARGET: usize = 16 * 1024;
/// Room kept free in a UDP response for a TSIG record.
const TSIG_RESERVE: usize = 160;

/// Who may transfer zones: source IPs (secondaries without TSIG) and TSIG keys.
#[derive(Clone, Default)]
pub struct TransferPolicy {
    by_ip: Vec<IpAddr>,
    keys: Vec<TSigner>,
}

impl TransferPolicy {
    pub fn new(secondaries: &[Secondary]) -> Self {
        let mut p = TransferPolicy::default();
        for s in secondaries {
            match &s.tsig {
                Some(k) => p.keys.push(k.clone()),
                None => p.by_ip.push(s.address.ip()),
            }
        }
        p
    }
}

/// Result of checking a request's TSIG record.
enum Tsig {
    /// The request carried none.
    Absent,
    /// Valid: sign the response with this context.
    Valid {
        signer: TSigner,
        request_mac: Vec<u8>,
    },
    /// Invalid: answer NOTAUTH with this (unsigned or error) TSIG.
    Rejected(TSigResponseContext),
}

/// The RequestHandler serving the zones in the `ArcSwap`.
#[derive(Clone)]
pub struct Authority {
    zones: Arc<ArcSwap<Zones>>,
    policy: Arc<TransferPolicy>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn servfail_info(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// Encodes response sections without TSIG (for size checks and as TSIG input).
fn encode(
    request: &Request,
    metadata: Metadata,
    edns: Option<&Edns>,
    answers: &[Record],
    authorities: &[Record],
    additionals: &[Record],
) -> Result<Vec<u8>, NetError> {
    let mut buf = Vec::with_capacity(512);
    let mut enc = BinEncoder::new(&mut buf);
    MessageResponseBuilder::new(&request.queries, edns)
        .build(
            metadata,
            answers.iter(),
            authorities.iter(),
            iter::empty(),
            additionals.iter(),
        )
        .destructive_emit(&mut enc)?;
    Ok(buf)
}

impl Authority {
    pub fn new(zones: Arc<ArcSwap<Zones>>, policy: TransferPolicy) -> Self {
        Authority {
            zones,
            policy: Arc::new(policy),
        }
    }

    fn check_tsig(&self, request: &Request, now: u64) -> Tsig {
        let Some(tsig) = request.signature.as_deref() else {
            return Tsig::Absent;
        };
        let id = request.metadata.id;
        let Some(signer) = self
            .policy
            .keys
            .iter()
            .find(|k| k.signer_name() == &tsig.name && k.algorithm() == &tsig.data.algorithm)
        else {
            warn!(src = %request.src(), key = %tsig.name, "tsig key unknown");
            return Tsig::Rejected(TSigResponseContext::unknown_key(id, now, tsig.name.clone()));
        };
        match signer.verify_message_byte(request.as_slice(), None, true) {
            Err(e) => {
                warn!(src = %request.src(), key = %tsig.name, err = %e, "tsig signature invalid");
                Tsig::Rejected(TSigResponseContext::bad_signature(id, now, signer.clone()))
            }
            Ok((_, _, range)) if !range.contains(&now) => {
                warn!(src = %request.src(), key = %tsig.name, "tsig time outside fudge");
                Tsig::Rejected(TSigResponseContext::new(
                    id,
                    now,
                    signer.clone(),
                    tsig.data.mac.clone(),
                    Some(TsigError::BadTime),
                ))
            }
            Ok(_) => Tsig::Valid {
                signer: signer.clone(),
                request_mac: tsig.data.mac.clone(),
            },
        }
    }

    /// Sends one response, truncating over UDP and signing with TSIG when asked.
    #[allow(clippy::too_many_arguments)] // the sections of one DNS message
    async fn send<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: &mut R,
        mut metadata: Metadata,
        edns: Option<&Edns>,
        answers: &[Record],
        authorities: &[Record],
        additionals: &[Record],
        tsig: Option<TSigResponseContext>,
    ) -> Result<ResponseInfo, NetError> {
        let limit = match request.protocol() {
            Protocol::Udp => {
                let client = request.edns.as_ref().map_or(512, |e| e.max_payload());
                usize::from(client.clamp(512, UDP_PAYLOAD_MAX))
            }
            _ => usize::from(u16::MAX),
        };
        let reserve = if tsig.is_some() { TSIG_RESERVE } else { 0 };
        let mut bytes = encode(request, metadata, edns, answers, authorities, additionals)?;
        let (answers, authorities, additionals) = if bytes.len() + reserve > limit {
            // Too big for UDP: header, question and OPT only, with TC set; the client retries
            // over TCP (RFC 7766).
            metadata.truncation = true;
            bytes = encode(request, metadata, edns, &[], &[], &[])?;
            (&[][..], &[][..], &[][..])
        } else {
            (answers, authorities, additionals)
        };
        let mut response = MessageResponseBuilder::new(&request.queries, edns).build(
            metadata,
            answers.iter(),
            authorities.iter(),
            iter::empty(),
            additionals.iter(),
        );
        if let Some(ctx) = tsig {
            response.set_signature(ctx.sign(&bytes)?);
        }
        handle.send_response(response).await
    }

    async fn send_error<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: &mut R,
        edns: Option<&Edns>,
        code: ResponseCode,
        tsig: Option<TSigResponseContext>,
    ) -> Result<ResponseInfo, NetError> {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = code;
        self.send(request, handle, metadata, edns, &[], &[], &[], tsig)
            .await
    }

    async fn respond<R: ResponseHandler>(
        &self,
        zones: &Zones,
        request: &Request,
        mut handle: R,
    ) -> Result<ResponseInfo, NetError> {
        let now = unix_now();
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let edns = request.edns.as_ref().map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(UDP_PAYLOAD_MAX);
            e.set_dnssec_ok(dnssec_ok);
            e.set_version(0);
            e
        });
        let edns = edns.as_ref();
        let h = &mut handle;

        let tsig = self.check_tsig(request, now);
        let response_tsig = |tsig: &Tsig| match tsig {
            Tsig::Valid {
                signer,
                request_mac,
            } => Some(TSigResponseContext::new(
                request.metadata.id,
                now,
                signer.clone(),
                request_mac.clone(),
                None,
            )),
            _ => None,
        };
        if let Tsig::Rejected(ctx) = tsig {
            return self
                .send_error(request, h, edns, ResponseCode::NotAuth, Some(ctx))
                .await;
        }
        if request.metadata.message_type != MessageType::Query {
            return self
                .send_error(request, h, edns, ResponseCode::FormErr, None)
                .await;
        }
        if request.metadata.op_code != OpCode::Query {
            return self
                .send_error(request, h, edns, ResponseCode::NotImp, response_tsig(&tsig))
                .await;
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return self
                .send_error(request, h, edns, ResponseCode::BADVERS, None)
                .await;
        }
        let [query] = request.queries.queries() else {
            return self
                .send_error(request, h, edns, ResponseCode::FormErr, None)
                .await;
        };
        let qname = Name::from(query.name().clone());
        let qtype = query.query_type();
        if query.query_class() != DNSClass::IN {
            return self
                .send_error(
                    request,
                    h,
                    edns,
                    ResponseCode::Refused,
                    response_tsig(&tsig),
                )
                .await;
        }

        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            let allowed = match &tsig {
                Tsig::Valid { .. } => true,
                _ => self.policy.by_ip.contains(&request.src().ip()),
            };
            if !allowed {
                warn!(src = %request.src(), zone = %qname, "zone transfer refused");
                return self
                    .send_error(request, h, edns, ResponseCode::Refused, None)
                    .await;
            }
            let Some(zone) = zones.get(&qname) else {
                return self
                    .send_error(
                        request,
                        h,
                        edns,
                        ResponseCode::NotAuth,
                        response_tsig(&tsig),
                    )
                    .await;
            };
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.authoritative = true;
            if request.protocol() == Protocol::Udp {
                // RFC 1995 2: over UDP answer with the current SOA only (client then uses TCP);
                // AXFR is TCP only (RFC 5936 4.2).
                if qtype == RecordType::AXFR {
                    return self
                        .send_error(request, h, edns, ResponseCode::Refused, None)
                        .await;
                }
                let soa = zone.soa().map(|s| s.records.clone()).unwrap_or_default();
                return self
                    .send(
                        request,
                        h,
                        metadata,
                        edns,
                        &soa,
                        &[],
                        &[],
                        response_tsig(&tsig),
                    )
                    .await;
            }
            debug!(src = %request.src(), zone = %qname, serial = zone.serial(), "zone transfer");
            let signing = match tsig {
                Tsig::Valid {
                    signer,
                    request_mac,
                } => Some((signer, request_mac)),
                _ => None,
            };
            return self
                .transfer(
                    request,
                    h,
                    metadata,
                    edns,
                    zone.axfr_records(),
                    signing,
                    now,
                )
                .await;
        }

        let Some(zone) = zones.find(&qname) else {
            return self
                .send_error(
                    request,
                    h,
                    edns,
                    ResponseCode::Refused,
                    response_tsig(&tsig),
                )
                .await;
        };
        let answer = zone.lookup(&qname, qtype, dnssec_ok);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = answer.rcode;
        metadata.authoritative = answer.rcode != ResponseCode::Refused;
        self.send(
            request,
            h,
            metadata,
            edns,
            &answer.answers,
            &answer.authorities,
            &answer.additionals,
            response_tsig(&tsig),
        )
        .await
    }

    /// Sends the zone in as many TCP messages as needed, each TSIG-signed when the request was
    /// (RFC 8945 5.3.1: later messages chain the previous MAC and sign timers only).
    #[allow(clippy::too_many_arguments)] // one transfer's parameters
    async fn transfer<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: &mut R,
        metadata: Metadata,
        edns: Option<&Edns>,
        records: Vec<Record>,
        signing: Option<(TSigner, Vec<u8>)>,
        now: u64,
    ) -> Result<ResponseInfo, NetError> {
        let mut chunks: Vec<&[Record]> = Vec::new();
        let mut start = 0;
        let mut size = 0;
        for (i, r) in records.iter().enumerate() {
            let mut buf = Vec::new();
            let mut enc = BinEncoder::new(&mut buf);
            r.emit(&mut enc)?;
            if size + buf.len() > AXFR_MESSAGE_TARGET && i > start {
                chunks.push(&records[start..i]);
                start = i;
                size = 0;
            }
            size += buf.len();
        }
        chunks.push(&records[start..]);

        let mut previous_mac: Option<Vec<u8>> = None;
        let mut info = None;
        for chunk in chunks {
            // EDNS only in the first message; it is harmless either way.
            let e = if previous_mac.is_none() { edns } else { None };
            let bytes = encode(request, metadata, e, chunk, &[], &[])?;
            let mut response = MessageResponseBuilder::new(&request.queries, e).build(
                metadata,
                chunk.iter(),
                iter::empty(),
                iter::empty(),
                iter::empty(),
            );
            if let Some((signer, request_mac)) = &signing {
                let record = match &previous_mac {
                    None => TSigResponseContext::new(
                        request.metadata.id,
                        now,
                        signer.clone(),
                        request_mac.clone(),
                        None,
                    )
                    .sign(&bytes)?,
                    Some(prev) => {
                        let mut tbs = Vec::with_capacity(bytes.len() + prev.len() + 10);
                        tbs.extend((prev.len() as u16).to_be_bytes());
                        tbs.extend(prev);
                        tbs.extend(&bytes);
                        tbs.extend(&now.to_be_bytes()[2..]); // 48-bit time signed
                        tbs.extend(signer.fudge().to_be_bytes());
                        let mac = signer
                            .sign(&tbs)
                            .map_err(|e| NetError::from(e.to_string()))?;
                        Box::new(make_tsig_record(
                            signer.signer_name().clone(),
                            TSIG::new(
                                signer.algorithm().clone(),
                                now,
                                signer.fudge(),
                                mac,
                                request.metadata.id,
                                None,
                                Vec::new(),
                            ),
                        ))
                    }
                };
                previous_mac = Some(record.data.mac.clone());
                response.set_signature(record);
            } else {
                previous_mac = Some(Vec::new());
            }
            info = Some(handle.send_response(response).await?);
        }
        info.ok_or_else(|| NetError::from("empty zone transfer"))
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

    fn authority() -> &'static Authority {
        static A: OnceLock<Authority> = OnceLock::new();
        A.get_or_init(|| {
            let origin = Name::from_ascii("example.com.").unwrap();
            let data = ZoneData::parse(ZONE, Path::new("fuzz.zone"), &origin).unwrap();
            let alg = crate::zone::DnssecAlgorithm::EcdsaP256Sha256;
            let der = keys::generate_pkcs8(alg).unwrap();
            let key = ZoneKey::from_pkcs8(&origin, alg, &der, Path::new("mem")).unwrap();
            let settings = DnssecSettings {
                nsec3: true,
                ..DnssecSettings::default()
            };
            let (zone, _) = build_signed_zone(&data, &key, None, unix_now(), &settings).unwrap();
            let zones = Arc::new(ArcSwap::from_pointee(Zones::new().with(zone)));
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

    fn handle(bytes: Vec<u8>, tcp: bool) -> Result<Vec<Vec<u8>>, String> {
        let protocol = if tcp { Protocol::Tcp } else { Protocol::Udp };
        let Ok(request) = Request::from_bytes(bytes, "127.0.0.1:5353".parse().unwrap(), protocol)
        else {
            return Ok(Vec::new()); // the server answers undecodable packets itself (FORMERR)
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let capture = Capture::default();
        let done = rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(2),
                authority().handle_request::<_, TokioTime>(&request, capture.clone()),
            )
            .await
        });
        if done.is_err() {
            return Err("no answer within 2 s".into());
        }
        let sent = capture.0.lock().map_err(|e| e.to_string())?.clone();
        if sent.is_empty() {
            return Err("no response sent".into());
        }
        for r in &sent {
            let m = Message::from_vec(r).map_err(|e| format!("unparsable response: {e}"))?;
            if m.metadata.id != request.metadata.id {
                return Err("response id differs".into());
            }
            if !tcp && r.len() > 1232 {
                return Err(format!("udp response of {} bytes", r.len()));
            }
        }
        Ok(sent)
    }

    #[test]
    fn seeds_are_answered() {
        for s in seeds() {
            let r = handle(s.clone(), true).unwrap();
            assert!(!r.is_empty());
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
            seed in 0usize..14,
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
