//! The request handler: one snapshot of the zones per request, authoritative answers, EDNS0,
//! truncation over UDP, TSIG, and AXFR (IXFR answered AXFR-style, RFC 1995 4).
//!
//! Never panics on input: every request-derived value is checked, and failures to encode
//! become SERVFAIL.

use std::borrow::Cow;
use std::iter;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hickory_proto::ProtoError;
use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TSIG, TsigError, make_tsig_record};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType, TSigResponseContext, TSigner};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use tracing::{debug, warn};

use super::settings::Secondary;
use super::wire;
use crate::zone::{SignedZone, Zones};

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

/// One response message: header, sections borrowed from the zone where possible, and the TSIG
/// context to sign it with.
struct Message<'z> {
    metadata: Metadata,
    answers: Vec<Cow<'z, Record>>,
    authorities: Vec<Cow<'z, Record>>,
    additionals: Vec<Cow<'z, Record>>,
    tsig: Option<TSigResponseContext>,
    /// The encoding depends on nothing but the request bytes (ID aside) and the zones: no
    /// TSIG, no source address check. Such UDP answers may be reused (see `super::cache`).
    cacheable: bool,
}

impl Message<'_> {
    fn error(request: &Request, code: ResponseCode, tsig: Option<TSigResponseContext>) -> Self {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = code;
        Message {
            metadata,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            tsig,
            cacheable: false,
        }
    }
}

/// What to answer to one request: one message, or a zone transfer (TCP only).
enum Reply<'z> {
    Message(Message<'z>),
    Transfer {
        metadata: Metadata,
        zone: &'z SignedZone,
        signing: Option<(TSigner, Vec<u8>)>,
    },
}

/// What [`Authority::answer_udp`] made of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UdpAnswer {
    /// Send nothing.
    Nothing,
    /// Send the response.
    Send,
    /// Send the response; it may be reused for the same request bytes with another ID while
    /// the same zones are served.
    Reusable,
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

fn records<'a>(v: &'a [Cow<'_, Record>]) -> impl Iterator<Item = &'a Record> + Send + 'a {
    v.iter().map(|r| r.as_ref())
}

/// The response's EDNS (present iff the request had EDNS).
fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|e| {
        let mut r = Edns::new();
        r.set_max_payload(UDP_PAYLOAD_MAX);
        r.set_dnssec_ok(e.flags().dnssec_ok);
        r.set_version(0);
        r
    })
}

/// Encodes response sections without TSIG (for size checks and as TSIG input) into `buf`
/// (cleared first), with no size limit.
#[allow(clippy::too_many_arguments)] // the sections of one DNS message
fn encode_parts<'a>(
    buf: &mut Vec<u8>,
    request: &Request,
    metadata: Metadata,
    edns: Option<&Edns>,
    answers: impl Iterator<Item = &'a Record> + Send + 'a,
    authorities: impl Iterator<Item = &'a Record> + Send + 'a,
    additionals: impl Iterator<Item = &'a Record> + Send + 'a,
) -> Result<(), ProtoError> {
    buf.clear();
    let mut enc = BinEncoder::new(buf);
    MessageResponseBuilder::new(&request.queries, edns)
        .build(metadata, answers, authorities, iter::empty(), additionals)
        .destructive_emit(&mut enc)?;
    Ok(())
}

/// Encodes a response exactly as hickory-server's UDP `ResponseHandle` does: at most the
/// response EDNS payload size (512 without EDNS), and a bare SERVFAIL header if it cannot be
/// encoded.
fn emit_like_hickory<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    let id = response.metadata().id;
    let max = response.edns().map_or(512, |e| e.max_payload());
    out.clear();
    let mut enc = BinEncoder::new(out);
    enc.set_max_size(max);
    let Err(error) = response.destructive_emit(&mut enc) else {
        return Ok(());
    };
    tracing::error!(%error, "error encoding message");
    out.clear();
    let mut enc = BinEncoder::new(out);
    enc.set_max_size(512);
    let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
    metadata.response_code = ResponseCode::ServFail;
    Header {
        metadata,
        counts: HeaderCounts::default(),
    }
    .emit(&mut enc)
}

/// The source addresses hickory-server refuses to answer (port 0, unspecified, broadcast).
pub(super) fn answerable(src: SocketAddr) -> bool {
    src.port() != 0
        && match src.ip() {
            IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_broadcast(),
            IpAddr::V6(v6) => !v6.is_unspecified(),
        }
}

/// The response to `request` as hickory-server sends it: `sections` (answers, authorities,
/// additionals), or, when their encoding plus room for a TSIG exceeds `limit`, header,
/// question and OPT only with TC set (the client retries over TCP, RFC 7766); signed with
/// `tsig` when given. `scratch` receives the unsigned encoding (the TSIG input).
fn build_response<'q, 'a>(
    request: &'q Request,
    edns: Option<&'q Edns>,
    mut metadata: Metadata,
    sections: [&'a [Cow<'a, Record>]; 3],
    tsig: Option<TSigResponseContext>,
    limit: usize,
    scratch: &mut Vec<u8>,
) -> Result<
    MessageResponse<
        'q,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    ProtoError,
> {
    let reserve = if tsig.is_some() { TSIG_RESERVE } else { 0 };
    let [answers, authorities, additionals] = sections;
    encode_parts(
        scratch,
        request,
        metadata,
        edns,
        records(answers),
        records(authorities),
        records(additionals),
    )?;
    let sections = if scratch.len() + reserve > limit {
        metadata.truncation = true;
        encode_parts(
            scratch,
            request,
            metadata,
            edns,
            iter::empty(),
            iter::empty(),
            iter::empty(),
        )?;
        [&[][..]; 3]
    } else {
        sections
    };
    let mut response = MessageResponseBuilder::new(&request.queries, edns).build(
        metadata,
        records(sections[0]),
        records(sections[1]),
        iter::empty(),
        records(sections[2]),
    );
    if let Some(ctx) = tsig {
        response.set_signature(ctx.sign(scratch)?);
    }
    Ok(response)
}

/// The UDP size limit for `request`: its EDNS payload size clamped to 512..=1232, 512 without
/// EDNS.
fn udp_limit(request: &Request) -> usize {
    let client = request.edns.as_ref().map_or(512, |e| e.max_payload());
    usize::from(client.clamp(512, UDP_PAYLOAD_MAX))
}

/// Encodes `m` for UDP into `out`: with [`write_udp`] in the common case (no TSIG, one
/// question), otherwise as hickory-server's UDP path does (see [`build_response`]).
fn encode_udp(
    request: &Request,
    m: Message<'_>,
    out: &mut Vec<u8>,
    rdata: Option<&mut wire::RdataCache>,
) -> Result<(), ProtoError> {
    if m.tsig.is_none() && request.queries.len() == 1 {
        return write_udp(request, m, out, rdata);
    }
    let edns = response_edns(request);
    let mut scratch = Vec::new();
    let response = build_response(
        request,
        edns.as_ref(),
        m.metadata,
        [&m.answers, &m.authorities, &m.additionals],
        m.tsig,
        udp_limit(request),
        &mut scratch,
    )?;
    emit_like_hickory(response, out)
}

/// Writes `m` (no TSIG, one question) with [`wire`]: the same message as [`encode_udp`]'s
/// hickory encoding, compressed differently (see [`wire`]); header, question and OPT only,
/// with TC set, when it exceeds the client's payload size.
fn write_udp(
    request: &Request,
    m: Message<'_>,
    out: &mut Vec<u8>,
    rdata: Option<&mut wire::RdataCache>,
) -> Result<(), ProtoError> {
    let Message {
        mut metadata,
        answers,
        authorities,
        additionals,
        ..
    } = m;
    let opt = request.edns.as_ref().map(|e| wire::Opt {
        max_payload: UDP_PAYLOAD_MAX,
        dnssec_ok: e.flags().dnssec_ok,
    });
    let limit = udp_limit(request);
    let question = request.queries.as_bytes();
    let sections = [&answers[..], &authorities[..], &additionals[..]];
    if wire::write_response(out, metadata, question, sections, opt, limit, rdata)? {
        return Ok(());
    }
    metadata.truncation = true;
    // Header, question (at most 259 bytes) and OPT always fit in 512.
    wire::write_response(out, metadata, question, [&[]; 3], opt, usize::MAX, None).map(|_| ())
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

    /// Decides the answer to `request` from one snapshot of the zones: transport independent
    /// except that zone transfers are TCP only.
    fn reply<'z>(&self, zones: &'z Zones, request: &Request, now: u64) -> Reply<'z> {
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
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
        let error = |code, tsig| Reply::Message(Message::error(request, code, tsig));
        if let Tsig::Rejected(ctx) = tsig {
            return error(ResponseCode::NotAuth, Some(ctx));
        }
        if request.metadata.message_type != MessageType::Query {
            return error(ResponseCode::FormErr, None);
        }
        if request.metadata.op_code != OpCode::Query {
            return error(ResponseCode::NotImp, response_tsig(&tsig));
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return error(ResponseCode::BADVERS, None);
        }
        let [query] = request.queries.queries() else {
            return error(ResponseCode::FormErr, None);
        };
        let qname: &Name = query.name(); // lowercase already
        let qtype = query.query_type();
        if query.query_class() != DNSClass::IN {
            return error(ResponseCode::Refused, response_tsig(&tsig));
        }

        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            let allowed = match &tsig {
                Tsig::Valid { .. } => true,
                _ => self.policy.by_ip.contains(&request.src().ip()),
            };
            if !allowed {
                warn!(src = %request.src(), zone = %qname, "zone transfer refused");
                return error(ResponseCode::Refused, None);
            }
            let Some(zone) = zones.get(qname) else {
                return error(ResponseCode::NotAuth, response_tsig(&tsig));
            };
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.authoritative = true;
            if request.protocol() == Protocol::Udp {
                // RFC 1995 2: over UDP answer with the current SOA only (client then uses TCP);
                // AXFR is TCP only (RFC 5936 4.2).
                if qtype == RecordType::AXFR {
                    return error(ResponseCode::Refused, None);
                }
                let soa = zone
                    .soa()
                    .map(|s| s.records.iter().map(Cow::Borrowed).collect())
                    .unwrap_or_default();
                return Reply::Message(Message {
                    metadata,
                    answers: soa,
                    authorities: Vec::new(),
                    additionals: Vec::new(),
                    tsig: response_tsig(&tsig),
                    cacheable: false,
                });
            }
            debug!(src = %request.src(), zone = %qname, serial = zone.serial(), "zone transfer");
            let signing = match tsig {
                Tsig::Valid {
                    signer,
                    request_mac,
                } => Some((signer, request_mac)),
                _ => None,
            };
            return Reply::Transfer {
                metadata,
                zone,
                signing,
            };
        }

        let Some(zone) = zones.find(qname) else {
            return error(ResponseCode::Refused, response_tsig(&tsig));
        };
        let answer = zone.lookup_ref(qname, qtype, dnssec_ok);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = answer.rcode;
        metadata.authoritative = answer.rcode != ResponseCode::Refused;
        Reply::Message(Message {
            metadata,
            answers: answer.answers,
            authorities: answer.authorities,
            additionals: answer.additionals,
            cacheable: matches!(tsig, Tsig::Absent),
            tsig: response_tsig(&tsig),
        })
    }

    /// The zones being served now (one snapshot per request).
    pub(super) fn snapshot(&self) -> arc_swap::Guard<Arc<Zones>> {
        self.zones.load()
    }

    /// Answers one UDP datagram from `src` with `zones` into `out` (the message
    /// hickory-server's UDP path sent for it, see [`write_udp`]). Nothing is to be sent for a datagram shorter
    /// than a header, a response, or a response that could not be encoded.
    pub(super) fn answer_udp(
        &self,
        zones: &Zones,
        packet: &[u8],
        src: SocketAddr,
        out: &mut Vec<u8>,
        rdata: Option<&mut wire::RdataCache>,
    ) -> UdpAnswer {
        let mut decoder = BinDecoder::new(packet);
        let Ok(header) = Header::read(&mut decoder) else {
            return UdpAnswer::Nothing;
        };
        let request = match Request::from_bytes(packet.to_vec(), src, Protocol::Udp) {
            Ok(r) => r,
            Err(e) => {
                // Undecodable after the header: FORMERR with no question and no EDNS.
                debug!(src = %src, err = %e, "undecodable udp request");
                let mut metadata = Metadata::response_from_request(&header.metadata);
                metadata.response_code = ResponseCode::FormErr;
                out.clear();
                let h = Header {
                    metadata,
                    counts: HeaderCounts::default(),
                };
                return match h.emit(&mut BinEncoder::new(out)) {
                    Ok(()) => UdpAnswer::Send,
                    Err(_) => UdpAnswer::Nothing,
                };
            }
        };
        if request.metadata.message_type == MessageType::Response {
            return UdpAnswer::Nothing; // no reflection
        }
        let now = unix_now();
        let (result, cacheable) = match self.reply(zones, &request, now) {
            Reply::Message(m) => {
                let cacheable = m.cacheable;
                (encode_udp(&request, m, out, rdata), cacheable)
            }
            Reply::Transfer { .. } => (Err(ProtoError::from("zone transfer over udp")), false),
        };
        match result {
            Ok(()) if cacheable => UdpAnswer::Reusable,
            Ok(()) => UdpAnswer::Send,
            Err(e) => {
                debug!(src = %src, err = %e, "failed to encode dns response");
                UdpAnswer::Nothing
            }
        }
    }

    /// Sends one response, truncating over UDP and signing with TSIG when asked.
    async fn send<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: &mut R,
        m: Message<'_>,
        edns: Option<&Edns>,
    ) -> Result<ResponseInfo, NetError> {
        let limit = match request.protocol() {
            Protocol::Udp => udp_limit(request),
            _ => usize::from(u16::MAX),
        };
        let mut scratch = Vec::new();
        let response = build_response(
            request,
            edns,
            m.metadata,
            [&m.answers, &m.authorities, &m.additionals],
            m.tsig,
            limit,
            &mut scratch,
        )?;
        handle.send_response(response).await
    }

    async fn respond<R: ResponseHandler>(
        &self,
        zones: &Zones,
        request: &Request,
        mut handle: R,
    ) -> Result<ResponseInfo, NetError> {
        let now = unix_now();
        let edns = response_edns(request);
        let edns = edns.as_ref();
        match self.reply(zones, request, now) {
            Reply::Message(m) => self.send(request, &mut handle, m, edns).await,
            Reply::Transfer {
                metadata,
                zone,
                signing,
            } => {
                self.transfer(
                    request,
                    &mut handle,
                    metadata,
                    edns,
                    zone.axfr_records(),
                    signing,
                    now,
                )
                .await
            }
        }
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
            let mut bytes = Vec::with_capacity(AXFR_MESSAGE_TARGET);
            encode_parts(
                &mut bytes,
                request,
                metadata,
                e,
                chunk.iter(),
                iter::empty(),
                iter::empty(),
            )?;
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

    /// `text` signed for example.com. (NSEC3) with a new key.
    fn signed(text: &str) -> Zones {
        let origin = Name::from_ascii("example.com.").unwrap();
        let data = ZoneData::parse(text, Path::new("fuzz.zone"), &origin).unwrap();
        let alg = crate::zone::DnssecAlgorithm::EcdsaP256Sha256;
        let der = keys::generate_pkcs8(alg).unwrap();
        let key = ZoneKey::from_pkcs8(&origin, alg, &der, Path::new("mem")).unwrap();
        let settings = DnssecSettings {
            nsec3: true,
            ..DnssecSettings::default()
        };
        let (zone, _) = build_signed_zone(&data, &key, None, unix_now(), &settings).unwrap();
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
        // With an RDATA cache of this snapshot: the second answer below reuses its entries.
        let mut rdata = wire::RdataCache::new();
        rdata.follow(&zones);
        let answer = authority().answer_udp(&zones, &bytes, src(), &mut out, Some(&mut rdata));
        let sent = answer != UdpAnswer::Nothing;
        if answer == UdpAnswer::Reusable {
            // What the response cache relies on: the same bytes with another ID, from another
            // address, get the same response but for the ID.
            let mut again = bytes.clone();
            again[0] ^= 0xff;
            let other: SocketAddr = "192.0.2.7:5300".parse().unwrap();
            let mut out2 = Vec::new();
            let a2 = authority().answer_udp(&zones, &again, other, &mut out2, Some(&mut rdata));
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
            let task = tokio::spawn(super::super::udp::serve(server, authority().clone(), 16));
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
            let task = tokio::spawn(super::super::udp::serve(server, authority, 16));
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
