//! `mxguard check`: the posture of configured domains (with `-c`) or of any domain (as an
//! outside auditor), as a sender sees it. Builds the targets from the config, runs
//! [`crate::check`], prints text or JSON.

use std::path::PathBuf;

use crate::check::{Expect, Options, Report, ResolverSettings, Target};
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
    /// With -c, default: `[check] resolver`.
    #[arg(long)]
    pub resolver: Option<std::net::SocketAddr>,
    /// DS or DNSKEY lines that replace the root trust anchor (with -c also `zone-keys`:
    /// the keys mxguard signs its zones with). With -c, default: `[check] trust_anchor`.
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
    let (targets, run_opts) = match &opts.config {
        Some(path) => {
            let config = Config::load(path)?;
            let targets = crate::check::targets::from_config(&config, &wanted, opts.https_port)
                .map_err(UsageError)?;
            // The flags override the config's [check] resolver settings.
            let mut resolver = match (&opts.resolver, &opts.trust_anchor) {
                (Some(_), Some(_)) => ResolverSettings::default(),
                _ => {
                    crate::check::targets::resolver_settings(&config).map_err(anyhow::Error::msg)?
                }
            };
            if opts.resolver.is_some() {
                resolver.server = opts.resolver;
            }
            if let Some(t) = &opts.trust_anchor {
                if t.as_os_str() == crate::config::ZONE_KEYS {
                    resolver.trust_anchor = None;
                    resolver.trusted_keys = crate::check::targets::zone_key_anchors(&config)
                        .map_err(anyhow::Error::msg)?;
                } else {
                    resolver.trust_anchor = Some(t.clone());
                    resolver.trusted_keys.clear();
                }
            }
            let run = Options {
                resolver,
                ca_file: opts
                    .ca_file
                    .clone()
                    .or_else(|| crate::check::targets::ca_file(&config)),
                smtp_port: opts.smtp_port,
                ..Options::default()
            };
            (targets, run)
        }
        None => {
            if wanted.is_empty() {
                return Err(UsageError("give --domain (or -c CONFIG)".into()).into());
            }
            let targets = wanted
                .iter()
                .map(|d| Target {
                    domain: d.clone(),
                    expect: Expect::default(),
                    endpoints: Vec::new(),
                    https_port: opts.https_port.unwrap_or(443),
                })
                .collect();
            let run = Options {
                resolver: ResolverSettings {
                    server: opts.resolver,
                    trust_anchor: opts.trust_anchor.clone(),
                    trusted_keys: Vec::new(),
                },
                ca_file: opts.ca_file.clone(),
                smtp_port: opts.smtp_port,
                ..Options::default()
            };
            (targets, run)
        }
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
