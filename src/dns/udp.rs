//! The UDP query loop: receive a batch → decode → answer → encode once → send the batch, on
//! tasks that own their buffers, instead of hickory-server's task-per-packet UDP path with
//! replies through a channel. Answers come from [`Authority::answer_udp`], the same decision
//! logic as the hickory `RequestHandler` that still serves TCP. Each task keeps a
//! [`ResponseCache`] of the answers that may be reused.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::UdpSocket;
use tracing::{debug, warn};

use super::DnsError;
use super::cache::ResponseCache;
use super::handler::{Authority, UdpAnswer, answerable};
use super::mmsg;
use super::rrl::{RateLimiter, Verdict, truncated_reply};

/// Pause after a receive error other than "nothing to read".
const RECEIVE_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);
/// Largest datagram read (as hickory-server's UDP path: longer ones are cut to this size).
const RECEIVE_BUFFER: usize = 4096;

/// Query tasks for a UDP socket that is alone at its address: one per core the process may run
/// on, at most 4 (they share the socket; more tasks than cores only add wake-ups).
pub(super) fn tasks_per_socket() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// UDP sockets bound per listening address, each with its own query task: on Linux one per
/// core, at least 8 and at most 64; elsewhere 1, since `SO_REUSEPORT` does not spread datagrams
/// there. The kernel hashes each client's address and port to one of the sockets, so a flooding
/// client fills one socket's receive buffer while other clients' queries wait in the others
/// (as knotd's `udp-workers` and nsd's `reuseport`). More sockets than cores isolate better: in
/// `benches/flood.sh`'s ANY flood on 2 cores, a legitimate client got 93 % of its UDP answers
/// with 2 sockets, 97.8 % with 4 and 98.7 % with 8 (one socket shared by all: 86 %); the
/// daemon's RSS in those runs was 17.4 MiB with 2 sockets and 19.0 MiB with 8.
pub(super) fn sockets_per_address() -> usize {
    if cfg!(target_os = "linux") {
        std::thread::available_parallelism().map_or(8, |n| n.get().clamp(8, 64))
    } else {
        1
    }
}

/// A non-blocking UDP socket bound to `addr`, with `SO_REUSEPORT` on Linux (see
/// [`sockets_per_address`]) and close-on-exec, as `UdpSocket::bind` makes it otherwise.
pub(super) fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    #[cfg(target_os = "linux")]
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Answers datagrams on `socket` until it fails unrecoverably (the caller cancels it on
/// shutdown), keeping up to `cache` reusable responses. Receives and sends in batches (see
/// [`mmsg`]). Never stops on a bad packet or a failed send.
pub(super) async fn serve(
    socket: Arc<UdpSocket>,
    authority: Authority,
    cache: usize,
    limiter: Arc<Mutex<RateLimiter>>,
) -> Result<(), DnsError> {
    let mut cache = ResponseCache::new(cache);
    // The batch's receive buffers are slices of one zeroed block: only the pages datagrams
    // land in are written (32 vectors cloned from one wrote zeros to every page of each, 1 MiB
    // over the 8 sockets of a small machine before the first query).
    let mut block = vec![0u8; RECEIVE_BUFFER * mmsg::BATCH];
    let mut bufs: Vec<&mut [u8]> = block.chunks_mut(RECEIVE_BUFFER).collect();
    let mut got = vec![(0, None); mmsg::BATCH];
    let mut outs: Vec<Vec<u8>> = (0..mmsg::BATCH)
        .map(|_| Vec::with_capacity(usize::from(super::handler::UDP_PAYLOAD_MAX)))
        .collect();
    let mut dests = vec![SocketAddr::from(([0, 0, 0, 0], 0)); mmsg::BATCH];
    let mut verdicts = vec![None; mmsg::BATCH];
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
        // The limit first, for the whole batch under one lock: a query over it costs no
        // lookup (dropped, or every n-th gets an empty TC answer built from the query).
        // Datagrams that cannot be answered are skipped, and responses are never answered (no
        // reflection), nor counted against the sender.
        {
            let mut limiter = limiter.lock().unwrap_or_else(PoisonError::into_inner);
            // Read under the lock: no other task has counted a later instant.
            let now = std::time::Instant::now();
            for ((buf, &(len, src)), verdict) in bufs.iter().zip(&got).zip(&mut verdicts).take(n) {
                *verdict = match src.filter(|s| answerable(*s)) {
                    None => {
                        debug!(src = ?src, "address can not be responded to");
                        None
                    }
                    Some(_) if buf[..len].get(2).is_some_and(|flags| flags & 0x80 != 0) => None,
                    Some(src) => Some(limiter.check(src.ip(), now)),
                };
            }
        }
        let zones = authority.snapshot();
        cache.follow(&zones);
        let mut replies = 0;
        for ((buf, &(len, src)), verdict) in bufs.iter().zip(&got).zip(&verdicts).take(n) {
            let (Some(src), Some(verdict)) = (src, *verdict) else {
                continue;
            };
            let packet = &buf[..len];
            let out = &mut outs[replies];
            let send = match verdict {
                Verdict::Drop => false,
                Verdict::Slip => truncated_reply(packet, out),
                Verdict::Send => {
                    let hash = cache.hash(packet);
                    cache.answer(hash, packet, out)
                        || match authority.answer_udp(&zones, packet, src, out) {
                            UdpAnswer::Nothing => false,
                            UdpAnswer::Send => true,
                            UdpAnswer::Reusable => {
                                cache.insert(hash, packet, out);
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

#[cfg(test)]
mod tests {
    use super::super::DnsSockets;

    /// Every UDP socket of an address shares the port the TCP listener got, and a second server
    /// on that address fails (TCP is bound without reuse) instead of sharing the UDP queries.
    #[tokio::test]
    async fn sockets_share_one_address_and_a_second_server_is_refused() {
        let s = DnsSockets::bind(
            &["127.0.0.1:0".parse().unwrap()],
            super::sockets_per_address(),
        )
        .await
        .unwrap();
        let addr = s.tcp[0].local_addr().unwrap();
        assert_eq!(s.udp.len(), super::sockets_per_address());
        for u in &s.udp {
            assert_eq!(u.local_addr().unwrap(), addr);
        }
        let e = DnsSockets::bind(&[addr], 1).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
        // Nor can a plain UDP socket (without SO_REUSEPORT) take the port.
        assert!(std::net::UdpSocket::bind(addr).is_err());
        // As many UDP sockets as configured (`dns.udp_sockets`), at least one.
        for (asked, got) in [(1, 1), (3, 3), (0, 1)] {
            let s = DnsSockets::bind(&["127.0.0.1:0".parse().unwrap()], asked)
                .await
                .unwrap();
            assert_eq!(s.udp.len(), got);
        }
    }
}
