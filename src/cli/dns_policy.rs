//! `mxguard dns-policy`: for each pushed domain, the names and types mxguard writes and the
//! least-privilege snippets for the primary (Knot `acl` with `update-owner`/`update-type`,
//! BIND `update-policy`) with the TSIG key, so the key can change nothing else.

use std::path::Path;

use crate::config::{Config, Domain};

/// The owners (absolute) and types mxguard writes into `d`'s zone, from the config.
pub(crate) fn managed_names(config: &Config, d: &Domain) -> Vec<(String, &'static str)> {
    let zone = &d.name;
    let inside = |n: &str| n == zone || n.ends_with(&format!(".{zone}"));
    let dns01 = |c: crate::acme::ChallengeKind| c == crate::acme::ChallengeKind::Dns01;
    let mut out = vec![(format!("_mta-sts.{zone}."), "TXT")];
    if !d.tls_rpt.is_empty() {
        out.push((format!("_smtp._tls.{zone}."), "TXT"));
    }
    if dns01(d.challenge) {
        out.push((format!("_acme-challenge.{}.", d.mta_sts_host()), "TXT"));
    }
    if d.tlsa_https {
        out.push((format!("_443._tcp.{}.", d.mta_sts_host()), "TLSA"));
    }
    for m in config
        .mx
        .iter()
        .filter(|m| d.mx.contains(&m.host) && inside(&m.host))
    {
        out.push((
            format!("_{}._tcp.{}.", config.records.tlsa_port, m.host),
            "TLSA",
        ));
        if dns01(m.challenge) && m.external.is_none() {
            out.push((format!("_acme-challenge.{}.", m.host), "TXT"));
        }
    }
    if config.acme.caa_issuer.is_some() {
        out.push((format!("{zone}."), "CAA"));
    }
    out
}

/// `mxguard dns-policy -c CONFIG [DOMAIN]`.
pub fn print_dns_policy(path: &Path, domain: Option<&str>) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let wanted = domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase());
    let pushed: Vec<&Domain> = config
        .domains
        .iter()
        .filter(|d| d.push.is_some())
        .filter(|d| wanted.as_ref().is_none_or(|w| w == &d.name))
        .collect();
    if pushed.is_empty() {
        anyhow::bail!(
            "no pushed domain{} in {}: dns-policy is for domains with [domain.push]",
            wanted.map(|w| format!(" {w}")).unwrap_or_default(),
            config.file.display()
        );
    }
    for d in pushed {
        let Some(p) = &d.push else { continue };
        let Some(t) = &p.tsig else {
            if let Some(api) = &p.provider {
                println!(
                    "# {}: pushed through the {} API; limit its token at the provider to this zone's TXT, TLSA and CAA records:",
                    d.name, api.name
                );
                for (n, t) in managed_names(&config, d) {
                    println!("#   {n} {t}");
                }
                println!();
            }
            continue;
        };
        let secret = crate::publish::push::read_secret(&t.secret_file)
            .map(|s| data_encoding::BASE64.encode(&s))
            .map_err(anyhow::Error::msg)?;
        let key = format!("{}.", t.key_name.trim_end_matches('.'));
        let alg = crate::publish::push::algorithm_name(&t.algorithm);
        let names = managed_names(&config, d);
        println!(
            "# {}: mxguard updates only these RRsets at {} (TSIG key {key}):",
            d.name,
            p.target()
        );
        for (n, t) in &names {
            println!("#   {n} {t}");
        }
        println!();
        println!("# Knot DNS (knot.conf): one ACL per record type, each limited to its names.");
        println!("key:\n  - id: {key}\n    algorithm: {alg}\n    secret: {secret}");
        println!("acl:");
        let mut acls = Vec::new();
        for t in ["TXT", "TLSA", "CAA"] {
            let owners: Vec<&str> = names
                .iter()
                .filter(|(_, ty)| *ty == t)
                .map(|(n, _)| n.as_str())
                .collect();
            if owners.is_empty() {
                continue;
            }
            let id = format!("mxguard-{}-{}", d.name, t.to_ascii_lowercase());
            println!(
                "  - id: {id}\n    key: {key}\n    action: update\n    update-type: [{t}]\n    update-owner: name\n    update-owner-match: equal\n    update-owner-name: [{}]",
                owners.join(", ")
            );
            acls.push(id);
        }
        println!(
            "zone:\n  - domain: {}\n    acl: [{}]",
            d.name,
            acls.join(", ")
        );
        println!();
        println!("# BIND (named.conf)");
        println!("key \"{key}\" {{\n    algorithm {alg};\n    secret \"{secret}\";\n}};");
        println!(
            "zone \"{}\" {{\n    // type primary; file …;\n    update-policy {{",
            d.name
        );
        for (n, t) in &names {
            println!("        grant {key} name {n} {t};");
        }
        println!("    }};\n}};");
        println!();
    }
    Ok(())
}
