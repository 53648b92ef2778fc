//! NOTIFY to secondaries (RFC 1996) and SOA queries to them (for `status`).
//!
//! Owns the notifier task: whenever a zone's serial changes it sends NOTIFY to every secondary,
//! retrying with exponential backoff until acknowledged or `MAX_ATTEMPTS` is reached; a newer
//! serial supersedes a pending retry. Plain UDP with hickory-proto messages; TSIG-signed when
//! the secondary has a key. Must not change zones.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType, TSigner};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::DnsError;
use super::settings::Secondary;
use crate::zone::Zones;

/// How often the notifier checks for zones stored without [`super::DnsServer::publish`].
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// NOTIFY attempts per serial and secondary (waits 1, 2, 4, 8, 16, 30, 30, 30 s: ~2 min).
pub const MAX_ATTEMPTS: u32 = 8;
const MAX_WAIT: Duration = Duration::from_secs(30);

fn random_id() -> u16 {
    let mut b = [0u8; 2];
    // SystemRandom only fails if the OS has no randomness; a fixed id then still works.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u16::from_be_bytes(b)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sends `message` to `server` over UDP (TSIG-signed with `tsig`) and waits for the matching
/// response, verifying its TSIG.
pub async fn exchange(
    server: SocketAddr,
    mut message: Message,
    tsig: Option<&TSigner>,
    timeout: Duration,
) -> Result<Message, DnsError> {
    let err = |reason: String| DnsError::Query { server, reason };
    let mut verifier = match tsig {
        Some(signer) => message
            .finalize(signer, unix_now())
            .map_err(|e| err(format!("cannot sign with TSIG: {e}")))?,
        None => None,
    };
    let bytes = message.to_vec().map_err(|e| err(e.to_string()))?;
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| err(e.to_string()))?;
    socket
        .connect(server)
        .await
        .map_err(|e| err(e.to_string()))?;
    socket.send(&bytes).await.map_err(|e| err(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => return Err(DnsError::Timeout { server, timeout }),
            Ok(Err(e)) => return Err(err(e.to_string())),
            Ok(Ok(n)) => n,
        };
        let data = &buf[..n];
        let Ok(reply) = Message::from_vec(data) else {
            continue; // garbage: keep waiting for the real answer
        };
        if reply.metadata.id != message.metadata.id
            || reply.metadata.message_type != MessageType::Response
        {
            continue;
        }
        if let Some(v) = verifier.as_mut()
            && let Err(e) = v.verify(data)
            && reply.metadata.response_code == ResponseCode::NoError
        {
            // A refusal (e.g. NOTAUTH for a bad key) comes back unsigned: its code is
            // reported as it is; only a success must carry a valid signature.
            return Err(err(format!(
                "TSIG verification of the response failed: {e}"
            )));
        }
        return Ok(reply);
    }
}

/// Sends one NOTIFY for `zone` to `secondary` and waits up to `timeout` for its acknowledgement.
pub async fn send_notify(
    secondary: &Secondary,
    zone: &Name,
    soa: Option<&Record>,
    timeout: Duration,
) -> Result<(), DnsError> {
    let mut msg = Message::new(random_id(), MessageType::Query, OpCode::Notify);
    msg.metadata.authoritative = true;
    msg.add_query(Query::query(zone.clone(), RecordType::SOA));
    if let Some(soa) = soa {
        msg.add_answer(soa.clone());
    }
    let reply = exchange(secondary.address, msg, secondary.tsig.as_ref(), timeout).await?;
    if reply.metadata.op_code != OpCode::Notify
        || reply.metadata.response_code != ResponseCode::NoError
    {
        return Err(DnsError::Query {
            server: secondary.address,
            reason: format!(
                "NOTIFY answered {} ({})",
                reply.metadata.response_code, reply.metadata.op_code
            ),
        });
    }
    Ok(())
}

/// Asks `server` for the SOA serial of `zone` (UDP, no recursion), e.g. to show in `status`
/// whether a secondary is in sync.
pub async fn query_soa_serial(
    server: SocketAddr,
    zone: &Name,
    tsig: Option<&TSigner>,
    timeout: Duration,
) -> Result<u32, DnsError> {
    let mut msg = Message::new(random_id(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = false;
    msg.add_query(Query::query(zone.clone(), RecordType::SOA));
    let reply = exchange(server, msg, tsig, timeout).await?;
    if reply.metadata.response_code != ResponseCode::NoError {
        return Err(DnsError::Query {
            server,
            reason: format!(
                "SOA query for {zone} answered {}",
                reply.metadata.response_code
            ),
        });
    }
    reply
        .answers
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) if r.name == *zone => Some(soa.serial),
            _ => None,
        })
        .ok_or_else(|| DnsError::Query {
            server,
            reason: format!("no SOA for {zone} in the answer (not authoritative for it?)"),
        })
}

/// One query to `server` over UDP (recursion desired only when `recursion`; with DO when
/// `dnssec`): the answer when it is NOERROR or NXDOMAIN, else an error naming the code.
pub async fn query(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
    dnssec: bool,
    recursion: bool,
    timeout: Duration,
) -> Result<Message, String> {
    let mut msg = Message::new(random_id(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = recursion;
    msg.add_query(Query::query(name.clone(), rtype));
    if dnssec {
        let mut edns = hickory_proto::op::Edns::new();
        edns.set_max_payload(1232).set_dnssec_ok(true);
        msg.edns = Some(edns);
    }
    let reply = exchange(server, msg, None, timeout)
        .await
        .map_err(|e| e.to_string())?;
    match reply.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => Ok(reply),
        code => Err(format!("{server}: {name} {rtype} answered {code}")),
    }
}

/// NOTIFY one secondary about one serial, with backoff; gives up after [`MAX_ATTEMPTS`].
async fn notify_with_retry(
    secondary: Secondary,
    zone: Name,
    soa: Option<Record>,
    serial: u32,
    shutdown: CancellationToken,
) {
    for attempt in 0..MAX_ATTEMPTS {
        let wait = Duration::from_secs(1u64 << attempt.min(5)).min(MAX_WAIT);
        let started = Instant::now();
        match send_notify(&secondary, &zone, soa.as_ref(), wait).await {
            Ok(()) => {
                info!(secondary = %secondary.name, zone = %zone, serial, attempt, "notify acknowledged");
                return;
            }
            Err(e) => {
                debug!(secondary = %secondary.name, zone = %zone, serial, attempt, err = %e, "notify not acknowledged");
            }
        }
        // Fast failures (ICMP unreachable) still wait out the backoff.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(started + wait) => {}
        }
    }
    warn!(secondary = %secondary.name, zone = %zone, serial, attempts = MAX_ATTEMPTS, "secondary never acknowledged notify; it will pick up the change at its SOA refresh");
}

/// Watches the zones and sends NOTIFY on every serial change (and once at start).
pub(crate) async fn run_notifier(
    zones: Arc<ArcSwap<Zones>>,
    changed: Arc<tokio::sync::Notify>,
    secondaries: Vec<Secondary>,
    shutdown: CancellationToken,
) {
    if secondaries.is_empty() {
        shutdown.cancelled().await;
        return;
    }
    let mut notified: HashMap<Name, u32> = HashMap::new();
    let mut pending: HashMap<(Name, usize), tokio::task::AbortHandle> = HashMap::new();
    let mut tasks = JoinSet::new();
    loop {
        let snapshot = zones.load_full();
        for zone in snapshot.iter() {
            let origin = zone.origin().clone();
            let serial = zone.serial();
            if notified.get(&origin) == Some(&serial) {
                continue;
            }
            notified.insert(origin.clone(), serial);
            let soa = zone.soa().and_then(|s| s.records().into_iter().next());
            for (i, secondary) in secondaries.iter().enumerate() {
                if let Some(old) = pending.remove(&(origin.clone(), i)) {
                    old.abort(); // superseded by the newer serial
                }
                let handle = tasks.spawn(notify_with_retry(
                    secondary.clone(),
                    origin.clone(),
                    soa.clone(),
                    serial,
                    shutdown.clone(),
                ));
                pending.insert((origin.clone(), i), handle);
            }
        }
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = changed.notified() => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}
