//! The UDP query loop: `recv_from` → decode → answer → encode once → `send_to`, on tasks that
//! own their buffers, instead of hickory-server's task-per-packet UDP path with replies through
//! a channel. Answers come from [`Authority::answer_udp`], the same decision logic as the
//! hickory `RequestHandler` that still serves TCP.

use std::io;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tracing::{debug, warn};

use super::DnsError;
use super::handler::{Authority, answerable};

/// Largest datagram read (as hickory-server's UDP path: longer ones are cut to this size).
const RECEIVE_BUFFER: usize = 4096;

/// Query tasks per UDP socket: one per core the process may run on, at most 4 (one socket is
/// already shared by them; more tasks than cores only add wake-ups).
pub(super) fn tasks_per_socket() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Answers datagrams on `socket` until it fails unrecoverably (the caller cancels it on
/// shutdown). Never stops on a bad packet or a failed send.
pub(super) async fn serve(socket: Arc<UdpSocket>, authority: Authority) -> Result<(), DnsError> {
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    let mut out = Vec::with_capacity(usize::from(super::handler::UDP_PAYLOAD_MAX));
    loop {
        let (len, src) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                warn!(err = %e, "error receiving message on udp socket");
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotConnected | io::ErrorKind::ConnectionAborted
                ) {
                    return Err(DnsError::Server {
                        reason: format!("udp socket: {e}"),
                    });
                }
                continue;
            }
        };
        if !answerable(src) {
            warn!(%src, "address can not be responded to");
            continue;
        }
        if authority.answer_udp(&buf[..len], src, &mut out)
            && let Err(e) = socket.send_to(&out, src).await
        {
            debug!(%src, err = %e, "failed to send dns response");
        }
    }
}
