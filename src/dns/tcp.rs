//! DNS over TCP (RFC 7766): our own accept loop with a cap on connections, a cap per source
//! address and an idle timeout (section 6.2), answering through the same
//! [`Authority`] as hickory's `RequestHandler` (queries and zone transfers). A flood of idle
//! connections can neither take every descriptor of the process nor every slot.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::handler::Authority;
use crate::conn_limit::{PerSource, SourceSlot};

/// Limits of the TCP listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    /// Connections open at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections from one address; further ones are closed at once.
    pub max_per_source: usize,
    /// A connection that sends no complete request for this long is closed.
    pub idle: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 256,
            max_per_source: 32,
            idle: Duration::from_secs(10),
        }
    }
}

/// Serves DNS over TCP on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    authority: Authority,
    limits: TcpLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_source: PerSource = Arc::default();
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    if let Some(suppressed) = crate::logfield::throttle("dns tcp accept failed") {
                        tracing::warn!(err = %e, suppressed, "dns tcp accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = SourceSlot::take(&per_source, peer.ip(), limits.max_per_source) else {
            tracing::debug!(%peer, "dns tcp connection refused: too many from this address");
            continue;
        };
        let (authority, stop) = (authority.clone(), shutdown.clone());
        conns.spawn(async move {
            let _held = (permit, slot);
            tokio::select! {
                _ = connection(stream, peer, authority, limits.idle) => {}
                _ = stop.cancelled() => {}
            }
        });
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// Answers the requests of one connection in order until it closes or idles.
async fn connection(stream: TcpStream, peer: SocketAddr, authority: Authority, idle: Duration) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let Ok(len) = u16::try_from(msg.len()) else {
                continue; // over 64 KiB: cannot be framed (answers are limited below that)
            };
            let frame = [&len.to_be_bytes()[..], &msg].concat();
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(idle, rd.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(idle, rd.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        match Request::from_bytes(buf.clone(), peer, Protocol::Tcp) {
            Ok(request) => {
                authority
                    .handle_request::<_, TokioTime>(&request, Responder(tx.clone()))
                    .await;
            }
            Err(_) => {
                if let Some(r) = formerr(&buf)
                    && tx.send(r).await.is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// FORMERR for an undecodable request with a readable header (ID kept, counts zero).
fn formerr(request: &[u8]) -> Option<Vec<u8>> {
    let header = request.get(..12)?;
    let mut r = header.to_vec();
    r[2] = (r[2] & 0x78) | 0x80; // QR, opcode kept, AA/TC/RD cleared
    r[3] = 1; // RCODE FORMERR
    r[4..12].fill(0);
    Some(r)
}

/// Hands encoded responses to the connection's writer, in order.
#[derive(Clone)]
struct Responder(mpsc::Sender<Vec<u8>>);

#[async_trait::async_trait]
impl ResponseHandler for Responder {
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
            .send(buf)
            .await
            .map_err(|_| NetError::from("connection closed"))?;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_requests_get_formerr_with_their_id() {
        let r = formerr(&[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff]).unwrap();
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[2] & 0x80, 0x80);
        assert_eq!(r[3] & 0x0f, 1);
        assert!(formerr(&[1, 2, 3]).is_none());
    }
}
