//! The read-only commands: `check-config`, `policy`, `ds`, `status`, `tlsa`, `certs`, and
//! `rotate` (which only leaves a request for the daemon). They print; they never change what
//! the daemon serves.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::config::{Config, ConfigError};
use crate::publish::{self};

/// The TLS-RPT database in the state directory.
use crate::daemon::{load, load_all};

/// `mxguard check-config`: prints every problem (or `ok`), warnings included.
pub fn check_config(path: &Path) -> Result<(), ConfigError> {
    let (config, loaded) = load_all(path)?;
    for w in &loaded.warnings {
        println!("warning: {w}");
    }
    println!(
        "{}: ok ({} domain{})",
        config.file.display(),
        config.domains.len(),
        if config.domains.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// `mxguard policy`: the rendered policy and its `_mta-sts` TXT record.
pub fn print_policy(path: &Path, domain: Option<&str>) -> anyhow::Result<()> {
    let (config, loaded) = load(path)?;
    let wanted = domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase());
    if let Some(w) = &wanted
        && !loaded.policies.contains_key(w)
    {
        anyhow::bail!(
            "domain {w} is not configured in {} (configured: {})",
            config.file.display(),
            loaded
                .policies
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for d in &config.domains {
        if wanted.as_ref().is_some_and(|w| w != &d.name) {
            continue;
        }
        let p = &loaded.policies[&d.name];
        println!("; https://{}/.well-known/mta-sts.txt", d.mta_sts_host());
        print!("{}", p.text.replace("\r\n", "\n"));
        println!("; DNS");
        println!("_mta-sts.{}. IN TXT \"{}\"", d.name, p.txt_record());
        if let Some(rua) = d.tls_rpt_record() {
            println!("_smtp._tls.{}. IN TXT \"{rua}\"", d.name);
        }
        println!();
    }
    Ok(())
}

/// `mxguard ds`: the DS and DNSKEY records of each zone's key for the registrar (created if it
/// does not exist yet, so the DS can be registered before the first start).
pub fn print_ds(path: &Path, domain: Option<&str>) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let wanted = domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase());
    if let Some(w) = &wanted
        && !config.domains.iter().any(|d| &d.name == w)
    {
        anyhow::bail!("domain {w} is not configured in {}", config.file.display());
    }
    for d in &config.domains {
        if wanted.as_ref().is_some_and(|w| w != &d.name) {
            continue;
        }
        let origin = publish::signed::origin(&d.name)?;
        // The keys whose DS the parent should serve (during a key roll: the new one).
        let keys = crate::dnssec::zone_keys(&config.state_dir, &origin, config.dnssec.algorithm)?;
        for key in keys.submitted() {
            let r = key
                .registrar_records(&origin)
                .map_err(|e| anyhow::anyhow!(e.to_string()))?;
            println!(
                "; {} — key tag {}, algorithm {}",
                d.name, r.key_tag, r.algorithm
            );
            println!("{}", r.ds);
            println!("{}", r.dnskey);
        }
    }
    Ok(())
}

/// `mxguard status`: per zone the serial served and each secondary's serial; certificates.
pub async fn status(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let timeout = Duration::from_secs(2);
    let own = config.listen.dns.map(|a| {
        if a.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), a.port())
        } else {
            a
        }
    });
    let mut secondaries = Vec::new();
    for s in &config.secondaries {
        secondaries.push(s.resolve().map_err(|e| anyhow::anyhow!(e.to_string()))?);
    }
    let mut lagging = false;
    for d in &config.domains {
        let zone = publish::signed::origin(&d.name)?;
        if let Some(push) = &d.push {
            // Pushed: the primary's and each nameserver's serial, and the managed RRsets.
            match &push.provider {
                Some(api) => println!("zone {} (pushed through the {} API)", d.name, api.name),
                None => println!("zone {} (pushed by RFC 2136 to {})", d.name, push.target()),
            }
            if let Some(e) = crate::publish::push::read_failures(&config.state_dir).get(&d.name) {
                lagging = true;
                println!("  push failing: {e}");
            }
            // A provider API has no primary to ask: the nameservers are compared among
            // themselves (with the first).
            let mut primary = None;
            if let Some(server) = push.server {
                let serial = crate::dns::query_soa_serial(server, &zone, None, timeout).await;
                match &serial {
                    Ok(s) => println!("  primary {server}: serial {s}"),
                    Err(e) => {
                        lagging = true;
                        println!("  primary {server}: unreachable ({e})");
                    }
                }
                primary = serial.ok();
            }
            let list = crate::publish::nameservers::nameservers(&zone, push).await;
            match &list {
                Ok(list) => {
                    let mut serials = Vec::new();
                    for &ns in list {
                        serials.push((
                            ns,
                            crate::dns::query_soa_serial(ns, &zone, None, timeout).await,
                        ));
                    }
                    // Behind the primary, or (no primary) behind the newest nameserver.
                    let newest = primary.or_else(|| {
                        serials
                            .iter()
                            .filter_map(|(_, s)| s.as_ref().ok().copied())
                            .reduce(|a, b| {
                                if crate::zone::serial::serial_gt(b, a) {
                                    b
                                } else {
                                    a
                                }
                            })
                    });
                    for (ns, serial) in serials {
                        match serial {
                            Ok(s) => {
                                let state = match newest {
                                    Some(p) if crate::zone::serial::serial_gt(p, s) => {
                                        lagging = true;
                                        " behind"
                                    }
                                    _ => "",
                                };
                                println!("  nameserver {ns}: serial {s}{state}");
                            }
                            Err(e) => {
                                lagging = true;
                                println!("  nameserver {ns}: unreachable ({e})");
                            }
                        }
                    }
                }
                Err(e) => {
                    lagging = true;
                    println!("  nameservers: unknown ({e})");
                }
            }
            // The managed RRsets as the primary (or the first nameserver) serves them.
            let reference = push
                .server
                .or_else(|| list.ok().and_then(|l| l.first().copied()));
            for (owner, rtype) in super::dns_policy::managed_names(&config, d) {
                let Ok(name) = hickory_proto::rr::Name::from_ascii(&owner) else {
                    continue;
                };
                let Ok(rtype) = rtype.parse::<hickory_proto::rr::RecordType>() else {
                    continue;
                };
                let Some(reference) = reference else {
                    println!("  {owner} {rtype}: unknown (no nameserver to ask)");
                    continue;
                };
                let what = match crate::publish::push::query(reference, &name, rtype, true).await {
                    Ok(m) => {
                        let n = m
                            .answers
                            .iter()
                            .filter(|r| r.record_type() == rtype)
                            .count();
                        let signed = m
                            .answers
                            .iter()
                            .any(|r| r.record_type() == hickory_proto::rr::RecordType::RRSIG);
                        match (n, signed) {
                            (0, _) => "absent".to_string(),
                            (n, true) => format!("{n} record(s), signed"),
                            (n, false) => format!("{n} record(s), not signed"),
                        }
                    }
                    Err(e) => format!("unknown ({e})"),
                };
                println!("  {owner} {rtype}: {what}");
            }
            continue;
        }
        println!("zone {}", d.name);
        let served = match own {
            Some(a) => match crate::dns::query_soa_serial(a, &zone, None, timeout).await {
                Ok(s) => {
                    println!("  served serial:  {s} (mxguard at {a})");
                    Some(s)
                }
                Err(e) => {
                    println!("  served serial:  unknown ({e})");
                    None
                }
            },
            None => {
                println!("  served serial:  - (listen.dns not set)");
                None
            }
        };
        for s in &secondaries {
            match crate::dns::query_soa_serial(s.address, &zone, s.tsig.as_ref(), timeout).await {
                Ok(got) => {
                    let state = match served {
                        Some(x) if x == got => "in sync",
                        Some(_) => {
                            lagging = true;
                            "behind"
                        }
                        None => "",
                    };
                    println!(
                        "  secondary {} ({}): serial {got} {state}",
                        s.name, s.address
                    );
                }
                Err(e) => {
                    lagging = true;
                    println!("  secondary {} ({}): unreachable ({e})", s.name, s.address);
                }
            }
        }
        let parent = crate::dnssec::RollSettings::parent_source(
            &config.dnssec.parent_nameservers,
            config.dnssec.parent_resolver,
        );
        let (lines, act) =
            crate::dnssec::report(&config.state_dir, &zone, config.dnssec.algorithm, &parent).await;
        for l in lines {
            println!("  {l}");
        }
        lagging |= act;
    }
    for r in crate::acme::report::report(&config.state_dir, &config.cert_specs(), SystemTime::now())
    {
        println!(
            "certificate {}: {} until {}{}{}",
            r.name,
            r.issuer.as_deref().unwrap_or("not issued yet"),
            r.not_after.as_deref().unwrap_or("-"),
            r.last_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default(),
            if r.near_expiry { "; NEAR EXPIRY" } else { "" }
        );
    }
    if lagging {
        anyhow::bail!("a secondary is behind or unreachable, or a zone's keys need the operator");
    }
    Ok(())
}

/// `mxguard tlsa`: per MX the published records, the roll state and its next deadline.
pub fn print_tlsa(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let timing = config.roll_timing();
    if config.mx.is_empty() {
        println!("no [[mx]] configured: mxguard manages no MX keys");
    }
    let now = crate::acme::manager::unix(SystemTime::now());
    for m in &config.mx {
        let owner = format!("_{}._tcp.{}.", config.records.tlsa_port, m.host);
        println!("{}", m.host);
        let v = crate::dane::view::view(
            &config.state_dir,
            &crate::dane::view::MxKeys {
                host: &m.host,
                rollover: m.rollover,
                external: m.external.as_ref(),
                prepublish: &m.prepublish,
                single_key: crate::acme::manager::current_key_digest(&config.state_dir, &m.host),
            },
            &timing,
            now,
        );
        for (k, what) in &v.records {
            println!("  {owner} IN TLSA 3 1 1 {k}   ; {what}");
        }
        println!("  state: {}", v.state);
        if let Some(why) = &v.held {
            println!("  held: {why}");
        }
        if let Some(e) = &v.last_error {
            println!("  last error: {e}");
        }
        // A pushed zone whose updates fail: the records above may not be what is served.
        let failures = crate::publish::push::read_failures(&config.state_dir);
        if let Some((zone, e)) = failures
            .iter()
            .find(|(z, _)| m.host.ends_with(&format!(".{z}")))
        {
            println!("  push to {zone} failing: {e}");
        }
    }
    Ok(())
}

/// `mxguard rotate`: asks the daemon to roll the key of one MX (or all).
pub fn rotate(path: &Path, mx: Option<&str>) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let wanted = mx.map(|m| m.trim_end_matches('.').to_ascii_lowercase());
    let hosts: Vec<&crate::config::MxCert> = config
        .mx
        .iter()
        .filter(|m| wanted.as_ref().is_none_or(|w| w == &m.host))
        .collect();
    if hosts.is_empty() {
        anyhow::bail!(
            "no [[mx]] {}in {}",
            wanted.map(|w| format!("{w} ")).unwrap_or_default(),
            config.file.display()
        );
    }
    for m in hosts {
        if !m.rollover || m.external.is_some() {
            anyhow::bail!(
                "{}: mxguard does not roll this MX's key (rollover = false or external_cert)",
                m.host
            );
        }
        crate::dane::executor::request_rotation(&config.state_dir, &m.host)
            .map_err(|e| anyhow::anyhow!(e))?;
        println!(
            "roll of {} requested; the daemon starts it once the next key's record is public everywhere (see `mxguard tlsa`)",
            m.host
        );
    }
    Ok(())
}

/// `mxguard dnssec-roll`: asks the daemon to roll a zone's signing key (to `algorithm`).
pub fn dnssec_roll(path: &Path, domain: &str, algorithm: Option<&str>) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let name = domain.trim_end_matches('.').to_ascii_lowercase();
    let Some(d) = config.domains.iter().find(|d| d.name == name) else {
        anyhow::bail!(
            "domain {name} is not configured in {}",
            config.file.display()
        );
    };
    if d.push.is_some() {
        anyhow::bail!("{name} is pushed to its own DNS: its keys are the primary's or provider's");
    }
    let algorithm = match algorithm {
        None => config.dnssec.algorithm,
        Some("ed25519") => crate::zone::DnssecAlgorithm::Ed25519,
        Some("ecdsap256sha256") => crate::zone::DnssecAlgorithm::EcdsaP256Sha256,
        Some(other) => anyhow::bail!("unknown algorithm {other:?}: use ed25519 or ecdsap256sha256"),
    };
    if config.dnssec.parent_nameservers.is_empty() && config.dnssec.parent_resolver.is_none() {
        anyhow::bail!(
            "a key roll waits for the parent to serve the new DS: set dnssec.parent_nameservers or dnssec.parent_resolver in {}",
            config.file.display()
        );
    }
    let origin = publish::signed::origin(&d.name)?;
    if let Some(s) =
        crate::dnssec::load_state(&config.state_dir, &origin).map_err(|e| anyhow::anyhow!(e))?
        && !matches!(s.phase, crate::dnssec::machine::Phase::Stable)
    {
        println!(
            "a key roll of {name} is in progress (phase {}); this one starts after it",
            s.phase.name()
        );
    }
    crate::dnssec::executor::request(&config.state_dir, &origin, algorithm)
        .map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "key roll of {name} to {} requested; the daemon starts it at its next poll (see `mxguard status`)",
        algorithm.as_str()
    );
    Ok(())
}

/// `mxguard certs`: the stored state of every certificate.
pub fn print_certs(path: &Path, json: bool) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let reports =
        crate::acme::report::report(&config.state_dir, &config.cert_specs(), SystemTime::now());
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(());
    }
    for r in &reports {
        println!("{}", r.name);
        println!("  sans:         {}", r.sans.join(", "));
        println!("  challenge:    {}", r.challenge);
        println!("  key:          {}", r.key);
        println!(
            "  issuer:       {}",
            r.issuer.as_deref().unwrap_or("not issued yet")
        );
        println!("  not after:    {}", r.not_after.as_deref().unwrap_or("-"));
        println!(
            "  next renewal: {}",
            r.next_renewal.as_deref().unwrap_or("as soon as possible")
        );
        if let Some(e) = &r.last_error {
            println!("  last error:   {e}");
        }
        if let Some(e) = &r.deploy_error {
            println!("  deploy error: {e}");
        }
        if r.near_expiry {
            println!("  WARNING: near expiry and not renewed");
        }
    }
    Ok(())
}

/// `mxguard tsig-keygen NAME [--out FILE]`: a new HMAC-SHA256 TSIG secret (32 random bytes,
/// base64) — the content of a `tsig_secret_file`. Without `--out` the secret is printed; with
/// it, written to FILE (0600, never over an existing file) and the peers' snippets printed.
pub fn tsig_keygen(name: &str, out: Option<&Path>) -> anyhow::Result<()> {
    let mut key = name.trim_end_matches('.').to_ascii_lowercase();
    if key.is_empty() || hickory_proto::rr::Name::from_ascii(&key).is_err() {
        anyhow::bail!("{name:?} is not a valid key name (a domain-name-like label, e.g. xfr-key)");
    }
    key.push('.');
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| anyhow::anyhow!("no randomness available"))?;
    let b64 = data_encoding::BASE64.encode(&secret);
    let Some(path) = out else {
        println!("{b64}");
        return Ok(());
    };
    if path.exists() {
        anyhow::bail!("{} already exists; choose another file", path.display());
    }
    crate::state_dir::write_atomic(
        path,
        format!("{b64}\n").as_bytes(),
        crate::state_dir::SECRET_MODE,
    )?;
    println!(
        "wrote {} (0600): tsig_key_name = \"{key}\", tsig_secret_file = \"{}\"",
        path.display(),
        path.display()
    );
    println!();
    println!("# Knot (knot.conf):");
    println!("key:\n  - id: {key}\n    algorithm: hmac-sha256\n    secret: {b64}");
    println!();
    println!("# BIND (named.conf):");
    println!("key \"{key}\" {{\n    algorithm hmac-sha256;\n    secret \"{b64}\";\n}};");
    Ok(())
}
