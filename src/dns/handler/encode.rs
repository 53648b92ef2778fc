//! Response encoding: EDNS, truncation to the client's limit, TSIG signing of the
//! reply, the UDP fast path writer. Pure over a built answer; must not look up zones.

use crate::dns::wire;
use crate::zone::{Rr, SignedZone};
use hickory_proto::ProtoError;
use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{Name, Record, TSigner};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::server::{Request, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use std::iter;

use super::*;

/// Target size of one AXFR message over TCP.
pub(crate) const AXFR_MESSAGE_TARGET: usize = 16 * 1024;

/// Room kept free in a UDP response for a TSIG record.
pub(crate) const TSIG_RESERVE: usize = 160;

/// One response message: header, sections borrowed from the zone where possible, and the TSIG
/// context to sign it with.
pub(crate) struct Message<'z> {
    pub(crate) metadata: Metadata,
    pub(crate) answers: Vec<Rr<'z>>,
    pub(crate) authorities: Vec<Rr<'z>>,
    pub(crate) additionals: Vec<Rr<'z>>,
    pub(crate) tsig: Option<ResponseTsig>,
    /// The encoding depends on nothing but the request bytes (ID aside) and the zones: no
    /// TSIG, no source address check. Such UDP answers may be reused (see `super::cache`).
    pub(crate) cacheable: bool,
    /// The first this many answers are to be owned by the query name (synthesized from a
    /// wildcard; see `AnswerRef::synthesized`).
    pub(crate) synthesized: usize,
}

impl Message<'_> {
    /// The sections (answers, authorities, additionals) as hickory records, for hickory's
    /// encoder: the zone's records decoded, the synthesized answers owned by the query name.
    pub(crate) fn sections(&self, request: &Request) -> Result<[Vec<Record>; 3], ProtoError> {
        let own = |v: &[Rr<'_>]| v.iter().map(Rr::to_record).collect::<Result<Vec<_>, _>>();
        let mut answers = own(&self.answers)?;
        if self.synthesized > 0
            && let Some(q) = request.queries.queries().first()
        {
            for r in answers.iter_mut().take(self.synthesized) {
                r.name = Name::from(q.name().clone());
            }
        }
        Ok([answers, own(&self.authorities)?, own(&self.additionals)?])
    }

    pub(crate) fn error(request: &Request, code: ResponseCode, tsig: Option<ResponseTsig>) -> Self {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = code;
        Message::empty(metadata, tsig, false)
    }

    /// A message without records.
    pub(crate) fn empty(metadata: Metadata, tsig: Option<ResponseTsig>, cacheable: bool) -> Self {
        Message {
            metadata,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            tsig,
            cacheable,
            synthesized: 0,
        }
    }
}

/// What to answer to one request: one message, or a zone transfer (TCP only).
pub(crate) enum Reply<'z> {
    Message(Message<'z>),
    Transfer {
        metadata: Metadata,
        zone: &'z SignedZone,
        /// IXFR: the changes since the version the secondary has (from the journal).
        from: Option<Vec<Record>>,
        signing: Option<(TSigner, Vec<u8>)>,
    },
}

/// What [`Authority::answer_udp`] made of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UdpAnswer {
    /// Send nothing.
    Nothing,
    /// Send the response.
    Send,
    /// Send the response; it may be reused for the same request bytes with another ID while
    /// the same zones are served.
    Reusable,
}

pub(crate) fn servfail_info(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

pub(crate) fn records(v: &[Record]) -> impl Iterator<Item = &Record> + Send + '_ {
    v.iter()
}

/// The response's EDNS (present iff the request had EDNS).
pub(crate) fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|e| {
        let mut r = Edns::new();
        r.set_max_payload(UDP_PAYLOAD_MAX);
        r.set_dnssec_ok(e.flags().dnssec_ok);
        r.set_version(0);
        if let Some(client) = client_cookie(request) {
            let mut cookie = client.to_vec();
            cookie.extend(server_cookie(client, request.src().ip()));
            r.options_mut()
                .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                    10, cookie,
                ));
        }
        r
    })
}

/// The client cookie of a well-formed COOKIE option (RFC 7873), if the request has one.
pub(crate) fn client_cookie(request: &Request) -> Option<&[u8]> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    match request.edns.as_ref()?.option(EdnsCode::Cookie)? {
        EdnsOption::Unknown(_, data) if data.len() == 8 || (16..=40).contains(&data.len()) => {
            Some(&data[..8])
        }
        _ => None,
    }
}

/// This server's cookie for a client cookie and address (RFC 7873 4.2): an HMAC over both
/// with a secret of this process, 16 bytes. A client that sends it back proves it received
/// our answer at that address; the same client gets the same cookie while the daemon runs.
fn server_cookie(client: &[u8], ip: std::net::IpAddr) -> [u8; 16] {
    static SECRET: std::sync::OnceLock<ring::hmac::Key> = std::sync::OnceLock::new();
    let key = SECRET.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"mxguard"))
    });
    let mut ctx = ring::hmac::Context::with_key(key);
    ctx.update(client);
    match ip {
        std::net::IpAddr::V4(a) => ctx.update(&a.octets()),
        std::net::IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    let tag = ctx.sign();
    let mut out = [0u8; 16];
    out.copy_from_slice(&tag.as_ref()[..16]);
    out
}

/// Encodes response sections without TSIG (for size checks and as TSIG input) into `buf`
/// (cleared first), with no size limit.
#[allow(clippy::too_many_arguments)] // the sections of one DNS message
pub(crate) fn encode_parts<'a>(
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
pub(crate) fn emit_like_hickory<'a>(
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

/// The response to `request` as hickory-server sends it: `sections` (answers, authorities,
/// additionals), or, when their encoding plus room for a TSIG exceeds `limit`, header,
/// question and OPT only with TC set (the client retries over TCP, RFC 7766); signed with
/// `tsig` when given. `scratch` receives the unsigned encoding (the TSIG input).
pub(crate) fn build_response<'q, 'a>(
    request: &'q Request,
    edns: Option<&'q Edns>,
    mut metadata: Metadata,
    sections: [&'a [Record]; 3],
    tsig: Option<ResponseTsig>,
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
pub(crate) fn udp_limit(request: &Request) -> usize {
    let client = request.edns.as_ref().map_or(512, |e| e.max_payload());
    usize::from(client.clamp(512, UDP_PAYLOAD_MAX))
}

/// Encodes `m` for UDP into `out`: with [`write_udp`] in the common case (no TSIG, one
/// question), otherwise as hickory-server's UDP path does (see [`build_response`]).
pub(crate) fn encode_udp(
    request: &Request,
    m: Message<'_>,
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    // The direct writer's OPT carries no options: a cookie goes the general way.
    if m.tsig.is_none() && request.queries.len() == 1 && client_cookie(request).is_none() {
        return write_udp(request, m, out);
    }
    let [answers, authorities, additionals] = m.sections(request)?;
    let edns = response_edns(request);
    let mut scratch = Vec::new();
    let response = build_response(
        request,
        edns.as_ref(),
        m.metadata,
        [&answers, &authorities, &additionals],
        m.tsig,
        udp_limit(request),
        &mut scratch,
    )?;
    emit_like_hickory(response, out)
}

/// Writes `m` (no TSIG, one question) with [`wire`]: the same message as [`encode_udp`]'s
/// hickory encoding, compressed differently (see [`wire`]); header, question and OPT only,
/// with TC set, when it exceeds the client's payload size.
pub(crate) fn write_udp(
    request: &Request,
    m: Message<'_>,
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    let opt = request.edns.as_ref().map(|e| wire::Opt {
        max_payload: UDP_PAYLOAD_MAX,
        dnssec_ok: e.flags().dnssec_ok,
    });
    let qname: Option<&Name> = request.queries.queries().first().map(|q| &**q.name());
    let question = request.queries.as_bytes();
    write_plain(m, opt, udp_limit(request), question, qname, out)
}

/// [`write_udp`] given what it takes from the request: the response's OPT, the client's size
/// limit, the question as sent and its (lowercase) name.
pub(crate) fn write_plain(
    m: Message<'_>,
    opt: Option<wire::Opt>,
    limit: usize,
    question: &[u8],
    qname: Option<&Name>,
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    let Message {
        mut metadata,
        answers,
        authorities,
        additionals,
        synthesized,
        ..
    } = m;
    let sections = [&answers[..], &authorities[..], &additionals[..]];
    let synthesized = qname.map(|n| (n, synthesized));
    if wire::write_response(out, metadata, question, sections, synthesized, opt, limit)? {
        return Ok(());
    }
    metadata.truncation = true;
    // Header, question (at most 259 bytes) and OPT always fit in 512.
    wire::write_response(out, metadata, question, [&[]; 3], None, opt, usize::MAX).map(|_| ())
}
