//! `mxguard init`: writes a config (or adds a domain to it), a policy and a zone skeleton.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;

/// Options of `mxguard init` (also its command-line arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct InitOptions {
    /// Where to write mxguard.toml, policies/ and zones/.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// The mail domain.
    #[arg(long)]
    pub domain: String,
    /// An MX host of the domain (repeat for several).
    #[arg(long, required = true)]
    pub mx: Vec<String>,
    #[arg(long, default_value = "0.0.0.0:443")]
    pub https: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:80")]
    pub http: SocketAddr,
    #[arg(long, default_value = "0.0.0.0:53")]
    pub dns: SocketAddr,
    /// Metrics, health and the status page (keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:9425")]
    pub admin: SocketAddr,
    /// Where the MX certificates and keys are written for the MTA (relative paths: to the
    /// config's folder).
    #[arg(long, default_value = "mx-certs")]
    pub mx_cert_dir: PathBuf,
    /// letsencrypt, letsencrypt-staging, local, or a directory URL.
    #[arg(long, default_value = "letsencrypt")]
    pub acme_directory: String,
    /// PEM root to trust for the ACME directory's own TLS.
    #[arg(long)]
    pub acme_ca_file: Option<PathBuf>,
    #[arg(long)]
    pub email: Option<String>,
    /// A TLS-RPT report URI (mailto: or https:), repeatable.
    #[arg(long)]
    pub rua: Vec<String>,
    #[arg(long, default_value = "testing")]
    pub mode: crate::mtasts::policy::Mode,
    /// Overwrite existing policy and zone files.
    #[arg(long)]
    pub force: bool,
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| toml_str(s)).collect();
    format!("[{}]", items.join(", "))
}

/// The sections a new config shows with their defaults, commented out.
const DEFAULTS: &str = "
# Managed records (defaults shown).
[records]
# ttl = 300          # _mta-sts, _smtp._tls, CAA
# tlsa_ttl = 300     # TLSA; a key roll waits at least twice this
# tlsa_port = 25

# DANE key rollover of every [[mx]] (defaults shown).
[rollover]
# key_age = \"90d\"    # roll an MX key when it is this old
# min_hold = \"1h\"    # least time a new TLSA record is public before its key goes live
# poll = \"10s\"

# The daemon checks every domain as a sender would (`mxguard check -c`), every interval
# and after every change; results on the admin listener (defaults shown).
[check]
# interval = \"15m\"             # 0: off
# resolver = \"127.0.0.1:53\"    # default: the system's resolvers
# trust_anchor = \"ds.txt\"      # DS/DNSKEY lines, or \"zone-keys\"; default: the root
# ca_file = \"roots.pem\"        # default: the system's roots
";

/// `[[mx]]` tables for the MX hosts inside `domain` that no `[[mx]]` covers yet: mxguard
/// keeps their certificate and key and publishes their TLSA records (DANE). Hosts outside
/// the domain get a comment: their TLSA records belong in their own zone.
fn mx_tables(domain: &str, mx: &[String], configured: &[String], dir: &Path) -> String {
    let mut s = String::new();
    for m in mx {
        if configured.contains(m) {
            continue;
        }
        if !m.ends_with(&format!(".{domain}")) && m != domain {
            s.push_str(&format!(
                "\n# {m} is outside {domain}: DANE for it needs TLSA records in its own zone.\n"
            ));
            continue;
        }
        let file = |ext: &str| toml_str(&dir.join(format!("{m}.{ext}")).display().to_string());
        s.push_str(&format!(
            "\n# The MX certificate and key mxguard keeps for the MTA, with DANE key rollover.\n[[mx]]\nhost = {}\ncert_file = {}\nkey_file = {}\n# owner = \"postfix\"                          # who the MTA runs as\n# reload = [\"systemctl\", \"reload\", \"postfix\"]  # after new files are written\n# verify = \"{m}:25\"                # where the MTA's STARTTLS is checked\n",
            toml_str(m),
            file("crt"),
            file("key"),
        ));
    }
    s
}

/// `mxguard init`: writes a config (or adds a domain to it), a policy and a zone skeleton.
/// Returns the paths written.
pub fn init(o: &InitOptions) -> anyhow::Result<Vec<PathBuf>> {
    let domain = crate::mtasts::policy::normalize_hostname(&o.domain)
        .map_err(|e| anyhow::anyhow!("--domain: {e}"))?;
    let mut mx = Vec::new();
    for m in &o.mx {
        mx.push(
            crate::mtasts::policy::normalize_hostname(m)
                .map_err(|e| anyhow::anyhow!("--mx: {e}"))?,
        );
    }
    for r in &o.rua {
        crate::config::validate_rua(r).map_err(|e| anyhow::anyhow!("--rua: {e}"))?;
    }
    let config_path = o.dir.join("mxguard.toml");
    let policy_rel = format!("policies/{domain}.toml");
    let zone_rel = format!("zones/{domain}.zone");
    let policy_path = o.dir.join(&policy_rel);
    let zone_path = o.dir.join(&zone_rel);

    let existing = match std::fs::read_to_string(&config_path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| config_path.display().to_string()),
    };
    let mut configured_mx: Vec<String> = Vec::new();
    if let Some(text) = &existing {
        let c = Config::parse(&config_path, text)?;
        if c.domains.iter().any(|d| d.name == domain) {
            anyhow::bail!(
                "{}: domain {domain} is already configured; edit its [[domain]] table instead",
                config_path.display()
            );
        }
        configured_mx = c.mx.iter().map(|m| m.host.clone()).collect();
    }
    for p in [&policy_path, &zone_path] {
        if p.exists() && !o.force {
            anyhow::bail!(
                "{} already exists; pass --force to overwrite it",
                p.display()
            );
        }
    }

    let domain_table = format!(
        "\n[[domain]]\nname = {}\nmx = {}\npolicy = {}\nzone = {}\ntls_rpt = {}\n",
        toml_str(&domain),
        toml_list(&mx),
        toml_str(&policy_rel),
        toml_str(&zone_rel),
        toml_list(&o.rua),
    );
    let domain_table = domain_table + &mx_tables(&domain, &mx, &configured_mx, &o.mx_cert_dir);
    let config_text = match &existing {
        Some(text) => format!(
            "{}{domain_table}",
            text.trim_end_matches('\n').to_string() + "\n"
        ),
        None => {
            let mut s = String::from(
                "# mxguard configuration; see README.md for every key.\nstate_dir = \"state\"\n\n[listen]\n",
            );
            s.push_str(&format!("https = {}\n", toml_str(&o.https.to_string())));
            s.push_str(&format!("http = {}\n", toml_str(&o.http.to_string())));
            s.push_str(&format!("dns = {}\n", toml_str(&o.dns.to_string())));
            s.push_str(&format!(
                "# metrics, /healthz and the status page: keep it on loopback\nadmin = {}\n\n[acme]\n",
                toml_str(&o.admin.to_string())
            ));
            s.push_str(&format!("directory = {}\n", toml_str(&o.acme_directory)));
            if let Some(ca) = &o.acme_ca_file {
                s.push_str(&format!(
                    "ca_file = {}\n",
                    toml_str(&ca.display().to_string())
                ));
            }
            if let Some(e) = &o.email {
                s.push_str(&format!("email = {}\n", toml_str(e)));
            }
            s.push_str(DEFAULTS);
            s.push_str(&domain_table);
            s
        }
    };
    // Validate what we are about to write, so init never leaves a broken config.
    Config::parse(&config_path, &config_text)?;

    let policy_text = format!(
        "# MTA-STS policy source for {domain} (RFC 8461).\n# mode: testing (report only), enforce, or none (withdraw).\nmode = {}\n# seconds senders cache the policy (1..=31557600)\nmax_age = 604800\n# MX patterns; defaults to the domain's MX hosts from the config when absent.\n# mx = {}\n",
        toml_str(o.mode.as_str()),
        toml_list(&mx),
    );
    let mut zone_text = format!(
        "; zone of {domain}; mxguard adds _mta-sts, _smtp._tls, TLSA and DNSSEC records itself.\n$ORIGIN {domain}.\n$TTL 3600\n@\tIN\tSOA\tns1.{domain}. hostmaster.{domain}. 1 7200 3600 1209600 3600\n@\tIN\tNS\tns1.{domain}.\n"
    );
    for (i, m) in mx.iter().enumerate() {
        zone_text.push_str(&format!("@\tIN\tMX\t{} {m}.\n", 10 * (i + 1)));
    }
    zone_text.push_str(
        "; replace these documentation addresses (RFC 5737) with your servers' addresses\n",
    );
    zone_text.push_str("ns1\tIN\tA\t192.0.2.53\nmta-sts\tIN\tA\t192.0.2.80\n");
    for m in &mx {
        if let Some(label) = m.strip_suffix(&format!(".{domain}")) {
            zone_text.push_str(&format!("{label}\tIN\tA\t192.0.2.25\n"));
        }
    }

    crate::state_dir::ensure_dir(&o.dir.join("policies"))?;
    crate::state_dir::ensure_dir(&o.dir.join("zones"))?;
    let public = crate::state_dir::PUBLIC_MODE;
    crate::state_dir::write_atomic(&policy_path, policy_text.as_bytes(), public)?;
    crate::state_dir::write_atomic(&zone_path, zone_text.as_bytes(), public)?;
    crate::state_dir::write_atomic(&config_path, config_text.as_bytes(), public)?;
    Ok(vec![config_path, policy_path, zone_path])
}
