//! Answers one request from one zone snapshot: the authoritative lookup, refusals, the
//! UDP path and the hickory TCP path.

use crate::dns::wire;
use crate::zone::Zones;
use hickory_proto::ProtoError;
use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType, TSigResponseContext};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use std::net::SocketAddr;
use tracing::{debug, warn};

use super::*;

impl Authority {
    /// Decides the answer to `request` from one snapshot of the zones: transport independent
    /// except that zone transfers are TCP only.
    pub(crate) fn reply<'z>(&self, zones: &'z Zones, request: &Request, now: u64) -> Reply<'z> {
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let tsig = self.check_tsig(request, now);
        let response_tsig = |tsig: &Tsig| match tsig {
            Tsig::Valid {
                signer,
                request_mac,
            } => Some(ResponseTsig::Context(TSigResponseContext::new(
                request.metadata.id,
                now,
                signer.clone(),
                request_mac.clone(),
                None,
            ))),
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
        if request.edns.as_ref().is_some_and(malformed_cookie) {
            return error(ResponseCode::FormErr, None);
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
                if let Some(suppressed) = crate::logfield::throttle("zone transfer refused") {
                    warn!(src = %request.src(), zone = %crate::logfield::untrusted(qname), suppressed, "zone transfer refused");
                }
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
                    .map(|s| s.refs(false).collect())
                    .unwrap_or_default();
                return Reply::Message(Message {
                    metadata,
                    answers: soa,
                    authorities: Vec::new(),
                    additionals: Vec::new(),
                    tsig: response_tsig(&tsig),
                    cacheable: false,
                    synthesized: 0,
                });
            }
            debug!(src = %request.src(), zone = %qname, serial = zone.serial(), "zone transfer");
            // IXFR: the secondary's serial is in the authority section (RFC 1995 3). Up to date:
            // the SOA alone; a version still journaled: the difference; else the whole zone.
            let from = if qtype == RecordType::IXFR {
                let theirs = request.authorities.iter().find_map(|r| match &r.data {
                    hickory_proto::rr::RData::SOA(s) => Some(s.serial),
                    _ => None,
                });
                match theirs {
                    Some(s) if s == zone.serial() => {
                        let soa = zone
                            .soa()
                            .map(|s| s.refs(false).collect())
                            .unwrap_or_default();
                        return Reply::Message(Message {
                            metadata,
                            answers: soa,
                            authorities: Vec::new(),
                            additionals: Vec::new(),
                            tsig: response_tsig(&tsig),
                            cacheable: false,
                            synthesized: 0,
                        });
                    }
                    Some(s) => self.journal.ixfr(zone, s),
                    None => None,
                }
            } else {
                None
            };
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
                from,
                signing,
            };
        }

        let cacheable = matches!(tsig, Tsig::Absent);
        Reply::Message(Self::answer_query(
            zones,
            &request.metadata,
            qname,
            qtype,
            dnssec_ok,
            request.protocol() == Protocol::Udp,
            response_tsig(&tsig),
            cacheable,
        ))
    }

    /// The answer to an ordinary query (class IN, not a transfer) for `qname` (lowercase) and
    /// `qtype`, once the request itself has passed every check: the part of [`Self::reply`]
    /// that [`PlainQuery`]s go to directly.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn answer_query<'z>(
        zones: &'z Zones,
        request: &Metadata,
        qname: &Name,
        qtype: RecordType,
        dnssec_ok: bool,
        udp: bool,
        tsig: Option<ResponseTsig>,
        cacheable: bool,
    ) -> Message<'z> {
        let mut metadata = Metadata::response_from_request(request);
        let Some(zone) = zones.find(qname) else {
            metadata.response_code = ResponseCode::Refused;
            return Message::empty(metadata, tsig, false);
        };
        if qtype == RecordType::RRSIG && udp {
            // Every signature of a name is a 20x amplifier: over UDP say "truncated" at once,
            // so that a real client asks again over TCP (RFC 7766).
            metadata.authoritative = true;
            metadata.truncation = true;
            return Message::empty(metadata, tsig, cacheable);
        }
        let answer = zone.lookup_ref(qname, qtype, dnssec_ok);
        metadata.response_code = answer.rcode;
        metadata.authoritative = answer.rcode != ResponseCode::Refused && !answer.referral;
        Message {
            metadata,
            answers: answer.answers,
            authorities: answer.authorities,
            additionals: answer.additionals,
            cacheable,
            tsig,
            synthesized: answer.synthesized,
        }
    }

    /// Answers one UDP datagram from `src` with `zones` into `out` (the message
    /// hickory-server's UDP path sent for it, see [`write_udp`]). Nothing is to be sent for a datagram shorter
    /// than a header, a response, or a response that could not be encoded.
    pub(crate) fn answer_udp(
        &self,
        zones: &Zones,
        packet: &[u8],
        src: SocketAddr,
        out: &mut Vec<u8>,
    ) -> UdpAnswer {
        if let Some(q) = PlainQuery::parse(packet) {
            let dnssec_ok = q.edns.is_some_and(|(_, d)| d);
            let m = Self::answer_query(
                zones,
                &q.metadata,
                &q.name,
                q.qtype,
                dnssec_ok,
                true,
                None,
                true,
            );
            let cacheable = m.cacheable;
            let opt = q.edns.map(|_| wire::Opt {
                max_payload: UDP_PAYLOAD_MAX,
                dnssec_ok,
            });
            let limit = q.udp_limit();
            return match write_plain(m, opt, limit, q.question, Some(&q.name), out) {
                Ok(()) if cacheable => UdpAnswer::Reusable,
                Ok(()) => UdpAnswer::Send,
                Err(e) => {
                    debug!(src = %src, err = %e, "failed to encode dns response");
                    UdpAnswer::Nothing
                }
            };
        }
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
                (encode_udp(&request, m, out), cacheable)
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
    pub(crate) async fn send<R: ResponseHandler>(
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
        let [answers, authorities, additionals] = m.sections(request)?;
        let mut scratch = Vec::new();
        let response = build_response(
            request,
            edns,
            m.metadata,
            [&answers, &authorities, &additionals],
            m.tsig,
            limit,
            &mut scratch,
        )?;
        handle.send_response(response).await
    }

    pub(crate) async fn respond<R: ResponseHandler>(
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
                from,
                signing,
            } => {
                let records = match from {
                    Some(changes) => {
                        debug!(src = %request.src(), zone = %zone.origin(), to = zone.serial(), "incremental zone transfer");
                        changes
                    }
                    None => zone.axfr_records(),
                };
                self.transfer(request, &mut handle, metadata, edns, records, signing, now)
                    .await
            }
        }
    }
}

/// RFC 7873 5.2.2: a COOKIE option must be a client cookie (8 bytes) with an optional server
/// cookie (8 to 32 bytes), and there must be at most one.
fn malformed_cookie(edns: &Edns) -> bool {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    let cookies = edns.options().get_all(EdnsCode::Cookie);
    cookies.len() > 1
        || cookies.iter().any(|o| {
            let n = match o {
                EdnsOption::Unknown(_, data) => data.len(),
                other => usize::from(other.len()),
            };
            !(n == 8 || (16..=40).contains(&n))
        })
}
