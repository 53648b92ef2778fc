//! What the parent zone serves for a zone's DS, asked of the parent's authoritative servers
//! directly (no recursion), so that a roll never trusts a cache.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::dnssec::rdata::{DNSSECRData, DS};
use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RData, RecordType};

use super::machine::ParentView;
use crate::zone::ZoneKey;

const TIMEOUT: Duration = Duration::from_secs(3);
/// At most this many parent nameservers (names) are asked.
const MAX_SERVERS: usize = 16;

/// Where the parent's servers are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParentSource {
    /// `dnssec.parent_nameservers`: asked directly.
    Servers(Vec<SocketAddr>),
    /// `dnssec.parent_resolver`: finds the parent zone and its servers (port 53).
    Resolver(SocketAddr),
    /// Neither is configured.
    Unknown,
}

/// The DS in presentation format (`tag alg digest-type HEX`).
pub(crate) fn ds_text(ds: &DS) -> String {
    format!(
        "{} {} {} {}",
        ds.key_tag(),
        u8::from(ds.algorithm()),
        u8::from(ds.digest_type()),
        data_encoding::HEXUPPER.encode(ds.digest())
    )
}

/// Whether `ds` is a DS of `key`.
pub(crate) fn matches(ds: &DS, origin: &Name, key: &ZoneKey) -> bool {
    ds.key_tag() == key.key_tag()
        && ds.algorithm() == key.algorithm().to_hickory()
        && ds.covers(origin, key.dnskey()).unwrap_or(false)
}

/// The parent's authoritative servers for `zone`, one group of addresses per server (a
/// configured address alone; a nameserver name's IPv4 then IPv6 addresses).
pub(crate) async fn servers(
    zone: &Name,
    source: &ParentSource,
) -> Result<Vec<Vec<SocketAddr>>, String> {
    match source {
        ParentSource::Servers(s) => Ok(s.iter().map(|a| vec![*a]).collect()),
        ParentSource::Unknown => Err(
            "neither dnssec.parent_nameservers nor dnssec.parent_resolver is set, so the parent's DS cannot be seen".into(),
        ),
        ParentSource::Resolver(r) => {
            if zone.num_labels() == 0 {
                return Err("the root zone has no parent".into());
            }
            // The parent zone: the owner of the SOA the resolver gives for the name above.
            let above = zone.base_name();
            let m = crate::dns::query(*r, &above, RecordType::SOA, false, true, TIMEOUT).await?;
            let parent = m
                .answers
                .iter()
                .chain(m.authorities.iter())
                .find(|r| r.record_type() == RecordType::SOA)
                .map(|r| r.name.clone())
                .ok_or_else(|| format!("resolver {r}: no SOA for {above}"))?;
            let ns = crate::dns::query(*r, &parent, RecordType::NS, false, true, TIMEOUT).await?;
            let mut names: Vec<Name> = ns
                .answers
                .iter()
                .filter_map(|rec| match &rec.data {
                    RData::NS(target) => Some(target.0.clone()),
                    _ => None,
                })
                .collect();
            names.sort();
            names.dedup();
            if names.is_empty() {
                return Err(format!("resolver {r}: no NS for {parent}"));
            }
            if names.len() > MAX_SERVERS {
                return Err(format!(
                    "{parent} has {} nameservers; set dnssec.parent_nameservers to the addresses to ask",
                    names.len()
                ));
            }
            let mut out = Vec::new();
            // Every nameserver must be asked: one without an address is an error, not skipped.
            for name in names {
                let mut group = Vec::new();
                for t in [RecordType::A, RecordType::AAAA] {
                    if let Ok(a) = crate::dns::query(*r, &name, t, false, true, TIMEOUT).await {
                        for rec in &a.answers {
                            match &rec.data {
                                RData::A(v4) => group.push(SocketAddr::new(v4.0.into(), 53)),
                                RData::AAAA(v6) => group.push(SocketAddr::new(v6.0.into(), 53)),
                                _ => {}
                            }
                        }
                    }
                }
                if group.is_empty() {
                    return Err(format!(
                        "resolver {r}: no address for {name}, a nameserver of {parent}"
                    ));
                }
                out.push(group);
            }
            Ok(out)
        }
    }
}

/// One server's answer for the DS of `zone`: its first address that answers.
async fn ask(zone: &Name, group: &[SocketAddr]) -> Result<(SocketAddr, Message), String> {
    let mut last = String::from("no address");
    for server in group {
        match crate::dns::query(*server, zone, RecordType::DS, false, false, TIMEOUT).await {
            Ok(m) if m.metadata.truncation => {
                last = format!("parent server {server}: truncated answer");
            }
            Ok(m) => return Ok((*server, m)),
            Err(e) => last = format!("parent server {server}: {e}"),
        }
    }
    Err(last)
}

/// Asks every parent server for the DS of `zone`: whether each serves a DS of `new`, whether
/// any still serves one of `old`.
pub(crate) async fn observe(
    zone: &Name,
    source: &ParentSource,
    new: &ZoneKey,
    old: Option<&ZoneKey>,
    now: u64,
) -> ParentView {
    let mut view = ParentView {
        checked_at: now,
        ds: Vec::new(),
        has_new: true,
        has_old: false,
        ttl: 0,
        error: None,
    };
    let servers = match servers(zone, source).await {
        Ok(s) if !s.is_empty() => Ok(s),
        Ok(_) => Err("no parent nameservers".to_string()),
        Err(e) => Err(e),
    };
    let servers = match servers {
        Ok(s) => s,
        Err(e) => {
            view.error = Some(e);
            view.has_new = false;
            return view;
        }
    };
    for (i, group) in servers.iter().enumerate() {
        let (server, m) = match ask(zone, group).await {
            Ok(x) => x,
            Err(e) => {
                view.error = Some(e);
                view.has_new = false;
                return view;
            }
        };
        if !m.metadata.authoritative {
            view.error = Some(format!(
                "parent server {server} is not authoritative for the DS of {zone}"
            ));
            view.has_new = false;
            return view;
        }
        let ds: Vec<(DS, u32)> = m
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::DS && r.name == *zone)
            .filter_map(|r| match &r.data {
                RData::DNSSEC(DNSSECRData::DS(ds)) => Some((ds.clone(), r.ttl)),
                _ => None,
            })
            .collect();
        if i == 0 {
            view.ds = ds.iter().map(|(d, _)| ds_text(d)).collect();
        }
        view.ttl = ds.iter().map(|(_, t)| *t).fold(view.ttl, u32::max);
        if !ds.iter().any(|(d, _)| matches(d, zone, new)) {
            view.has_new = false;
        }
        if let Some(old) = old
            && ds.iter().any(|(d, _)| matches(d, zone, old))
        {
            view.has_old = true;
        }
    }
    view
}
