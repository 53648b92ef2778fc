//! Zone transfers (AXFR, and IXFR from the journal): ACL and TSIG checked, the records
//! split into messages in order.

use hickory_proto::op::{Edns, Metadata};
use hickory_proto::rr::rdata::tsig::{TSIG, make_tsig_record};
use hickory_proto::rr::{Record, TSigResponseContext, TSigner};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use std::iter;

use super::*;

impl Authority {
    /// Sends the zone in as many TCP messages as needed, each TSIG-signed when the request was
    /// (RFC 8945 5.3.1: later messages chain the previous MAC and sign timers only).
    #[allow(clippy::too_many_arguments)] // one transfer's parameters
    pub(crate) async fn transfer<R: ResponseHandler>(
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
