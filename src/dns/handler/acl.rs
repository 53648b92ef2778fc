//! Who may transfer zones (source addresses and TSIG keys) and the TSIG check of a
//! request. Decides nothing about answers.

use crate::dns::settings::Secondary;
use hickory_proto::ProtoError;
use hickory_proto::rr::rdata::tsig::{TSIG, TsigAlgorithm, TsigError, make_tsig_record};
use hickory_proto::rr::{Name, Record, TSigResponseContext, TSigner};
use hickory_server::server::Request;
use std::net::IpAddr;
use tracing::warn;

use super::*;

/// Who may transfer zones: source IPs (secondaries without TSIG) and TSIG keys.
#[derive(Clone, Default)]
pub struct TransferPolicy {
    pub(crate) by_ip: Vec<IpAddr>,
    pub(crate) keys: Vec<TSigner>,
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
pub(crate) enum Tsig {
    /// The request carried none.
    Absent,
    /// Valid: sign the response with this context.
    Valid {
        signer: TSigner,
        request_mac: Vec<u8>,
    },
    /// Invalid: answer NOTAUTH with this (unsigned or error) TSIG.
    Rejected(ResponseTsig),
}

/// The TSIG of a response: signed by a known key, or an unsigned error record.
pub(crate) enum ResponseTsig {
    Context(TSigResponseContext),
    /// BADKEY (RFC 8945 5.3.2): unsigned, naming the key and the algorithm of the request (a
    /// client that asked with hmac-sha512 is told about hmac-sha512).
    BadKey {
        key_name: Box<Name>,
        algorithm: TsigAlgorithm,
        request_id: u16,
        time: u64,
    },
}

impl ResponseTsig {
    /// The TSIG record for the encoded response.
    pub(crate) fn sign(self, response: &[u8]) -> Result<Box<Record<TSIG>>, ProtoError> {
        match self {
            ResponseTsig::Context(ctx) => ctx.sign(response),
            ResponseTsig::BadKey {
                key_name,
                algorithm,
                request_id,
                time,
            } => Ok(Box::new(make_tsig_record(
                *key_name,
                TSIG::new(
                    algorithm,
                    time,
                    300,
                    Vec::new(),
                    request_id,
                    Some(TsigError::BadKey),
                    Vec::new(),
                ),
            ))),
        }
    }
}

impl Authority {
    pub(crate) fn check_tsig(&self, request: &Request, now: u64) -> Tsig {
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
            if let Some(suppressed) = crate::logfield::throttle("tsig key unknown") {
                warn!(src = %request.src(), key = %crate::logfield::untrusted(&tsig.name), suppressed, "tsig key unknown");
            }
            return Tsig::Rejected(ResponseTsig::BadKey {
                key_name: Box::new(tsig.name.clone()),
                algorithm: tsig.data.algorithm.clone(),
                request_id: id,
                time: now,
            });
        };
        match signer.verify_message_byte(request.as_slice(), None, true) {
            Err(e) => {
                if let Some(suppressed) = crate::logfield::throttle("tsig signature invalid") {
                    warn!(src = %request.src(), key = %crate::logfield::untrusted(&tsig.name), err = %e, suppressed, "tsig signature invalid");
                }
                Tsig::Rejected(ResponseTsig::Context(TSigResponseContext::bad_signature(
                    id,
                    now,
                    signer.clone(),
                )))
            }
            Ok((_, _, range)) if !range.contains(&now) => {
                if let Some(suppressed) = crate::logfield::throttle("tsig time outside fudge") {
                    warn!(src = %request.src(), key = %crate::logfield::untrusted(&tsig.name), suppressed, "tsig time outside fudge");
                }
                Tsig::Rejected(ResponseTsig::Context(TSigResponseContext::new(
                    id,
                    now,
                    signer.clone(),
                    tsig.data.mac.clone(),
                    Some(TsigError::BadTime),
                )))
            }
            Ok(_) => Tsig::Valid {
                signer: signer.clone(),
                request_mac: tsig.data.mac.clone(),
            },
        }
    }
}
