//! Datagrams in batches: on Linux up to [`BATCH`] per system call (`recvmmsg`/`sendmmsg`, as
//! knot and other authoritative servers do), elsewhere one per call. Both calls are
//! non-blocking and go through tokio's readiness tracking: `WouldBlock` means "await
//! `readable()`/`writable()` and try again".
//!
//! The `unsafe` code here: two system calls whose headers point at buffers of the calling
//! frame, and the conversion of socket addresses from and to their C form.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Datagrams per system call (and per round of the query loop).
#[cfg(target_os = "linux")]
pub(super) const BATCH: usize = 32;
#[cfg(not(target_os = "linux"))]
pub(super) const BATCH: usize = 1;

/// Receives up to `min(bufs.len(), got.len(), BATCH)` datagrams: datagram `i` goes to
/// `bufs[i]` (cut to its length, as `recv_from` does) and its length and source to `got[i]`
/// (no source if the kernel gave an address that is not IPv4 or IPv6). Returns how many.
pub(super) fn recv<B: AsMut<[u8]>>(
    socket: &UdpSocket,
    bufs: &mut [B],
    got: &mut [(usize, Option<SocketAddr>)],
) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // A short batch means the receive queue was empty when the call returned (the kernel
        // also stops early on a receive error other than EAGAIN, which these unconnected
        // sockets without IP_RECVERR do not get): tokio is told `WouldBlock` so that it clears
        // the socket's readiness (as it does itself for a short TCP read), which saves the
        // empty call that would find that out. It clears only if no event came in since the
        // call began, and every datagram queued later raises a new one.
        let want = bufs.len().min(got.len()).min(BATCH);
        let mut short = 0;
        let r = socket.try_io(tokio::io::Interest::READABLE, || {
            let n = linux::recv(socket.as_raw_fd(), bufs, got)?;
            if n > 0 && n < want {
                short = n;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => Ok(short),
            r => r,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let (Some(buf), Some(slot)) = (bufs.first_mut(), got.first_mut()) else {
            return Ok(0);
        };
        let (len, src) = socket.try_recv_from(buf.as_mut())?;
        *slot = (len, Some(src));
        Ok(1)
    }
}

/// Sends `msgs[i]` to `to[i]`, in order, as many as one call manages (at most [`BATCH`]).
/// Returns how many were sent (at least one), or the error of the first.
pub(super) fn send(socket: &UdpSocket, msgs: &[Vec<u8>], to: &[SocketAddr]) -> io::Result<usize> {
    if msgs.is_empty() || to.is_empty() {
        return Ok(0);
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        socket.try_io(tokio::io::Interest::WRITABLE, || {
            linux::send(socket.as_raw_fd(), msgs, to)
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        socket.try_send_to(&msgs[0], to[0]).map(|_| 1)
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod linux {
    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::RawFd;
    use std::ptr;

    use super::BATCH;

    /// Headers of one call, pointing at the caller's buffers and at their own fields.
    struct Headers {
        names: [libc::sockaddr_storage; BATCH],
        iovs: [libc::iovec; BATCH],
        hdrs: [libc::mmsghdr; BATCH],
    }

    impl Headers {
        fn zeroed() -> Headers {
            // SAFETY: all three are plain C structs (integers, arrays and raw pointers) for
            // which all-zero bytes are a valid value (null pointers, zero lengths).
            unsafe { zeroed() }
        }

        /// Points header `i` at its name storage (`namelen` bytes of it used) and its iovec.
        fn point(&mut self, i: usize, namelen: libc::socklen_t) {
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = ptr::from_mut(&mut self.names[i]).cast();
            hdr.msg_namelen = namelen;
            hdr.msg_iov = ptr::from_mut(&mut self.iovs[i]);
            hdr.msg_iovlen = 1;
        }
    }

    pub(super) fn recv<B: AsMut<[u8]>>(
        fd: RawFd,
        bufs: &mut [B],
        got: &mut [(usize, Option<SocketAddr>)],
    ) -> io::Result<usize> {
        let n = bufs.len().min(got.len()).min(BATCH);
        if n == 0 {
            return Ok(0);
        }
        let mut h = Headers::zeroed();
        for (i, buf) in bufs.iter_mut().take(n).enumerate() {
            let buf = buf.as_mut();
            h.iovs[i] = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            h.point(i, socklen::<libc::sockaddr_storage>());
        }
        // SAFETY: the first `n` headers point at `n` live, exclusively borrowed buffers
        // (through one iovec each, with the buffer's true length) and at name storage of
        // the size given in `msg_namelen`; the kernel writes within those bounds only and
        // the pointers are not used after this call. `n <= BATCH` fits in c_uint.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                h.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT as _, // c_int on glibc, c_uint on musl
                ptr::null_mut(),
            )
        };
        let count = usize::try_from(r).map_err(|_| io::Error::last_os_error())?;
        for (i, slot) in got.iter_mut().take(count.min(n)).enumerate() {
            let len = (h.hdrs[i].msg_len as usize).min(bufs[i].as_mut().len());
            *slot = (len, from_raw(&h.names[i], h.hdrs[i].msg_hdr.msg_namelen));
        }
        Ok(count.min(n))
    }

    pub(super) fn send(fd: RawFd, msgs: &[Vec<u8>], to: &[SocketAddr]) -> io::Result<usize> {
        let n = msgs.len().min(to.len()).min(BATCH);
        let mut h = Headers::zeroed();
        for i in 0..n {
            let namelen = to_raw(to[i], &mut h.names[i]);
            h.iovs[i] = libc::iovec {
                // sendmmsg only reads through this pointer.
                iov_base: msgs[i].as_ptr().cast_mut().cast(),
                iov_len: msgs[i].len(),
            };
            h.point(i, namelen);
        }
        // SAFETY: the first `n` headers point at `n` live messages (read only, true
        // lengths) and at initialized addresses of the given lengths; nothing is kept
        // after the call. `n <= BATCH` fits in c_uint.
        let r = unsafe {
            libc::sendmmsg(
                fd,
                h.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT as _, // c_int on glibc, c_uint on musl
            )
        };
        let sent = usize::try_from(r).map_err(|_| io::Error::last_os_error())?;
        Ok(sent.min(n))
    }

    fn socklen<T>() -> libc::socklen_t {
        // The sockaddr types are at most 128 bytes.
        size_of::<T>() as libc::socklen_t
    }

    /// Writes `addr` into `storage` in its C form; returns its length.
    fn to_raw(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned at least as strictly as
                // every sockaddr type (that is its purpose).
                unsafe { ptr::write(ptr::from_mut(storage).cast::<libc::sockaddr_in>(), sin) };
                socklen::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                // SAFETY: all-zero is a valid sockaddr_in6.
                let mut sin6: libc::sockaddr_in6 = unsafe { zeroed() };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_scope_id = a.scope_id();
                // SAFETY: as for IPv4.
                unsafe { ptr::write(ptr::from_mut(storage).cast::<libc::sockaddr_in6>(), sin6) };
                socklen::<libc::sockaddr_in6>()
            }
        }
    }

    /// The address the kernel wrote into `storage`, if IPv4 or IPv6.
    fn from_raw(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
        match libc::c_int::from(storage.ss_family) {
            libc::AF_INET if len >= socklen::<libc::sockaddr_in>() => {
                // SAFETY: the kernel wrote a sockaddr_in here (family and length say so);
                // storage is suitably sized and aligned.
                let sin = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 if len >= socklen::<libc::sockaddr_in6>() => {
                // SAFETY: as for IPv4, with a sockaddr_in6.
                let sin6 = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn addresses_round_trip() {
            for a in [
                "127.0.0.1:53",
                "192.0.2.200:65535",
                "[::1]:5353",
                "[2001:db8::1%7]:1",
            ] {
                let a: SocketAddr = a.parse().unwrap();
                // SAFETY: all-zero is a valid sockaddr_storage.
                let mut s: libc::sockaddr_storage = unsafe { zeroed() };
                let len = to_raw(a, &mut s);
                assert_eq!(from_raw(&s, len), Some(a));
                assert_eq!(from_raw(&s, len - 1), None, "short length is rejected");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several datagrams are received in one batch with their source, and a batch of replies
    /// reaches the client: over IPv4 and IPv6 loopback.
    #[tokio::test]
    async fn batches_carry_sources_and_replies() {
        for host in ["127.0.0.1", "[::1]"] {
            round_trip(host).await;
        }
    }

    /// After a short batch (which clears the socket's readiness) a datagram sent later still
    /// wakes the receiver: none is left waiting in the queue.
    #[tokio::test]
    async fn a_datagram_after_a_short_batch_is_not_missed() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut bufs = vec![vec![0u8; 16]; BATCH];
        let mut got = vec![(0, None); BATCH];
        for round in 0..20u8 {
            client.send_to(&[round; 3], addr).await.unwrap();
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                loop {
                    server.readable().await.unwrap();
                    match recv(&server, &mut bufs, &mut got) {
                        Ok(n) => return n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("round {round}: the datagram never woke the receiver"));
            assert_eq!(n, 1);
            assert_eq!(&bufs[0][..got[0].0], &[round; 3]);
        }
    }

    async fn round_trip(host: &str) {
        let server = UdpSocket::bind(format!("{host}:0")).await.unwrap();
        let addr = server.local_addr().unwrap();
        let a = UdpSocket::bind(format!("{host}:0")).await.unwrap();
        for i in 0..3u8 {
            a.send_to(&[i; 5], addr).await.unwrap();
        }
        let mut bufs = vec![vec![0u8; 4]; BATCH.max(4)];
        let mut got = vec![(0, None); BATCH.max(4)];
        let mut received = Vec::new();
        while received.len() < 3 {
            server.readable().await.unwrap();
            match recv(&server, &mut bufs, &mut got) {
                Ok(n) => {
                    for i in 0..n {
                        received.push((bufs[i][..got[i].0].to_vec(), got[i].1));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        let src = Some(a.local_addr().unwrap());
        // Cut to the buffer's 4 bytes, as recv_from does.
        assert_eq!(
            received,
            [(vec![0; 4], src), (vec![1; 4], src), (vec![2; 4], src)]
        );

        let msgs = [b"one".to_vec(), b"two".to_vec()];
        let to = [a.local_addr().unwrap(), a.local_addr().unwrap()];
        let mut sent = 0;
        while sent < 2 {
            match send(&server, &msgs[sent..], &to[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => server.writable().await.unwrap(),
                Err(e) => panic!("{e}"),
            }
        }
        let mut buf = [0u8; 16];
        let (n, from) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"one"[..], addr));
        let (n, _) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"two");
    }
}
