//! The UDP query loop: receive a batch → decode → answer → encode once → send the batch, on
//! tasks that own their buffers, instead of hickory-server's task-per-packet UDP path with
//! replies through a channel. Answers come from [`Authority::answer_udp`], the same decision
//! logic as the hickory `RequestHandler` that still serves TCP. Each task keeps a
//! [`ResponseCache`] of the answers that may be reused.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tracing::{debug, warn};

use super::DnsError;
use super::cache::ResponseCache;
use super::handler::{Authority, UdpAnswer, answerable};
use super::mmsg;
use super::rrl::{RateLimiter, Verdict, truncated_reply};
use super::wire::RdataCache;

/// Pause after a receive error other than "nothing to read".
const RECEIVE_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);
/// Largest datagram read (as hickory-server's UDP path: longer ones are cut to this size).
const RECEIVE_BUFFER: usize = 4096;

/// Query tasks per UDP socket: one per core the process may run on, at most 4 (one socket is
/// already shared by them; more tasks than cores only add wake-ups).
pub(super) fn tasks_per_socket() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Answers datagrams on `socket` until it fails unrecoverably (the caller cancels it on
/// shutdown), keeping up to `cache` reusable responses. Receives and sends in batches (see
/// [`mmsg`]). Never stops on a bad packet or a failed send.
pub(super) async fn serve(
    socket: Arc<UdpSocket>,
    authority: Authority,
    cache: usize,
    mut limiter: RateLimiter,
) -> Result<(), DnsError> {
    let mut cache = ResponseCache::new(cache);
    let mut rdata = RdataCache::new();
    let mut bufs = vec![vec![0u8; RECEIVE_BUFFER]; mmsg::BATCH];
    let mut got = vec![(0, None); mmsg::BATCH];
    let mut outs: Vec<Vec<u8>> = (0..mmsg::BATCH)
        .map(|_| Vec::with_capacity(usize::from(super::handler::UDP_PAYLOAD_MAX)))
        .collect();
    let mut dests = vec![SocketAddr::from(([0, 0, 0, 0], 0)); mmsg::BATCH];
    loop {
        if let Err(e) = socket.readable().await {
            return Err(DnsError::Server {
                reason: format!("udp socket: {e}"),
            });
        }
        let n = match mmsg::recv(&socket, &mut bufs, &mut got) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
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
                // Not a busy loop on an error that persists.
                tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                continue;
            }
        };
        let zones = authority.snapshot();
        cache.follow(&zones);
        rdata.follow(&zones);
        let mut replies = 0;
        let now = std::time::Instant::now();
        for (buf, &(len, src)) in bufs.iter().zip(&got).take(n) {
            let Some(src) = src.filter(|s| answerable(*s)) else {
                debug!(src = ?src, "address can not be responded to");
                continue;
            };
            let packet = &buf[..len];
            let out = &mut outs[replies];
            // Responses are never answered (no reflection), nor counted against the sender.
            if packet.get(2).is_some_and(|flags| flags & 0x80 != 0) {
                continue;
            }
            // The limit first: a query over it costs no lookup (dropped, or every n-th gets
            // an empty TC answer built from the query).
            let send = match limiter.check(src.ip(), now) {
                Verdict::Drop => false,
                Verdict::Slip => truncated_reply(packet, out),
                Verdict::Send => {
                    cache.answer(packet, out)
                        || match authority.answer_udp(&zones, packet, src, out, Some(&mut rdata)) {
                            UdpAnswer::Nothing => false,
                            UdpAnswer::Send => true,
                            UdpAnswer::Reusable => {
                                cache.insert(packet, out);
                                true
                            }
                        }
                }
            };
            if send {
                dests[replies] = src;
                replies += 1;
            }
        }
        drop(zones);
        send_all(&socket, &outs[..replies], &dests[..replies]).await;
    }
}

/// Sends `msgs[i]` to `to[i]`, skipping (and logging) a message the kernel refuses.
async fn send_all(socket: &UdpSocket, msgs: &[Vec<u8>], to: &[SocketAddr]) {
    let mut i = 0;
    while i < msgs.len() {
        match mmsg::send(socket, &msgs[i..], &to[i..]) {
            Ok(n) => i += n.max(1),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = socket.writable().await {
                    debug!(err = %e, "udp socket not writable: responses dropped");
                    return;
                }
            }
            Err(e) => {
                debug!(dest = %to[i], err = %e, "failed to send dns response");
                i += 1;
            }
        }
    }
}
