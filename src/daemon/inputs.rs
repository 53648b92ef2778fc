//! What the daemon publishes, derived from the configuration, the policies and the state
//! directory: the zones to serve and the records the daemon itself owns (policy ids, TLS-RPT,
//! CAA, DANE-TA and the initial TLSA records), and the loading that `check-config` validates.
//! Decides nothing about when records change; reads files, writes none.

use std::path::Path;
use std::time::SystemTime;

use crate::config::{Config, ConfigError, LoadedPolicies};
use crate::publish::records::{self as rec, BadName};
use crate::publish::{self, Change, DomainZone};

/// Loads config and policies, printing warnings; every problem becomes one `ConfigError`.
pub(crate) fn load(path: &Path) -> Result<(Config, LoadedPolicies), ConfigError> {
    let config = Config::load(path)?;
    let loaded = config.load_policies()?;
    Ok((config, loaded))
}

/// The mail domains' zones mxguard serves: every configured domain that is not pushed.
pub(super) fn domain_zones(config: &Config) -> Vec<DomainZone> {
    config
        .domains
        .iter()
        .filter(|d| d.push.is_none())
        .map(|d| DomainZone {
            domain: d.name.clone(),
            zone_file: d.zone_file.clone(),
        })
        .collect()
}

/// Every zone mxguard serves: the domains' and the catalog (written by [`write_catalog`]).
pub(super) fn served_zones(config: &Config) -> Vec<DomainZone> {
    let mut zones = domain_zones(config);
    if let Some(catalog) = &config.catalog {
        zones.push(DomainZone {
            domain: catalog.clone(),
            zone_file: config.state_dir.join(CATALOG_FILE).into(),
        });
    }
    zones
}

/// Where the catalog zone's text is kept (written by [`write_catalog`]).
pub(super) const CATALOG_FILE: &str = "catalog.zone";

/// The catalog zone (RFC 9432, version 2) of the zones mxguard serves: one PTR per member
/// under `zones.`, named by a stable id (the first 64 bits of SHA-256 over the zone name), so
/// a member keeps its id across changes. Pure.
pub(super) fn catalog_text(catalog: &str, members: &[&str]) -> String {
    let mut s = format!(
        "$ORIGIN {catalog}.\n$TTL 0\n@ SOA invalid. invalid. 1 3600 600 2147483646 0\n@ NS invalid.\nversion TXT \"2\"\n"
    );
    let mut members: Vec<&str> = members.to_vec();
    members.sort();
    for m in members {
        let id = data_encoding::HEXLOWER
            .encode(&ring::digest::digest(&ring::digest::SHA256, m.as_bytes()).as_ref()[..8]);
        s.push_str(&format!("{id}.zones PTR {m}.\n"));
    }
    s
}

/// Writes the catalog zone file for `config` (when it has a catalog) if its text changed.
pub(super) fn write_catalog(config: &Config) -> Result<(), crate::state_dir::StoreError> {
    let Some(catalog) = &config.catalog else {
        return Ok(());
    };
    let members: Vec<&str> = config
        .domains
        .iter()
        .filter(|d| d.push.is_none())
        .map(|d| d.name.as_str())
        .collect();
    let text = catalog_text(catalog, &members);
    let path = config.state_dir.join(CATALOG_FILE);
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    crate::state_dir::ensure_dir(&config.state_dir)?;
    crate::state_dir::write_atomic(&path, text.as_bytes(), crate::state_dir::PUBLIC_MODE)
}

/// The pushed zones and where they go.
pub(super) fn push_zones(
    config: &Config,
) -> Vec<(hickory_proto::rr::Name, crate::publish::push::PushSettings)> {
    config
        .domains
        .iter()
        .filter_map(|d| {
            let p = crate::publish::push::PushSettings::clone(d.push.as_deref()?);
            Some((publish::signed::origin(&d.name).ok()?, p))
        })
        .collect()
}

/// Splits `changes` into those for mxguard's own zones and those for pushed zones.
pub(super) fn split_pushed(config: &Config, changes: Vec<Change>) -> (Vec<Change>, Vec<Change>) {
    let pushed: std::collections::BTreeMap<hickory_proto::rr::Name, ()> = push_zones(config)
        .into_iter()
        .map(|(n, _)| (n, ()))
        .collect();
    changes
        .into_iter()
        .partition(|c| publish::zone_for(&pushed, &c.key().owner).is_none())
}

/// The CAA records of `config` (none unless `acme.caa`): the issuer, the challenge types in
/// use and, once the account exists, its URL (RFC 8657).
pub(super) fn caa_policy(config: &Config) -> rec::CaaPolicy {
    let mut methods: Vec<String> = config
        .cert_specs()
        .iter()
        .map(|s| s.challenge.as_str().to_string())
        .collect();
    methods.sort();
    methods.dedup();
    rec::CaaPolicy {
        issuer: config.acme.caa_issuer.clone(),
        methods,
        // Without an issuer there is nothing to publish, and nothing to withdraw at start;
        // records published before a reload turned CAA off are withdrawn as base records that
        // are no longer produced (`Daemon::apply`). So no list of every apex is kept for it.
        apexes: match &config.acme.caa_issuer {
            Some(_) => config.domains.iter().map(|d| d.name.clone()).collect(),
            None => Vec::new(),
        },
        ttl: config.records.ttl,
        what: format!("{}: acme.caa", config.file.display()),
    }
}

/// The records the daemon itself owns, from config, policies and the state directory:
/// policy ids, TLS-RPT records, CAA, DANE-TA, and the `3 1 1` records as the state directory
/// has them (the rollover and external-certificate passes keep those current afterwards).
pub(super) fn base_changes(
    config: &Config,
    loaded: &LoadedPolicies,
    state_root: &Path,
) -> Result<Vec<Change>, BadName> {
    let cfg = config.file.display();
    let ttl = config.records.ttl;
    let tlsa_ttl = config.records.tlsa_ttl;
    let port = config.records.tlsa_port;
    let mut out = Vec::new();
    for (i, d) in config.domains.iter().enumerate() {
        if let Some(p) = loaded.policies.get(&d.name) {
            out.push(rec::policy_id(
                &d.name,
                &p.txt_record(),
                ttl,
                format!("{cfg}: domain[{i}] MTA-STS policy id"),
            )?);
        }
        out.push(rec::tls_rpt(
            &d.name,
            d.tls_rpt_record().as_deref(),
            ttl,
            format!("{cfg}: domain[{i}].tls_rpt"),
        )?);
    }
    out.extend(caa_policy(config).changes(crate::acme::account_url(state_root).as_deref())?);
    // TLSA for every MX whose key mxguard keeps: published from the moment the key exists,
    // before any certificate for it is ordered.
    for m in &config.mx {
        let what = format!("{cfg}: TLSA of MX {}", m.host);
        let digests: Vec<Vec<u8>> = if let Some(file) = &m.external {
            let st = crate::dane::executor::load_external(state_root, &m.host);
            let mut keys = crate::dane::executor::external_records(
                &st,
                &m.prepublish,
                crate::acme::manager::unix(SystemTime::now()),
            );
            if let Ok(k) = crate::dane::executor::key_of_cert_file(file)
                && !keys.contains(&k)
            {
                keys.push(k);
            }
            keys.iter()
                .filter_map(|k| crate::dane::tlsa::hex_decode(k))
                .collect()
        } else {
            m.rollover
                .then(|| crate::dane::files::rolled_digests(state_root, &m.host))
                .flatten()
                .or_else(|| {
                    crate::acme::manager::current_key_digest(state_root, &m.host).map(|d| vec![d])
                })
                .unwrap_or_default()
        };
        if !digests.is_empty() {
            out.push(rec::dane_ee(&m.host, port, &digests, tlsa_ttl, what)?);
        }
        let mut ta = Vec::new();
        for f in &m.dane_ta {
            match crate::dane::executor::key_of_cert_file(f) {
                Ok(k) => ta.extend(crate::dane::tlsa::hex_decode(&k)),
                Err(e) => {
                    tracing::error!(mx = %m.host, err = %e, "DANE-TA issuer certificate unreadable")
                }
            }
        }
        out.push(rec::dane_ta(
            &m.host,
            port,
            &ta,
            tlsa_ttl,
            format!("{cfg}: DANE-TA of MX {}", m.host),
        )?);
    }
    for d in config.domains.iter().filter(|d| d.tlsa_https) {
        let host = d.mta_sts_host();
        if let Some(digests) =
            crate::acme::manager::current_key_digest(state_root, &host).map(|d| vec![d])
        {
            out.push(rec::dane_ee(
                &host,
                443,
                &digests,
                tlsa_ttl,
                format!("{cfg}: TLSA of {host}"),
            )?);
        }
    }
    Ok(out)
}

pub(super) fn bad_name(config: &Config, e: BadName) -> ConfigError {
    ConfigError {
        problems: vec![config.problem("domain", e.to_string())],
    }
}

pub(super) fn zone_problems(e: publish::signed::LoadError) -> ConfigError {
    ConfigError {
        problems: e
            .problems
            .into_iter()
            .map(|message| crate::config::Problem {
                file: Default::default(),
                position: None,
                key: String::new(),
                message,
            })
            .collect(),
    }
}

/// Loads config, policies and zones: everything `check-config` validates.
/// Whether an MTA-STS `mx` pattern matches `host` (RFC 8461 4.1: exact, or `*.` for one
/// leftmost label).
fn mx_pattern_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(base) => host.split_once('.').is_some_and(|(_, rest)| rest == base),
        None => pattern == host,
    }
}

/// The MX hosts a zone publishes at its apex that its domain's `enforce` policy does not
/// cover: senders that apply the policy would refuse to deliver to them.
fn uncovered_zone_mx(config: &Config, loaded: &LoadedPolicies) -> Vec<crate::config::Problem> {
    let mut out = Vec::new();
    for (i, d) in config
        .domains
        .iter()
        .enumerate()
        .filter(|(_, d)| d.push.is_none())
    {
        let Some(p) = loaded.policies.get(&d.name) else {
            continue;
        };
        let field = |name: &'static str| -> Vec<String> {
            p.text
                .lines()
                .filter_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_ascii_lowercase())
                .collect()
        };
        if !field("mode:").iter().any(|m| m == "enforce") {
            continue;
        }
        let patterns = field("mx:");
        let Ok(origin) = publish::signed::origin(&d.name) else {
            continue;
        };
        // An unreadable zone is reported by the zone check.
        let Ok(zone) = crate::zone::ZoneData::load(&d.zone_file, &origin) else {
            continue;
        };
        let Some(mx) = zone
            .rrsets()
            .get(&origin)
            .and_then(|n| n.get(&hickory_proto::rr::RecordType::MX))
        else {
            continue;
        };
        for rd in &mx.data {
            let hickory_proto::rr::RData::MX(mx) = rd else {
                continue;
            };
            let host = mx
                .exchange
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            if !patterns.iter().any(|p| mx_pattern_matches(p, &host)) {
                out.push(config.problem(
                    format!("domain[{i}]"),
                    format!(
                        "{}: MX {host} is not covered by the enforce policy of {} (mx: {}): senders that apply it refuse to deliver there; add it to the policy's mx or remove it from the zone",
                        d.zone_file.display(),
                        d.name,
                        patterns.join(", ")
                    ),
                ));
            }
        }
    }
    out
}

pub(crate) fn load_all(path: &Path) -> Result<(Config, LoadedPolicies), ConfigError> {
    let (config, loaded) = load(path)?;
    let mut problems = Vec::new();
    match base_changes(&config, &loaded, &config.state_dir) {
        Ok(changes) => {
            let (own, _) = split_pushed(&config, changes);
            if let Err(e) = publish::signed::check(&domain_zones(&config), &own) {
                problems.extend(zone_problems(e).problems);
            }
        }
        Err(e) => problems.extend(bad_name(&config, e).problems),
    }
    for (i, s) in config.secondaries.iter().enumerate() {
        if let Err(e) = s.resolve() {
            problems.push(config.problem(format!("secondary[{i}]"), e.to_string()));
        }
    }
    problems.extend(uncovered_zone_mx(&config, &loaded));
    if problems.is_empty() {
        Ok((config, loaded))
    } else {
        Err(ConfigError { problems })
    }
}
