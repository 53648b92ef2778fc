//! The authoritative DNS server: queries, zone transfers and NOTIFY for the signed zones.
//!
//! Owns the sockets it is given, the wire protocol (EDNS0, truncation, TCP), the transfer policy
//! (secondaries by source address and/or TSIG), NOTIFY to secondaries and SOA queries to them,
//! and the IXFR [`journal`] of the zones' recent changes.
//! It only *reads* zones: the current [`Zones`] sit in an `ArcSwap`, each request takes one
//! snapshot, and the daemon replaces the whole set atomically ([`DnsServer::publish`]). Answers
//! come from the pure lookup in `crate::zone::signed`. Must not build, sign or persist zones,
//! and must not touch configuration, CLI or HTTP code.

mod cache;
mod handler;
pub mod journal;
mod mmsg;
pub mod notify;
mod rrl;
pub mod settings;
mod tcp;
mod udp;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use handler::{Authority, TransferPolicy};
pub use notify::{exchange, query, query_soa_serial, send_notify};
pub use settings::{Secondary, SecondarySettings};
pub(crate) use tcp::TcpLimits;

use crate::zone::Zones;

/// Reusable UDP responses kept per DNS address (shared out among its query tasks) unless
/// configured otherwise.
pub const DEFAULT_RESPONSE_CACHE: usize = 2048;
/// How long shutdown waits for in-flight work.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// An error of the DNS server or its client functions.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{path}: cannot read TSIG secret: {reason}")]
    Secret { path: PathBuf, reason: String },
    #[error("{key}: {reason}")]
    Settings { key: String, reason: String },
    #[error("dns server {server}: {reason}")]
    Query { server: SocketAddr, reason: String },
    #[error("dns server {server}: no answer within {timeout:?}")]
    Timeout {
        server: SocketAddr,
        timeout: Duration,
    },
    #[error("dns server stopped: {reason}")]
    Server { reason: String },
}

/// Most UDP sockets per address (`dns.udp_sockets`).
pub const MAX_UDP_SOCKETS: usize = 64;

/// UDP sockets per address unless `dns.udp_sockets` says otherwise (see
/// [`udp::sockets_per_address`]).
pub fn default_udp_sockets() -> usize {
    udp::sockets_per_address()
}

/// Sockets the server answers on, bound by the caller (port 0 is fine in tests).
#[derive(Debug, Default)]
pub struct DnsSockets {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
}

impl DnsSockets {
    /// Binds TCP and UDP on each address: `udp` UDP sockets (at least one; see
    /// [`default_udp_sockets`]) sharing the address with `SO_REUSEPORT` on Linux (the kernel
    /// spreads clients over them by address and port, so a flood from one source fills one
    /// socket's buffer, not everyone's). TCP is bound first and without reuse, so a second
    /// server on the same address fails instead of sharing its UDP queries.
    pub async fn bind(addrs: &[SocketAddr], udp: usize) -> std::io::Result<DnsSockets> {
        let mut s = DnsSockets::default();
        for a in addrs {
            let tcp = TcpListener::bind(a).await?;
            // Port 0: every UDP socket takes the port the TCP listener got.
            let a = tcp.local_addr()?;
            s.tcp.push(tcp);
            for _ in 0..udp.max(1) {
                s.udp.push(udp::bind(a)?);
            }
        }
        Ok(s)
    }
}

/// The server's view of the zones plus a wake-up for the NOTIFY task.
#[derive(Clone)]
pub struct DnsServer {
    zones: Arc<ArcSwap<Zones>>,
    /// Recent changes of the zones, for IXFR.
    journal: journal::Journal,
    changed: Arc<tokio::sync::Notify>,
    response_cache: usize,
    /// Response rate limit per client network and slip (see `rrl`).
    rate_limit: (u32, u32),
    /// Connection limits of the TCP listener.
    tcp_limits: tcp::TcpLimits,
}

impl DnsServer {
    pub fn new(zones: Arc<ArcSwap<Zones>>) -> Self {
        DnsServer {
            zones,
            journal: journal::Journal::default(),
            changed: Arc::new(tokio::sync::Notify::new()),
            response_cache: DEFAULT_RESPONSE_CACHE,
            rate_limit: (0, 0),
            tcp_limits: tcp::TcpLimits::default(),
        }
    }

    /// UDP response rate limiting: `rate` responses per second per client network (0: off),
    /// every `slip`-th limited response truncated.
    pub fn with_rate_limit(mut self, rate: u32, slip: u32) -> Self {
        self.rate_limit = (rate, slip);
        self
    }

    /// Connection limits of DNS over TCP (RFC 7766 6.2).
    pub(crate) fn with_tcp_limits(mut self, limits: TcpLimits) -> Self {
        self.tcp_limits = limits;
        self
    }

    /// Whether to keep the IXFR [`journal`] (on by default; a server that no secondary may
    /// transfer from needs none).
    pub fn with_journal(mut self, on: bool) -> Self {
        if !on {
            self.journal = journal::Journal::disabled();
        }
        self
    }

    /// Reusable UDP responses kept per DNS address, shared out among its query tasks (0:
    /// none); see `cache`.
    pub fn with_response_cache(mut self, entries: usize) -> Self {
        self.response_cache = entries;
        self
    }

    /// The shared zone set (the daemon may also `store` into it directly; NOTIFY then follows
    /// within [`notify::POLL_INTERVAL`]).
    pub fn zones(&self) -> &Arc<ArcSwap<Zones>> {
        &self.zones
    }

    /// Atomically replaces the served zones and wakes the NOTIFY task at once.
    pub fn publish(&self, zones: Zones) {
        self.journal.replaced(&self.zones.load(), &zones);
        self.zones.store(Arc::new(zones));
        self.changed.notify_one();
    }

    /// [`DnsServer::run`] on a runtime of its own, on threads of its own (`dns`, one per core),
    /// so that no other task of the process delays an answer: with 10,000 domains on one core,
    /// certificate and rollover passes on the shared runtime held queries back for 0.7 s for
    /// half a minute and up to 3.2 s at a time. The operating system shares the CPU between
    /// these threads and the rest in slices of milliseconds. `sockets` were bound on the
    /// calling runtime and are moved to the new one.
    pub async fn run_on_own_threads(
        &self,
        sockets: DnsSockets,
        secondaries: Vec<Secondary>,
        shutdown: CancellationToken,
    ) -> Result<(), DnsError> {
        let server_error = |reason: String| DnsError::Server { reason };
        let to_std = |e: std::io::Error| server_error(format!("moving a dns socket: {e}"));
        let udp = each(sockets.udp, UdpSocket::into_std).map_err(to_std)?;
        let tcp = each(sockets.tcp, TcpListener::into_std).map_err(to_std)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("dns")
            .enable_all()
            .build()
            .map_err(|e| server_error(format!("starting the dns runtime: {e}")))?;
        let (done, result) = tokio::sync::oneshot::channel();
        let server = self.clone();
        std::thread::Builder::new()
            .name("dns-main".into())
            .spawn(move || {
                let r = runtime.block_on(async move {
                    let sockets = DnsSockets {
                        udp: each(udp, UdpSocket::from_std)?,
                        tcp: each(tcp, TcpListener::from_std)?,
                    };
                    Ok::<_, std::io::Error>(server.run(sockets, secondaries, shutdown).await)
                });
                let r = r.unwrap_or_else(|e| Err(server_error(format!("dns socket: {e}"))));
                // Tasks still running (connections past the grace period) are dropped.
                runtime.shutdown_timeout(SHUTDOWN_GRACE);
                let _ = done.send(r);
            })
            .map_err(|e| server_error(format!("starting the dns thread: {e}")))?;
        result
            .await
            .unwrap_or_else(|_| Err(server_error("the dns thread ended without a result".into())))
    }

    /// Serves until `shutdown` is cancelled, sending NOTIFY to `secondaries` on serial changes.
    pub async fn run(
        &self,
        sockets: DnsSockets,
        secondaries: Vec<Secondary>,
        shutdown: CancellationToken,
    ) -> Result<(), DnsError> {
        let policy = TransferPolicy::new(&secondaries);
        let authority =
            Authority::new(self.zones.clone(), policy).with_journal(self.journal.clone());
        // UDP: our own query loops (see `udp`); TCP (queries, AXFR/IXFR): our accept loop with
        // connection caps (see `tcp`), answering through the same Authority.
        let udp_stop = CancellationToken::new();
        let mut udp_tasks = JoinSet::new();
        // One rate limiter for every query task, so a client network's rate is the same
        // whichever socket its queries reach.
        let (rate, slip) = self.rate_limit;
        let limiter = Arc::new(std::sync::Mutex::new(rrl::RateLimiter::new(rate, slip)));
        let addrs: Vec<_> = sockets.udp.iter().map(|s| s.local_addr().ok()).collect();
        for (i, s) in sockets.udp.into_iter().enumerate() {
            let addr = s.local_addr().ok();
            // A socket that shares its address with others (`SO_REUSEPORT`) gets one task; a
            // socket alone at its address gets a task per core. The address's query tasks
            // share its `response_cache` entries evenly.
            let sockets_here = addrs.iter().filter(|a| **a == addr).count();
            let tasks = match sockets_here {
                1 => udp::tasks_per_socket(),
                _ => 1,
            };
            let cache = self.response_cache.div_ceil(sockets_here * tasks);
            if !addrs[..i].contains(&addr) {
                tracing::info!(addr = ?addr, sockets = sockets_here, tasks_per_socket = tasks, "dns listening on udp");
            }
            let s = Arc::new(s);
            for _ in 0..tasks {
                let (s, a, stop) = (s.clone(), authority.clone(), udp_stop.clone());
                let limiter = limiter.clone();
                udp_tasks.spawn(async move {
                    stop.run_until_cancelled(udp::serve(s, a, cache, limiter))
                        .await
                        .unwrap_or(Ok(()))
                });
            }
        }
        let tcp_stop = CancellationToken::new();
        let mut tcp_tasks = JoinSet::new();
        for l in sockets.tcp {
            tracing::info!(addr = ?l.local_addr().ok(), "dns listening on tcp");
            tcp_tasks.spawn(tcp::serve(
                l,
                authority.clone(),
                self.tcp_limits,
                tcp_stop.clone(),
            ));
        }
        let notifier = tokio::spawn(notify::run_notifier(
            self.zones.clone(),
            self.changed.clone(),
            secondaries,
            shutdown.clone(),
        ));
        // Done when every TCP and UDP task is; an error of any of them is the result.
        let all = async {
            let tcp = async {
                while let Some(r) = tcp_tasks.join_next().await {
                    if let Err(e) = r {
                        return Err(DnsError::Server {
                            reason: format!("dns tcp task: {e}"),
                        });
                    }
                }
                Ok(())
            };
            let udp = async {
                let mut out = Ok(());
                while let Some(r) = udp_tasks.join_next().await {
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => out = Err(e),
                        Err(e) => {
                            return Err(DnsError::Server {
                                reason: format!("internal error in spawn: {e}"),
                            });
                        }
                    }
                }
                out
            };
            let (t, u) = tokio::join!(tcp, udp);
            t.and(u)
        };
        tokio::pin!(all);
        let result = tokio::select! {
            r = &mut all => r,
            _ = shutdown.cancelled() => {
                tcp_stop.cancel();
                udp_stop.cancel();
                match tokio::time::timeout(SHUTDOWN_GRACE, &mut all).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!("dns server did not stop within the grace period");
                        Ok(())
                    }
                }
            }
        };
        shutdown.cancel();
        if tokio::time::timeout(SHUTDOWN_GRACE, notifier)
            .await
            .is_err()
        {
            tracing::warn!("notify task did not stop within the grace period");
        }
        result
    }
}

/// `f` applied to every socket of `v` (moving sockets between runtimes), or the first error.
fn each<T, U>(v: Vec<T>, f: impl Fn(T) -> std::io::Result<U>) -> std::io::Result<Vec<U>> {
    v.into_iter().map(f).collect()
}

/// Prometheus text for the zones being served: per zone the SOA serial and when the current
/// signatures expire (they are replaced `dnssec.refresh` before that; an alert on this
/// timestamp coming near catches a daemon that stopped re-signing).
pub fn render_metrics(zones: &Zones) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let zones = zones.sorted();
    let mut family = |name: &str, help: &str, value: &dyn Fn(&crate::zone::SignedZone) -> u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for z in &zones {
            let origin = z.origin().to_ascii();
            let label = origin
                .strip_suffix('.')
                .unwrap_or(&origin)
                .to_ascii_lowercase();
            let label = crate::tlsrpt::metrics::escape(&label);
            let _ = writeln!(out, "{name}{{zone=\"{label}\"}} {}", value(z));
        }
    };
    family(
        "mxguard_zone_serial",
        "SOA serial of the zone mxguard serves.",
        &|z| u64::from(z.serial()),
    );
    family(
        "mxguard_zone_signatures_expire_timestamp_seconds",
        "When the zone's current RRSIGs expire (unix time).",
        &|z| u64::from(z.signing_state().expiration),
    );
    out
}

/// Serves `zones` on `sockets` until `shutdown` is cancelled; see [`DnsServer::run`].
pub async fn serve(
    sockets: DnsSockets,
    zones: Arc<ArcSwap<Zones>>,
    secondaries: Vec<Secondary>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    DnsServer::new(zones)
        .run(sockets, secondaries, shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DNS server answers while the runtime that started it cannot run anything (its only
    /// worker blocked, as by a long certificate pass), and stops when told to.
    #[test]
    fn answers_while_the_calling_runtime_is_blocked() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let server = DnsServer::new(Arc::new(ArcSwap::from_pointee(Zones::new())));
        let sockets = rt
            .block_on(DnsSockets::bind(&["127.0.0.1:0".parse().unwrap()], 1))
            .unwrap();
        let addr = sockets.tcp[0].local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let (waited, result) = rt.block_on(async move {
            let serving =
                tokio::spawn(
                    async move { server.run_on_own_threads(sockets, Vec::new(), stop).await },
                );
            tokio::task::yield_now().await; // the server moves to its threads
            let client = std::thread::spawn(move || {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                // ID 4711, one question: the root, SOA, IN (no zone: REFUSED).
                let query = [0x12, 0x67, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1];
                let start = std::time::Instant::now();
                let mut buf = [0u8; 512];
                while start.elapsed() < Duration::from_secs(3) {
                    s.send_to(&query, addr).unwrap();
                    if let Ok(n) = s.recv(&mut buf)
                        && n >= 12
                        && buf[..2] == query[..2]
                    {
                        return Some(start.elapsed());
                    }
                }
                None
            });
            // The calling runtime's only worker is busy for 2 s.
            std::thread::sleep(Duration::from_secs(2));
            let waited = client.join().unwrap();
            shutdown.cancel();
            (waited, serving.await.unwrap())
        });
        let waited = waited.expect("no answer within 3 s");
        assert!(waited < Duration::from_secs(1), "answered after {waited:?}");
        result.unwrap();
    }
}
