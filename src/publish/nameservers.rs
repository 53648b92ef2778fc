//! Whom to ask whether a pushed change is served: the configured nameservers, or the zone's
//! NS RRset as the primary (RFC 2136) or a resolver (provider APIs) answers it, each name's
//! addresses. Read-only queries; must not push anything.

use std::net::SocketAddr;

use hickory_proto::rr::{Name, RData, RecordType};

use super::push::{PushSettings, TIMEOUT, query, rcode_name};

/// The server asked for the zone's SOA serial: the primary (rfc2136), else the first
/// authoritative server.
pub(crate) async fn reference(zone: &Name, s: &PushSettings) -> Result<SocketAddr, String> {
    if let Some(p) = s.server {
        return Ok(p);
    }
    nameservers(zone, s)
        .await?
        .first()
        .copied()
        .ok_or_else(|| "no NS addresses for the zone".to_string())
}

/// The authoritative servers: the configured ones; else the zone's NS names as the primary
/// answers them, each resolved (in-zone names at the primary, others by the system); for a
/// provider API, the NS names and their addresses as a resolver finds them.
pub(crate) async fn nameservers(zone: &Name, s: &PushSettings) -> Result<Vec<SocketAddr>, String> {
    if !s.nameservers.is_empty() {
        return Ok(s.nameservers.clone());
    }
    let Some(primary) = s.server else {
        return resolved_nameservers(zone, s.resolver).await;
    };
    let ns = query(primary, zone, RecordType::NS, false).await?;
    let mut out = Vec::new();
    for r in &ns.answers {
        let RData::NS(target) = &r.data else {
            continue;
        };
        let target = &target.0;
        if zone.zone_of(target) {
            for t in [RecordType::A, RecordType::AAAA] {
                if let Ok(m) = query(primary, target, t, false).await {
                    for a in &m.answers {
                        match &a.data {
                            RData::A(v4) => out.push(SocketAddr::new(v4.0.into(), 53)),
                            RData::AAAA(v6) => out.push(SocketAddr::new(v6.0.into(), 53)),
                            _ => {}
                        }
                    }
                }
            }
        } else if let Ok(Ok(addrs)) = tokio::time::timeout(
            TIMEOUT,
            tokio::net::lookup_host((target.to_ascii().trim_end_matches('.'), 53)),
        )
        .await
        {
            out.extend(addrs);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Most NS names of one zone that are looked up.
const MAX_NS: usize = 16;

/// The zone's NS RRset and each name's addresses (port 53) through a recursive resolver:
/// `resolver`, or the first of the system's.
async fn resolved_nameservers(
    zone: &Name,
    resolver: Option<SocketAddr>,
) -> Result<Vec<SocketAddr>, String> {
    let resolver = match resolver {
        Some(r) => r,
        None => system_resolver()?,
    };
    let ask = |name: Name, rtype| async move {
        crate::dns::query(resolver, &name, rtype, false, true, TIMEOUT)
            .await
            .map_err(|e| format!("resolver {resolver}: {name} {rtype}: {e}"))
    };
    let ns = ask(zone.clone(), RecordType::NS).await?;
    let names: Vec<Name> = ns
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::NS(t) if r.name == *zone => Some(t.0.clone()),
            _ => None,
        })
        .take(MAX_NS)
        .collect();
    if names.is_empty() {
        return Err(format!(
            "resolver {resolver}: no NS records for {zone} ({})",
            rcode_name(ns.metadata.response_code)
        ));
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for n in names {
        for t in [RecordType::A, RecordType::AAAA] {
            // One name's failed lookup leaves out that name's addresses, not the others.
            let m = match ask(n.clone(), t).await {
                Ok(m) => m,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            for a in &m.answers {
                let addr = match &a.data {
                    RData::A(v4) if a.name == n => SocketAddr::new(v4.0.into(), 53),
                    RData::AAAA(v6) if a.name == n => SocketAddr::new(v6.0.into(), 53),
                    _ => continue,
                };
                // A host without IPv6 (or IPv4) cannot ask those addresses: they are left out
                // rather than holding every roll.
                if routable(addr) {
                    out.push(addr);
                } else {
                    tracing::debug!(zone = %zone, ns = %n, addr = %addr, "nameserver address not routable from this host: not asked");
                }
            }
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty()
        && let Some(e) = errors.into_iter().next()
    {
        return Err(e);
    }
    Ok(out)
}

/// Whether this host has a route to `addr` (a UDP socket can be connected to it; nothing is
/// sent).
fn routable(addr: SocketAddr) -> bool {
    let local: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    std::net::UdpSocket::bind(local)
        .and_then(|s| s.connect(addr))
        .is_ok()
}

/// The first resolver of `/etc/resolv.conf` (port 53).
fn system_resolver() -> Result<SocketAddr, String> {
    let (config, _) = hickory_resolver::system_conf::read_system_conf()
        .map_err(|e| format!("the system's resolver (/etc/resolv.conf): {e}"))?;
    config
        .name_servers()
        .first()
        .map(|ns| SocketAddr::new(ns.ip, 53))
        .ok_or_else(|| "no nameserver in /etc/resolv.conf".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_routable() {
        assert!(routable("127.0.0.1:53".parse().unwrap()));
    }
}
