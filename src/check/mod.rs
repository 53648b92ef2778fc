//! The posture as a sender sees it (`mxguard check`): DNSSEC-validated DNS, the MTA-STS
//! policy over HTTPS with WebPKI, STARTTLS on each MX and its chain against the TLSA records
//! and WebPKI. Every finding names the check, the host, what was seen and the fix.
//!
//! Owns: the checks and their verdicts. Reads the DNS only through [`resolve::Resolver`] (one
//! configured resolver or the system's), the network only towards the hosts of the domain
//! checked. Must not touch the state directory, the zone, certificates or the rollover: it
//! observes, it decides nothing (the daemon tells the monitor when something changed).
//!
//! - [`resolve`]: the validating resolver and the trust anchors.
//! - [`pki`]: WebPKI roots, chain verification, the policy fetch.
//! - [`tlsa`]: matching a chain against TLSA records (pure).
//! - [`domain`]: the checks of a domain; [`mx`]: the checks of one MX host.
//! - [`report`]: findings, verdicts, text and JSON (pure).
//! - [`targets`]: what a configuration promises, as targets and resolver settings.
//! - [`monitor`]: the daemon's periodic run, its transitions, metrics and alerts.

pub mod domain;
pub mod monitor;
pub mod mx;
pub mod pki;
pub mod policy;
pub mod report;
pub mod resolve;
pub mod targets;
pub mod tlsa;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use report::{DomainReport, Finding, Report, Status, Verdict};
pub use resolve::{ResolverSettings, SetupError};

/// What the domain's owner configured, so that its absence is a failure. An outside audit
/// expects nothing: absent protections are reported, not failed.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub mta_sts: bool,
    pub tls_rpt: bool,
    /// The zone is signed and its DS registered.
    pub dnssec: bool,
    /// MX hosts that must have DANE.
    pub dane: Vec<String>,
    pub caa: Option<CaaExpect>,
}

/// The CAA a configured ACME CA and account need.
#[derive(Debug, Clone)]
pub struct CaaExpect {
    /// The CA's issuer domain, e.g. `letsencrypt.org`.
    pub issuer: String,
    /// The ACME account URL, once it exists.
    pub account: Option<String>,
    /// The challenge types in use.
    pub methods: Vec<String>,
}

/// One domain to check.
#[derive(Debug, Clone)]
pub struct Target {
    /// Lowercase, without the trailing dot.
    pub domain: String,
    pub expect: Expect,
    /// Where to connect for an MX host instead of its address and port 25 (the config's
    /// `[[mx]] verify`): a few per domain at most, so a list (a map's node would keep room
    /// for eleven, per domain).
    pub endpoints: Vec<(String, SocketAddr)>,
    /// The port of `mta-sts.<domain>` (443 for senders; the config's `listen.https` port).
    pub https_port: u16,
}

/// How a run talks to the world.
#[derive(Debug, Clone)]
pub struct Options {
    pub resolver: ResolverSettings,
    /// The only root trusted for WebPKI (labs); default: the system's store.
    pub ca_file: Option<PathBuf>,
    /// SMTP port of MX hosts without an endpoint (25 for senders).
    pub smtp_port: u16,
    /// Each network step.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            resolver: ResolverSettings::default(),
            ca_file: None,
            smtp_port: 25,
            timeout: Duration::from_secs(15),
        }
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Resolver(#[from] SetupError),
    #[error("WebPKI roots: {0}")]
    Roots(String),
}

/// Domains checked at once.
const PARALLEL: usize = 8;

/// Checks every target; the report keeps their order.
pub async fn run(targets: Vec<Target>, opts: &Options) -> Result<Report, RunError> {
    let resolver = Arc::new(resolve::Resolver::new(&opts.resolver).await?);
    let roots = pki::roots(opts.ca_file.as_deref()).map_err(RunError::Roots)?;
    let env = Arc::new(domain::Env {
        resolver,
        roots,
        opts: opts.clone(),
    });
    let limit = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    let n = targets.len();
    for (i, t) in targets.into_iter().enumerate() {
        let (env, limit) = (env.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, domain::check(&env, &t).await)
        });
    }
    let mut out: Vec<Option<DomainReport>> = vec![None; n];
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((i, d)) => out[i] = Some(d),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    Ok(Report::new(out.into_iter().flatten().collect()))
}
