//! The daemon and the CLI commands: loads the configuration, owns the state directory, starts
//! the listeners, reloads on SIGHUP and shuts down on SIGTERM/SIGINT.
//!
//! This is the only place that decides *when* served content changes: a reload builds the
//! complete new snapshot first, swaps the HTTPS policies, and only then publishes the ids
//! that announce them. Errors here are `anyhow` with context; [`ConfigError`]s pass through
//! so `main` can exit with status 2.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::acme::{AcmeSettings, Challenge, Responder};
use crate::certs::{Backend, CertSpec, Manager};
use crate::config::{AcmeDirectory, Config, ConfigError, LoadedPolicies};
use crate::dns::{DnsServer, DnsSockets};
use crate::http::{self, Served};
use crate::policy::Published;
use crate::publish::records::{self as rec, BadName};
use crate::publish::{self, Change, DomainZone, RecordSink, RrsetKey, SignedZonePublisher};
use crate::store::StateDir;
use crate::tls::{self, CertResolver, LocalCa};

/// The TLS-RPT database in the state directory.
pub const REPORTS_DB: &str = "reports.sqlite";
/// How often firing alerts are re-evaluated (so they can resolve).
const ALERT_RECHECK: Duration = Duration::from_secs(300);
/// How often old reports are deleted.
const RETENTION_EVERY: Duration = Duration::from_secs(6 * 3600);

/// How long in-flight requests may finish after SIGTERM.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// Loads config and policies, printing warnings; every problem becomes one `ConfigError`.
pub fn load(path: &Path) -> Result<(Config, LoadedPolicies), ConfigError> {
    let config = Config::load(path)?;
    let loaded = config.load_policies()?;
    Ok((config, loaded))
}

/// The zones of the configured domains.
fn domain_zones(config: &Config) -> Vec<DomainZone> {
    config
        .domains
        .iter()
        .map(|d| DomainZone {
            domain: d.name.clone(),
            zone_file: d.zone_file.clone(),
        })
        .collect()
}

/// The ACME account URL, once the account exists.
pub(crate) fn account_url(state_root: &Path) -> Option<String> {
    std::fs::read(state_root.join(crate::acme::ACCOUNT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["credentials"]["id"].as_str().map(str::to_string))
}

/// The CAA records of `config` (none unless `acme.caa`): the issuer, the challenge types in
/// use and, once the account exists, its URL (RFC 8657).
pub(crate) fn caa_policy(config: &Config) -> rec::CaaPolicy {
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
        apexes: config.domains.iter().map(|d| d.name.clone()).collect(),
        ttl: config.records.ttl,
        what: format!("{}: acme.caa", config.file.display()),
    }
}

/// The records the daemon itself owns, from config, policies and the state directory:
/// policy ids, TLS-RPT records, CAA, DANE-TA, and the `3 1 1` records as the state directory
/// has them (the rollover and external-certificate passes keep those current afterwards).
fn base_changes(
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
    out.extend(caa_policy(config).changes(account_url(state_root).as_deref())?);
    // TLSA for every MX whose key mxguard keeps: published from the moment the key exists,
    // before any certificate for it is ordered.
    for m in &config.mx {
        let what = format!("{cfg}: TLSA of MX {}", m.host);
        let digests: Vec<Vec<u8>> = if let Some(file) = &m.external {
            let st = crate::roll::load_external(state_root, &m.host);
            let mut keys = crate::roll::external_records(
                &st,
                &m.prepublish,
                crate::certs::unix(SystemTime::now()),
            );
            if let Ok(k) = crate::roll::key_of_cert_file(file)
                && !keys.contains(&k)
            {
                keys.push(k);
            }
            keys.iter()
                .filter_map(|k| crate::tlsa::hex_decode(k))
                .collect()
        } else {
            crate::roll::tlsa_digests(state_root, &m.host, m.rollover).unwrap_or_default()
        };
        if !digests.is_empty() {
            out.push(rec::dane_ee(&m.host, port, &digests, tlsa_ttl, what)?);
        }
        let mut ta = Vec::new();
        for f in &m.dane_ta {
            match crate::roll::key_of_cert_file(f) {
                Ok(k) => ta.extend(crate::tlsa::hex_decode(&k)),
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
        if let Some(digests) = crate::roll::tlsa_digests(state_root, &host, false) {
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

fn bad_name(config: &Config, e: BadName) -> ConfigError {
    ConfigError {
        problems: vec![config.problem("domain", e.to_string())],
    }
}

fn zone_problems(e: publish::signed::LoadError) -> ConfigError {
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
pub fn load_all(path: &Path) -> Result<(Config, LoadedPolicies), ConfigError> {
    let (config, loaded) = load(path)?;
    let mut problems = Vec::new();
    match base_changes(&config, &loaded, &config.state_dir) {
        Ok(changes) => {
            if let Err(e) = publish::signed::check(&domain_zones(&config), &changes) {
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
    if problems.is_empty() {
        Ok((config, loaded))
    } else {
        Err(ConfigError { problems })
    }
}

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

/// Answers ACME challenges from the daemon's own listeners.
struct DaemonResponder {
    served: Arc<Served>,
    resolver: Arc<CertResolver>,
    sink: Option<Arc<dyn RecordSink>>,
    /// Pending dns-01 values by host: the `_acme-challenge` RRset is their union.
    dns01: tokio::sync::Mutex<BTreeMap<String, Vec<String>>>,
}

/// How long dns-01 waits for every secondary to serve a challenge.
const DNS01_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(120);

impl Responder for DaemonResponder {
    async fn publish(&self, ch: &Challenge) -> Result<(), String> {
        match ch {
            Challenge::Http01 {
                token,
                key_authorization,
                ..
            } => {
                let (token, ka) = (token.clone(), Arc::<str>::from(key_authorization.as_str()));
                self.served.challenges.rcu(|old| {
                    let mut m = HashMap::clone(old);
                    m.insert(token.clone(), ka.clone());
                    m
                });
                Ok(())
            }
            Challenge::TlsAlpn01 { host, digest } => {
                let ck = crate::acme::tls_alpn_certificate(host, digest)?;
                self.resolver.set_alpn_challenge(host, Some(ck));
                Ok(())
            }
            Challenge::Dns01 { host, value } => {
                let Some(sink) = &self.sink else {
                    return Err(format!(
                        "dns-01 for {host} needs mxguard's DNS (listen.dns); use http-01 or tls-alpn-01"
                    ));
                };
                let change = {
                    let mut pending = self.dns01.lock().await;
                    let values = pending.entry(host.clone()).or_default();
                    if !values.contains(value) {
                        values.push(value.clone());
                    }
                    rec::acme_challenge(host, values).map_err(|e| e.to_string())?
                };
                let applied = sink.apply(vec![change]).await.map_err(|e| e.to_string())?;
                publish::wait_served(sink.as_ref(), &applied.serials, DNS01_PROPAGATION_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    async fn withdraw(&self, ch: &Challenge) {
        match ch {
            Challenge::Http01 { token, .. } => {
                self.served.challenges.rcu(|old| {
                    let mut m = HashMap::clone(old);
                    m.remove(token);
                    m
                });
            }
            Challenge::TlsAlpn01 { host, .. } => self.resolver.set_alpn_challenge(host, None),
            Challenge::Dns01 { host, value } => {
                if let Some(sink) = &self.sink {
                    let change = {
                        let mut pending = self.dns01.lock().await;
                        let values = pending.entry(host.clone()).or_default();
                        values.retain(|x| x != value);
                        let change = rec::acme_challenge(host, values);
                        if values.is_empty() {
                            pending.remove(host);
                        }
                        change
                    };
                    let r = match change {
                        Ok(c) => sink
                            .apply(vec![c])
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = r {
                        tracing::warn!(host = %host, err = %e, "could not withdraw dns-01 challenge");
                    }
                }
            }
        }
    }
}

/// `mxguard ds`: the DS and DNSKEY records to give the registrar (the key is created if it
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
        let key = crate::zone::keys::load_or_generate(
            &config.state_dir.join("keys"),
            &origin,
            config.dnssec.algorithm,
        )?;
        let r = key
            .registrar_records()
            .map_err(|e| anyhow::anyhow!(e.to_string()))?;
        println!(
            "; {} — key tag {}, algorithm {}",
            d.name, r.key_tag, r.algorithm
        );
        println!("{}", r.ds);
        println!("{}", r.dnskey);
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
    }
    for r in crate::certs::report(&config.state_dir, &config.cert_specs(), SystemTime::now()) {
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
        anyhow::bail!("a secondary is behind or unreachable");
    }
    Ok(())
}

/// `mxguard reports import PATH…`: stores the reports found in .eml, mbox, Maildir and
/// report files; idempotent. Returns an error if any item failed (not for skipped ones).
pub async fn import_reports(path: &Path, paths: &[PathBuf], json: bool) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    crate::store::ensure_dir(&config.state_dir)?;
    let db = config.state_dir.join(REPORTS_DB);
    let handle = crate::reports::ReportsHandle::open(&db)
        .with_context(|| format!("opening the report store {}", db.display()))?;
    let intake = crate::intake::Intake::new(handle, config.tlsrpt.intake.clone());
    let summary = crate::import::import(&intake, paths).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.render());
    }
    if summary.failed() > 0 {
        anyhow::bail!("{} item(s) could not be imported", summary.failed());
    }
    Ok(())
}

/// Parses `7d`, `24h`, `90m`, `3600s` or plain seconds.
pub fn parse_since(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("--since {text:?}: expected e.g. 7d, 24h, 90m"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        "w" => n * 7 * 86_400,
        _ => anyhow::bail!("--since {text:?}: unit must be s, m, h, d or w"),
    };
    Ok(Duration::from_secs(secs))
}

fn open_reports(config: &Config) -> anyhow::Result<crate::reports::ReportStore> {
    let db = config.state_dir.join(REPORTS_DB);
    if !db.exists() {
        anyhow::bail!(
            "no report database at {} yet: start the daemon with [tlsrpt] enabled first",
            db.display()
        );
    }
    crate::reports::ReportStore::open_read_only(&db)
        .with_context(|| format!("opening {}", db.display()))
}

/// `mxguard reports`: summary per domain and policy type.
pub fn print_reports(
    path: &Path,
    domain: Option<&str>,
    since: &str,
    json: bool,
) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let since = time::OffsetDateTime::now_utc() - parse_since(since)?;
    let store = open_reports(&config)?;
    let domain = domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase());
    let summary = store.summary(domain.as_deref(), since)?;
    if json {
        println!("{}", crate::tlsrpt::summary::render_json(&summary));
    } else {
        print!("{}", crate::tlsrpt::summary::render_text(&summary));
    }
    Ok(())
}

/// `mxguard reports show ID`: one stored report with its raw JSON.
pub fn print_report(path: &Path, id: i64) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let store = open_reports(&config)?;
    match store.show(id)? {
        Some(r) => {
            println!("{}", serde_json::to_string_pretty(&r)?);
            println!("-- raw report as received --");
            println!("{}", String::from_utf8_lossy(&r.raw_json));
            Ok(())
        }
        None => anyhow::bail!("no report with id {id}"),
    }
}

/// `mxguard tlsa`: per MX the published records, the roll state and its next deadline.
pub fn print_tlsa(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let timing = config.roll_timing();
    if config.mx.is_empty() {
        println!("no [[mx]] configured: mxguard manages no MX keys");
    }
    for m in &config.mx {
        let owner = format!("_{}._tcp.{}.", config.records.tlsa_port, m.host);
        println!("{}", m.host);
        if let Some(file) = &m.external {
            let st = crate::roll::load_external(&config.state_dir, &m.host);
            let now = crate::certs::unix(SystemTime::now());
            for k in crate::roll::external_records(&st, &m.prepublish, now) {
                let what = if st.live.as_ref() == Some(&k) {
                    "live"
                } else if m.prepublish.contains(&k) {
                    "pre-published"
                } else {
                    "retiring"
                };
                println!("  {owner} IN TLSA 3 1 1 {k}   ; {what}");
            }
            println!("  external certificate: {}", file.display());
            continue;
        }
        match (m.rollover, crate::roll::load(&config.state_dir, &m.host)) {
            (true, Some(s)) => {
                println!("  {owner} IN TLSA 3 1 1 {}   ; current", s.current);
                if !s.next.is_empty() && s.next != s.current {
                    println!("  {owner} IN TLSA 3 1 1 {}   ; next", s.next);
                }
                let now = crate::certs::unix(SystemTime::now());
                let phase = match &s.phase {
                    crate::rollover::Phase::Propagating {
                        serial,
                        seen_everywhere_at,
                    } => match seen_everywhere_at {
                        None => format!(
                            "propagating: waiting until every server serves serial {serial}"
                        ),
                        Some(at) => format!(
                            "propagating: serial {serial} everywhere; stable in {} s",
                            (at + timing.hold).saturating_sub(now)
                        ),
                    },
                    crate::rollover::Phase::Stable => {
                        if s.requested {
                            "stable; roll requested".to_string()
                        } else {
                            format!(
                                "stable; next roll in {} s (key age)",
                                (s.current_since + timing.key_age).saturating_sub(now)
                            )
                        }
                    }
                    other => format!("rolling: {other:?}").to_lowercase(),
                };
                println!("  state: {phase}");
                if let Some(e) = &s.last_error {
                    println!("  last error: {e} (failures: {})", s.failures);
                }
            }
            (true, None) => println!("  rollover not started yet (the daemon starts it)"),
            (false, _) => {
                for d in
                    crate::roll::tlsa_digests(&config.state_dir, &m.host, false).unwrap_or_default()
                {
                    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
                    println!("  {owner} IN TLSA 3 1 1 {hex}   ; rollover off");
                }
            }
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
        crate::roll::request_rotation(&config.state_dir, &m.host)
            .map_err(|e| anyhow::anyhow!(e))?;
        println!(
            "roll of {} requested; the daemon starts it once the next key's record is public everywhere (see `mxguard tlsa`)",
            m.host
        );
    }
    Ok(())
}

/// `mxguard certs`: the stored state of every certificate.
pub fn print_certs(path: &Path, json: bool) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let reports = crate::certs::report(&config.state_dir, &config.cert_specs(), SystemTime::now());
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

/// The running daemon's view of what it publishes.
struct Daemon {
    config: Config,
    policies: HashMap<String, Published>,
    served: Arc<Served>,
    resolver: Arc<CertResolver>,
    local_ca: Arc<LocalCa>,
    cert_specs: Arc<ArcSwap<Vec<CertSpec>>>,
    cert_wake: Arc<Notify>,
    zones: Option<Arc<SignedZonePublisher>>,
    /// The records the daemon set last (so a reload withdraws what the config no longer has).
    base_keys: std::collections::BTreeSet<RrsetKey>,
    /// False until the first apply: zone files are (re)read only from the second on.
    zones_reloadable: bool,
    caa: Arc<ArcSwap<rec::CaaPolicy>>,
    state: Arc<StateDir>,
}

impl Daemon {
    /// Makes `loaded` live: certificates for new hosts first, then the policy texts, then
    /// (once served) the ids that announce them.
    async fn apply(&mut self, config: Config, loaded: LoadedPolicies) -> anyhow::Result<()> {
        let now = SystemTime::now();
        let hosts: Vec<String> = config.domains.iter().map(|d| d.mta_sts_host()).collect();
        for host in &hosts {
            if self.resolver.get(host).is_none() {
                let ck = self
                    .local_ca
                    .issue(host, now)
                    .with_context(|| format!("issuing local certificate for {host}"))?;
                self.resolver.set(host, ck);
                tracing::info!(
                    host = %host,
                    "issued certificate from the local CA (not publicly trusted)"
                );
            }
        }
        // 1. Serve the new policy texts.
        let texts: HashMap<String, Arc<str>> = config
            .domains
            .iter()
            .map(|d| {
                (
                    d.mta_sts_host(),
                    Arc::<str>::from(loaded.policies[&d.name].text.as_str()),
                )
            })
            .collect();
        self.served.policies.store(Arc::new(texts));
        self.resolver.retain(&hosts);
        // 2. Announce them: the ids below are published only after the texts are served.
        for d in &config.domains {
            let new = &loaded.policies[&d.name];
            match self.policies.get(&d.name) {
                Some(old) if old.id == new.id => {}
                Some(old) => tracing::info!(
                    domain = %d.name, old_id = %old.id, id = %new.id,
                    "policy changed; new id published"
                ),
                None => tracing::info!(domain = %d.name, id = %new.id, "policy published"),
            }
        }
        if let Some(zones) = &self.zones {
            let mut changes = base_changes(&config, &loaded, self.state.root())?;
            let keys: std::collections::BTreeSet<RrsetKey> =
                changes.iter().map(|c| c.key().clone()).collect();
            changes.extend(
                self.base_keys
                    .difference(&keys)
                    .map(|k| Change::Withdraw(k.clone())),
            );
            let applied = if !self.zones_reloadable {
                // At start the publisher has just loaded the zone files.
                self.zones_reloadable = true;
                zones.apply(changes).await?
            } else {
                zones
                    .reload(config.dnssec.clone(), domain_zones(&config), changes)
                    .await?
            };
            if applied.changed {
                tracing::info!(zones = applied.serials.len(), "zones published");
            }
            self.base_keys = keys;
        }
        self.caa.store(Arc::new(caa_policy(&config)));
        self.policies = loaded.policies.into_iter().collect();
        let specs = config.cert_specs();
        if **self.cert_specs.load() != specs {
            self.cert_specs.store(Arc::new(specs));
            self.cert_wake.notify_one();
        }
        self.config = config;
        Ok(())
    }

    async fn reload(&mut self) {
        let path = self.config.file.clone();
        match load_all(&path) {
            Ok((config, loaded)) => {
                if config.listen.https != self.config.listen.https
                    || config.listen.http != self.config.listen.http
                    || config.listen.dns != self.config.listen.dns
                    || config.state_dir != self.config.state_dir
                {
                    tracing::warn!("listen addresses and state_dir change only on restart");
                }
                if config.acme.directory != self.config.acme.directory
                    || config.acme.ca_file != self.config.acme.ca_file
                    || config.acme.email != self.config.acme.email
                    || config.acme.eab != self.config.acme.eab
                    || config.roll_timing() != self.config.roll_timing()
                {
                    tracing::warn!(
                        "[acme] account settings and [rollover] timing change only on restart"
                    );
                }
                for w in &loaded.warnings {
                    tracing::warn!("{w}");
                }
                match self.apply(config, loaded).await {
                    Ok(()) => tracing::info!(config = %path.display(), "reloaded"),
                    Err(e) => tracing::error!(
                        err = format!("{e:#}"),
                        "reload failed; keeping the previous configuration"
                    ),
                }
            }
            Err(e) => {
                for p in &e.problems {
                    tracing::error!(problem = %p, "reload refused; still serving the previous configuration");
                }
            }
        }
    }
}

async fn bind_tcp(config: &Config, key: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        ConfigError {
            problems: vec![config.problem(
                key,
                format!("cannot listen on {addr}: {e} (is another server using it? choose another address or port)"),
            )],
        }
        .into()
    })
}

/// Where the daemon actually listens (ports resolved), written to `<state_dir>/listening`.
fn listening_note(https: SocketAddr, http: Option<SocketAddr>, dns: Option<SocketAddr>) -> String {
    let mut s = format!("https={https}\n");
    if let Some(h) = http {
        s.push_str(&format!("http={h}\n"));
    }
    if let Some(d) = dns {
        s.push_str(&format!("dns={d}\n"));
    }
    s
}

/// Spawns a task the daemon cannot run without: when it ends before shutdown, `died` is told
/// its name, and the daemon exits with status 1 (so systemd restarts it).
fn spawn_critical(
    tracker: &TaskTracker,
    died: &tokio::sync::mpsc::UnboundedSender<&'static str>,
    shutdown: &CancellationToken,
    name: &'static str,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (died, shutdown) = (died.clone(), shutdown.clone());
    tracker.spawn(async move {
        task.await;
        if !shutdown.is_cancelled() {
            let _ = died.send(name);
        }
    });
}

/// `mxguard run`: the daemon, until SIGTERM or SIGINT, or until a critical task dies (then
/// an error: exit status 1).
pub async fn run(path: &Path) -> anyhow::Result<()> {
    let (config, loaded) = load_all(path)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let state = Arc::new(StateDir::open_locked(&config.state_dir)?);
    let local_ca = Arc::new(LocalCa::load_or_create(&state).context("local CA")?);
    tracing::info!(
        ca = %state.path(tls::LOCAL_CA_CERT).display(),
        "local CA ready; its certificates are not publicly trusted"
    );

    let https_listener = bind_tcp(&config, "listen.https", config.listen.https).await?;
    let http_listener = match config.listen.http {
        Some(a) => Some(bind_tcp(&config, "listen.http", a).await?),
        None => None,
    };
    // Metrics of the TLS-RPT intake and/or of the served zones.
    let admin_listener = match config.listen.admin {
        Some(a) if config.tlsrpt.enabled || config.listen.dns.is_some() => {
            Some(bind_tcp(&config, "listen.admin", a).await?)
        }
        _ => None,
    };
    let smtp_listener = match &config.tlsrpt.smtp {
        Some(smtp) if config.tlsrpt.enabled => {
            Some(bind_tcp(&config, "tlsrpt.smtp.listen", smtp.listen).await?)
        }
        _ => None,
    };
    let intake = if config.tlsrpt.enabled {
        let db = state.path(REPORTS_DB);
        let handle = crate::reports::ReportsHandle::open(&db)
            .with_context(|| format!("opening the report store {}", db.display()))?;
        let alerter = Arc::new(
            crate::alerts::Alerter::new(config.tlsrpt.alerts.clone(), handle.clone()).map_err(
                |e| ConfigError {
                    problems: vec![config.problem("tlsrpt.alerts", e.to_string())],
                },
            )?,
        );
        Some((handle, alerter))
    } else {
        None
    };
    let dns_sockets = match config.listen.dns {
        Some(a) => Some(DnsSockets::bind(&[a]).await.map_err(|e| ConfigError {
            problems: vec![config.problem(
                "listen.dns",
                format!("cannot listen on {a} (udp+tcp): {e} (is another DNS server using it? choose another address or port)"),
            )],
        })?),
        None => None,
    };
    let https_addr = https_listener.local_addr()?;
    let http_addr = http_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    crate::store::write_atomic(
        &state.path("listening"),
        listening_note(https_addr, http_addr, config.listen.dns).as_bytes(),
        crate::store::PUBLIC_MODE,
    )?;

    let served = Arc::new(Served::default());
    let resolver = Arc::new(CertResolver::default());
    let cert_specs = Arc::new(ArcSwap::from_pointee(Vec::new()));
    let cert_wake = Arc::new(Notify::new());
    let caa = Arc::new(ArcSwap::from_pointee(caa_policy(&config)));
    let backend = match &config.acme.directory {
        AcmeDirectory::Local => Backend::Local(local_ca.clone()),
        AcmeDirectory::Url(url) => Backend::acme(AcmeSettings {
            directory: url.clone(),
            ca_file: config.acme.ca_file.clone(),
            email: config.acme.email.clone(),
            eab: config.acme.eab.clone(),
            profile: config.acme.profile.clone(),
        }),
    };
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (died_tx, mut died) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let intake = match intake {
        Some((handle, alerter)) => {
            let a = alerter.clone();
            let tok = shutdown.clone();
            tracker.spawn(async move { a.run(tok, ALERT_RECHECK).await });
            let (h, tok) = (handle.clone(), shutdown.clone());
            spawn_critical(&tracker, &died_tx, &shutdown, "report writer", async move {
                tokio::select! {
                    _ = h.writer_stopped() => {}
                    _ = tok.cancelled() => {}
                }
            });
            tracker.spawn(crate::reports::run_retention(
                handle.clone(),
                config.tlsrpt.retention_days,
                RETENTION_EVERY,
                shutdown.clone(),
            ));
            Some(Arc::new(
                crate::intake::Intake::new(handle, config.tlsrpt.intake.clone())
                    .with_alerter(alerter),
            ))
        }
        None => None,
    };

    // MX keys exist before the zone is first built, so their TLSA records are published
    // before any certificate for them is ordered.
    for m in config.mx.iter().filter(|m| m.external.is_none()) {
        crate::certs::load_or_create_key(&state, &m.host)?;
        if !m.dane_ta.is_empty() {
            tracing::warn!(mx = %m.host, "DANE-TA (2 1 1) pins the CA's intermediates, which CAs rotate: list every current intermediate and keep the list up to date");
        }
    }
    for d in config.domains.iter().filter(|d| d.tlsa_https) {
        crate::certs::load_or_create_key(&state, &d.mta_sts_host())?;
    }
    let mut dns_task = None;
    let zones = match dns_sockets {
        Some(sockets) => {
            let mut secondaries = Vec::new();
            for (i, s) in config.secondaries.iter().enumerate() {
                secondaries.push(s.resolve().map_err(|e| ConfigError {
                    problems: vec![config.problem(format!("secondary[{i}]"), e.to_string())],
                })?);
            }
            let server = Arc::new(
                DnsServer::new(Arc::new(ArcSwap::from_pointee(crate::zone::Zones::new())))
                    .with_response_cache(config.dns.response_cache),
            );
            let changes =
                base_changes(&config, &loaded, state.root()).map_err(|e| bad_name(&config, e))?;
            let publisher = Arc::new(
                SignedZonePublisher::start(
                    state.clone(),
                    server.clone(),
                    secondaries.clone(),
                    config.dnssec.clone(),
                    domain_zones(&config),
                    changes,
                )
                .await
                .map_err(zone_problems)?,
            );
            dns_task = Some((server, sockets, secondaries));
            Some(publisher)
        }
        None => None,
    };

    let mut daemon = Daemon {
        config: config.clone(),
        policies: HashMap::new(),
        served: served.clone(),
        resolver: resolver.clone(),
        local_ca,
        cert_specs: cert_specs.clone(),
        cert_wake: cert_wake.clone(),
        zones: zones.clone(),
        base_keys: Default::default(),
        zones_reloadable: false,
        caa: caa.clone(),
        state: state.clone(),
    };
    daemon.apply(config, loaded).await?;
    let manager = Manager {
        state: state.clone(),
        backend,
        resolver: resolver.clone(),
        responder: DaemonResponder {
            served: served.clone(),
            resolver: resolver.clone(),
            sink: zones.clone().map(|z| z as Arc<dyn RecordSink>),
            dns01: Default::default(),
        },
        specs: cert_specs,
        wake: cert_wake,
        backoff: daemon.config.acme.backoff,
        sink: daemon.zones.clone().map(|z| z as Arc<dyn RecordSink>),
        caa,
        caa_account: Default::default(),
        tlsa_ttl: daemon.config.records.tlsa_ttl,
        roll_timing: daemon.config.roll_timing(),
        roll_poll: daemon.config.rollover.poll,
        tlsa_port: daemon.config.records.tlsa_port,
    };
    let mut https_router = http::https_router(served.clone());
    if let Some(intake) = &intake {
        https_router = https_router.merge(crate::intake::router(intake.clone()));
    }
    if let Some(l) = admin_listener {
        let state = http::AdminState {
            intake: intake.clone(),
            zones: dns_task
                .as_ref()
                .map(|(server, _, _)| server.zones().clone()),
        };
        tracker.spawn(http::serve(
            l,
            None,
            http::admin_router(state),
            http::Limits::default(),
            shutdown.clone(),
            SHUTDOWN_DRAIN,
        ));
    }
    if let (Some(l), Some(intake), Some(settings)) =
        (smtp_listener, &intake, daemon.config.tlsrpt.smtp.clone())
    {
        tracker.spawn(crate::smtp::serve(
            l,
            settings,
            Some(tls::smtp_server_config(resolver.clone())),
            intake.clone(),
            shutdown.clone(),
        ));
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(resolver.clone()));
    spawn_critical(
        &tracker,
        &died_tx,
        &shutdown,
        "https listener",
        http::serve(
            https_listener,
            Some(acceptor),
            https_router,
            http::Limits::default(),
            shutdown.clone(),
            SHUTDOWN_DRAIN,
        ),
    );
    if let Some(l) = http_listener {
        tracker.spawn(http::serve(
            l,
            None,
            http::http_router(served.clone()),
            http::Limits::default(),
            shutdown.clone(),
            SHUTDOWN_DRAIN,
        ));
    }
    // DNS last: the ids it announces refer to policy texts the HTTPS listener already serves.
    if let (Some((server, sockets, secondaries)), Some(publisher)) = (dns_task, &daemon.zones) {
        let tok = shutdown.clone();
        spawn_critical(&tracker, &died_tx, &shutdown, "dns server", async move {
            if let Err(e) = server.run(sockets, secondaries, tok).await {
                tracing::error!(err = %e, "dns server failed");
            }
        });
        tracker.spawn(publisher.clone().run_resigner(shutdown.clone()));
    }
    // Certificates last: every challenge responder (HTTP, HTTPS, DNS) is up.
    spawn_critical(
        &tracker,
        &died_tx,
        &shutdown,
        "certificate manager",
        manager.run(shutdown.clone()),
    );
    tracker.close();
    tracing::info!(https = %https_addr, http = ?http_addr, "mxguard running");

    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut dead = None;
    loop {
        tokio::select! {
            _ = hup.recv() => daemon.reload().await,
            _ = term.recv() => break,
            _ = int.recv() => break,
            Some(name) = died.recv() => {
                tracing::error!(task = name, "a critical task stopped; exiting so that the service manager restarts mxguard");
                dead = Some(name);
                break;
            }
        }
    }
    tracing::info!("shutting down");
    shutdown.cancel();
    if tokio::time::timeout(SHUTDOWN_DRAIN + Duration::from_secs(2), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("tasks did not stop in time");
    }
    drop(state);
    match dead {
        Some(name) => anyhow::bail!("the {name} stopped unexpectedly"),
        None => Ok(()),
    }
}

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
    pub mode: crate::policy::Mode,
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

/// `mxguard init`: writes a config (or adds a domain to it), a policy and a zone skeleton.
/// Returns the paths written.
pub fn init(o: &InitOptions) -> anyhow::Result<Vec<PathBuf>> {
    let domain = crate::policy::normalize_hostname(&o.domain)
        .map_err(|e| anyhow::anyhow!("--domain: {e}"))?;
    let mut mx = Vec::new();
    for m in &o.mx {
        mx.push(crate::policy::normalize_hostname(m).map_err(|e| anyhow::anyhow!("--mx: {e}"))?);
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
    if let Some(text) = &existing {
        let c = Config::parse(&config_path, text)?;
        if c.domains.iter().any(|d| d.name == domain) {
            anyhow::bail!(
                "{}: domain {domain} is already configured; edit its [[domain]] table instead",
                config_path.display()
            );
        }
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
            s.push_str(&format!(
                "dns = {}\n\n[acme]\n",
                toml_str(&o.dns.to_string())
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

    crate::store::ensure_dir(&o.dir.join("policies"))?;
    crate::store::ensure_dir(&o.dir.join("zones"))?;
    let public = crate::store::PUBLIC_MODE;
    crate::store::write_atomic(&policy_path, policy_text.as_bytes(), public)?;
    crate::store::write_atomic(&zone_path, zone_text.as_bytes(), public)?;
    crate::store::write_atomic(&config_path, config_text.as_bytes(), public)?;
    Ok(vec![config_path, policy_path, zone_path])
}

#[cfg(test)]
mod lifecycle_tests {
    use super::*;

    #[tokio::test]
    async fn a_critical_task_that_ends_before_shutdown_is_reported_and_one_after_is_not() {
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let (tx, mut died) = tokio::sync::mpsc::unbounded_channel();
        spawn_critical(&tracker, &tx, &shutdown, "dns server", async {});
        assert_eq!(died.recv().await, Some("dns server"));
        let tok = shutdown.clone();
        spawn_critical(&tracker, &tx, &shutdown, "https listener", async move {
            tok.cancelled().await
        });
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
        drop(tx);
        assert_eq!(died.recv().await, None);
    }
}
