//! `mxguard check`: the posture of configured domains (with `-c`) or of any domain (as an
//! outside auditor), as a sender sees it. Builds the targets from the config, runs
//! [`crate::check`], prints text or JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::check::{CaaExpect, Expect, Options, Report, Target};
use crate::config::Config;

/// The arguments of `mxguard check`.
#[derive(Debug, clap::Args)]
pub struct CheckOptions {
    /// The config whose domains to check (every one, or the --domain ones). Without it, each
    /// --domain is checked as an outside auditor would: nothing is expected.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// A domain to check (repeatable).
    #[arg(long = "domain")]
    pub domains: Vec<String>,
    /// Send every DNS query to this server (ADDR:PORT) instead of the system's resolvers.
    #[arg(long)]
    pub resolver: Option<std::net::SocketAddr>,
    /// DS or DNSKEY lines that replace the root trust anchor.
    #[arg(long)]
    pub trust_anchor: Option<PathBuf>,
    /// The only root CA trusted for WebPKI (labs); default: the system's store.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Port of mta-sts.<domain> (default 443; with -c: the port of listen.https).
    #[arg(long)]
    pub https_port: Option<u16>,
    /// SMTP port of MX hosts without a `verify` address (default 25).
    #[arg(long, default_value_t = 25)]
    pub smtp_port: u16,
    /// The report as a JSON document.
    #[arg(long)]
    pub json: bool,
}

/// A usage error: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs the checks and prints the report; `Ok(false)` when a check failed (exit 1).
pub async fn check(opts: &CheckOptions) -> anyhow::Result<bool> {
    let wanted: Vec<String> = opts
        .domains
        .iter()
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    let targets = match &opts.config {
        Some(path) => config_targets(path, &wanted, opts.https_port)?,
        None => {
            if wanted.is_empty() {
                return Err(UsageError("give --domain (or -c CONFIG)".into()).into());
            }
            wanted
                .iter()
                .map(|d| Target {
                    domain: d.clone(),
                    expect: Expect::default(),
                    endpoints: BTreeMap::new(),
                    https_port: opts.https_port.unwrap_or(443),
                })
                .collect()
        }
    };
    let run_opts = Options {
        resolver: crate::check::ResolverSettings {
            server: opts.resolver,
            trust_anchor: opts.trust_anchor.clone(),
        },
        ca_file: opts.ca_file.clone(),
        smtp_port: opts.smtp_port,
        ..Options::default()
    };
    let report: Report = crate::check::run(targets, &run_opts).await?;
    let out = if opts.json {
        let mut s = serde_json::to_string_pretty(&report)?;
        s.push('\n');
        s
    } else {
        report.render_text()
    };
    print!("{out}");
    Ok(report.ok)
}

/// One target per configured domain (or the wanted ones), with what the config promises.
fn config_targets(
    path: &Path,
    wanted: &[String],
    https_port: Option<u16>,
) -> anyhow::Result<Vec<Target>> {
    let config = Config::load(path)?;
    for w in wanted {
        if !config.domains.iter().any(|d| &d.name == w) {
            return Err(UsageError(format!("{w} is not a domain of {}", path.display())).into());
        }
    }
    let account = crate::acme::client::account_url(&config.state_dir);
    let mut methods: Vec<String> = config
        .cert_specs()
        .iter()
        .map(|s| s.challenge.as_str().to_string())
        .collect();
    methods.sort();
    methods.dedup();
    Ok(config
        .domains
        .iter()
        .filter(|d| wanted.is_empty() || wanted.contains(&d.name))
        .map(|d| {
            let mx: Vec<_> = config
                .mx
                .iter()
                .filter(|m| d.mx.contains(&m.host))
                .collect();
            Target {
                domain: d.name.clone(),
                expect: Expect {
                    mta_sts: true,
                    tls_rpt: !d.tls_rpt.is_empty(),
                    dnssec: config.listen.dns.is_some(),
                    dane: if config.listen.dns.is_some() {
                        mx.iter().map(|m| m.host.clone()).collect()
                    } else {
                        Vec::new()
                    },
                    caa: config.acme.caa_issuer.clone().map(|issuer| CaaExpect {
                        issuer,
                        account: account.clone(),
                        methods: methods.clone(),
                    }),
                },
                endpoints: mx
                    .iter()
                    .filter_map(|m| m.verify.map(|a| (m.host.clone(), a)))
                    .collect(),
                https_port: https_port.unwrap_or(config.listen.https.port()),
            }
        })
        .collect())
}
