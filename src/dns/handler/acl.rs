//! Who may transfer zones (source addresses and TSIG keys) and the TSIG check of a
//! request. Decides nothing about answers.

use crate::dns::settings::Secondary;
use hickory_proto::rr::rdata::tsig::TsigError;
use hickory_proto::rr::{TSigResponseContext, TSigner};
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
    Rejected(TSigResponseContext),
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
}
