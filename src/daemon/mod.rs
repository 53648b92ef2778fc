//! The daemon: loads the configuration, owns the state directory, starts the listeners and
//! the tasks, reloads on SIGHUP, shuts down on SIGTERM/SIGINT, and exits with status 1 when a
//! critical task stops.
//!
//! This is the only place that decides *when* served content changes on a reload: it builds
//! the complete new snapshot first, swaps the HTTPS policies, and only then publishes the ids
//! that announce them. Errors here are `anyhow` with context; [`ConfigError`]s pass through
//! so `main` can exit with status 2. Must not print to stdout (the CLI does).
//!
//! - `inputs`: the zones and the records the daemon owns, derived from config and state.
//! - `responder`: ACME challenges on the daemon's own listeners and zone.

mod inputs;
mod responder;

use inputs::{
    bad_name, base_changes, caa_policy, push_zones, served_zones, split_pushed, write_catalog,
    zone_problems,
};
pub(crate) use inputs::{load, load_all};
use responder::DaemonResponder;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::acme::AcmeSettings;
use crate::acme::manager::{Backend, CertSpec, Manager};
use crate::acme::tls::{self, CertResolver, LocalCa};
use crate::config::{AcmeDirectory, Config, ConfigError, LoadedPolicies};
use crate::dns::{DnsServer, DnsSockets};
use crate::mtasts::http::{self, Served};
use crate::publish::records::{self as rec};
use crate::publish::{Change, RecordSink, RrsetKey, SignedZonePublisher};
use crate::state_dir::StateDir;

/// The TLS-RPT database in the state directory.
pub(crate) const REPORTS_DB: &str = "reports.sqlite";
/// How often firing alerts are re-evaluated (so they can resolve).
const ALERT_RECHECK: Duration = Duration::from_secs(300);
/// How often old reports are deleted.
const RETENTION_EVERY: Duration = Duration::from_secs(6 * 3600);

/// The DNSSEC key roll settings of `config`.
fn key_roll_settings(config: &Config) -> crate::dnssec::RollSettings {
    let d = &config.dnssec;
    crate::dnssec::RollSettings {
        algorithm: d.algorithm,
        key_lifetime: (!d.key_lifetime.is_zero()).then_some(d.key_lifetime),
        propagation_delay: d.propagation_delay,
        parent: crate::dnssec::RollSettings::parent_source(
            &d.parent_nameservers,
            d.parent_resolver,
        ),
        poll: config.rollover.poll,
    }
}

/// How long in-flight requests may finish after SIGTERM.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// How many MXes' first key checks (a STARTTLS connection each) run at once at the first
/// start. Many `[[mx]]` hosts are often one server: thousands of connections at once would be a
/// flood of its own, beyond its listen queue and process limits, and each waiting check would
/// hold its connection state.
const FIRST_CHECKS_AT_ONCE: usize = 64;

/// The running daemon's view of what it publishes.
struct Daemon {
    /// The config in effect; the same one the status page reads (`status_config`).
    config: Arc<Config>,
    served: Arc<Served>,
    resolver: Arc<CertResolver>,
    local_ca: Arc<LocalCa>,
    cert_specs: Arc<ArcSwap<Vec<CertSpec>>>,
    cert_wake: Arc<Notify>,
    zones: Option<Arc<SignedZonePublisher>>,
    /// The pushed zones (domains whose DNS is elsewhere).
    push: Arc<crate::publish::push::PushSink>,
    /// The records the daemon set last (so a reload withdraws what the config no longer has).
    /// Packed: kept until the next reload, and there are several per domain.
    base_keys: crate::publish::PackedKeys,
    /// False until the first apply: zone files are (re)read only from the second on.
    zones_reloadable: bool,
    caa: Arc<ArcSwap<rec::CaaPolicy>>,
    state: Arc<StateDir>,
    /// The journal of changes senders see.
    changes: Arc<crate::changelog::ChangeLog>,
    /// The configuration the status page shows (replaced on every apply).
    status_config: Arc<ArcSwap<Config>>,
    /// The posture checks' inputs (replaced on reload, which also runs them).
    checks: tokio::sync::watch::Sender<Arc<crate::check::monitor::Inputs>>,
    /// The DNSSEC key roll settings (replaced on reload).
    key_roll: Arc<ArcSwap<crate::dnssec::RollSettings>>,
}

impl Daemon {
    /// Makes `loaded` live: certificates for new hosts first, then the policy texts, then
    /// (once served) the ids that announce them.
    async fn apply(&mut self, config: Config, loaded: LoadedPolicies) -> anyhow::Result<()> {
        let now = SystemTime::now();
        let hosts: Vec<String> = config.domains.iter().map(|d| d.mta_sts_host()).collect();
        for host in &hosts {
            if !self.resolver.has(host) {
                let ck = self
                    .local_ca
                    .issue(host, now)
                    .with_context(|| format!("issuing local certificate for {host}"))?;
                self.resolver.set(host, ck);
                tracing::info!(
                    host = %host,
                    "no certificate yet: serving one from the local CA (not publicly trusted) until one is issued"
                );
            }
        }
        // 1. Serve the new policy texts.
        let texts = crate::mtasts::texts::PolicyTexts::new(
            config
                .domains
                .iter()
                .map(|d| (d.mta_sts_host(), loaded.policies[&d.name].text.as_str())),
        )?;
        // The ids served until now follow from the texts served until now (an id is a hash
        // of its text): no map of them is kept.
        let old_texts = self.served.policies.swap(Arc::new(texts));
        self.resolver.retain(&hosts);
        // 2. Announce them: the ids below are published only after the texts are served.
        for d in &config.domains {
            let new = &loaded.policies[&d.name];
            let old = old_texts
                .get(&d.mta_sts_host())
                .map(crate::mtasts::policy::policy_id);
            match old {
                Some(old) if old == new.id => {}
                Some(old) => {
                    tracing::info!(
                        domain = %d.name, old_id = %old, id = %new.id,
                        "policy changed; new id published"
                    );
                    self.changes.record(
                        "policy",
                        &d.name,
                        format!(
                            "policy changed ({}); id {}",
                            new.text
                                .lines()
                                .find(|l| l.starts_with("mode:"))
                                .unwrap_or("mode: ?")
                                .trim(),
                            new.id
                        ),
                    );
                }
                None => tracing::info!(domain = %d.name, id = %new.id, "policy published"),
            }
        }
        let mut changes = base_changes(&config, &loaded, self.state.root())?;
        // The keys unpacked are freed before the zones take the changes: with 10,000 domains
        // they were 4.5 MB of the first start's peak.
        let keys = {
            let mut keys: Vec<RrsetKey> = changes.iter().map(|c| c.key().clone()).collect();
            keys.sort_unstable();
            keys.dedup();
            changes.extend(
                self.base_keys
                    .unpack()
                    .filter(|k| keys.binary_search(k).is_err())
                    .map(Change::Withdraw),
            );
            crate::publish::PackedKeys::pack(&keys)
        };
        let (changes, pushed) = split_pushed(&config, changes);
        // Pushed zones: a primary that is down or refuses does not stop the daemon; the push is
        // retried (with backoff) and the previous records stay there meanwhile.
        self.push
            .configure(push_zones(&config))
            .await
            .map_err(|e| ConfigError {
                problems: vec![config.problem("domain.push", e)],
            })?;
        if !pushed.is_empty()
            && let Err(e) = crate::publish::RecordSink::apply(&*self.push, pushed).await
        {
            tracing::warn!(err = %e, "records not pushed yet; retrying");
        }
        if let Some(zones) = &self.zones {
            let applied = if !self.zones_reloadable {
                // At start the publisher has just loaded the zone files.
                self.zones_reloadable = true;
                zones.apply(changes).await?
            } else {
                write_catalog(&config)?;
                zones
                    .reload(config.dnssec.clone(), served_zones(&config), changes)
                    .await?
            };
            if applied.changed {
                tracing::info!(zones = applied.serials.len(), "zones published");
            }
        }
        self.base_keys = keys;
        self.caa.store(Arc::new(caa_policy(&config)));
        self.key_roll.store(Arc::new(key_roll_settings(&config)));
        let specs = config.cert_specs();
        if **self.cert_specs.load() != specs {
            self.cert_specs.store(Arc::new(specs));
            self.cert_wake.notify_one();
        }
        let config = Arc::new(config);
        self.checks
            .send_replace(Arc::new(crate::check::targets::monitor_inputs(&config)));
        self.status_config.store(config.clone());
        self.config = config;
        Ok(())
    }

    async fn reload(&mut self) {
        let path = self.config.file.clone();
        match load_all(&path) {
            Ok((mut config, loaded)) => {
                for key in self.config.keep_restart_only(&mut config) {
                    tracing::warn!(
                        key,
                        "changed in the config file, but takes effect only on restart; the running value stays"
                    );
                }
                for w in &loaded.warnings {
                    tracing::warn!("{w}");
                }
                match self.apply(config, loaded).await {
                    Ok(()) => {
                        tracing::info!(config = %path.display(), "reloaded");
                        self.changes.record(
                            "reload",
                            &path.display().to_string(),
                            "configuration reloaded",
                        );
                        if let Some(zones) = &self.zones {
                            let zones = zones.clone();
                            tokio::spawn(async move { zones.catch_up_serials().await });
                        }
                    }
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

/// Raises the soft limit of open files to the hard limit: every connection, zone file and
/// report costs a descriptor, and the default soft limit (often 1024) runs out long before the
/// hard one under load.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "open files limit raised"),
            Err(e) => tracing::warn!(soft, hard, err = %e, "cannot raise the open files limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(err = %e, "cannot read the open files limit"),
    }
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
    raise_open_files_limit();
    let (config, loaded) = load_all(path)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let state = Arc::new(StateDir::open_locked(&config.state_dir)?);
    let changes = Arc::new(crate::changelog::ChangeLog::open(state.root()));
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
        Some(a)
            if config.tlsrpt.enabled
                || config.listen.dns.is_some()
                || !config.check.interval.is_zero() =>
        {
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
        let handle = crate::tlsrpt::store::ReportsHandle::open(&db)
            .with_context(|| format!("opening the report store {}", db.display()))?;
        let alerter = Arc::new(
            crate::tlsrpt::alerter::Alerter::new(config.tlsrpt.alerts.clone(), handle.clone())
                .map_err(|e| ConfigError {
                    problems: vec![config.problem("tlsrpt.alerts", e.to_string())],
                })?
                .with_changes(changes.clone()),
        );
        Some((handle, alerter))
    } else {
        None
    };
    let dns_sockets = match config.listen.dns {
        Some(a) => Some(
            DnsSockets::bind(&[a], config.dns.udp_sockets.unwrap_or_else(crate::dns::default_udp_sockets))
                .await
                .map_err(|e| ConfigError {
            problems: vec![config.problem(
                "listen.dns",
                format!("cannot listen on {a} (udp+tcp): {e} (is another DNS server using it? choose another address or port)"),
            )],
        })?,
        ),
        None => None,
    };
    let https_addr = https_listener.local_addr()?;
    let http_addr = http_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    crate::state_dir::write_atomic(
        &state.path("listening"),
        listening_note(https_addr, http_addr, config.listen.dns).as_bytes(),
        crate::state_dir::PUBLIC_MODE,
    )?;

    let served = Arc::new(Served::default());
    let resolver = Arc::new(CertResolver::new(state.root()));
    // Stored certificates first: the listeners never serve a stand-in for a host that has one.
    crate::acme::manager::install_stored(&state, &config.cert_specs(), &resolver);
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
            tracker.spawn(crate::tlsrpt::store::run_retention(
                handle.clone(),
                config.tlsrpt.retention_days,
                RETENTION_EVERY,
                shutdown.clone(),
            ));
            Some(Arc::new(
                crate::tlsrpt::intake::Intake::new(handle, config.tlsrpt.intake.clone())
                    .with_retention(config.tlsrpt.retention_days)
                    .with_alerter(alerter),
            ))
        }
        None => None,
    };

    // MX keys exist before the zone is first built, so their TLSA records are published
    // before any certificate for them is ordered.
    // A rollover begins before the first zone is built: a key the MX presents already (a
    // certificate from before mxguard) is published alongside mxguard's own from the start.
    // Each MX's key files are written on the blocking pool, many MXes at once: a first start
    // writes four files per MX, each synced with its directory, and one MX after the other
    // the syncs add up with thousands of MXes.
    let mut beginning = tokio::task::JoinSet::new();
    for m in config.mx.iter().filter(|m| m.external.is_none()) {
        if beginning.len() >= FIRST_CHECKS_AT_ONCE
            && let Some(done) = beginning.join_next().await
        {
            done??;
        }
        let begins = m.rollover && crate::dane::files::load(state.root(), &m.host).is_none();
        let (state, host, verify) = (state.clone(), m.host.clone(), m.verify);
        beginning.spawn(async move {
            let (s, h) = (state.clone(), host.clone());
            let key = tokio::task::spawn_blocking(move || {
                crate::acme::manager::load_or_create_key(&s, &h)
            })
            .await??;
            if begins
                && let Err(e) = crate::dane::executor::begin(&state, &host, &key, verify).await
            {
                tracing::error!(mx = %host, err = %e, "cannot begin the rollover");
            }
            anyhow::Ok(())
        });
        if !m.dane_ta.is_empty() {
            tracing::warn!(mx = %m.host, "DANE-TA (2 1 1) pins the CA's intermediates, which CAs rotate: list every current intermediate and keep the list up to date");
        }
    }
    while let Some(done) = beginning.join_next().await {
        done??;
    }
    // The policy hosts' keys for their `_443` TLSA records, on the blocking pool as well.
    let hosts: Vec<String> = (config.domains.iter())
        .filter(|d| d.tlsa_https)
        .map(|d| d.mta_sts_host())
        .collect();
    if !hosts.is_empty() {
        let s = state.clone();
        tokio::task::spawn_blocking(move || {
            (hosts.iter())
                .try_for_each(|h| crate::acme::manager::load_or_create_key(&s, h).map(drop))
        })
        .await??;
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
                    .with_response_cache(config.dns.response_cache)
                    .with_rate_limit(config.dns.rate_limit, config.dns.rate_limit_slip)
                    .with_tcp_limits(crate::dns::TcpLimits {
                        max_connections: config.limits.dns_tcp_connections,
                        max_per_source: config.limits.dns_tcp_per_address,
                        idle: config.limits.dns_tcp_idle,
                    })
                    // Only secondaries may transfer zones: without them, no IXFR journal.
                    .with_journal(!config.secondaries.is_empty()),
            );
            let changes =
                base_changes(&config, &loaded, state.root()).map_err(|e| bad_name(&config, e))?;
            let (changes, _) = split_pushed(&config, changes);
            write_catalog(&config)?;
            let publisher = Arc::new(
                SignedZonePublisher::start(
                    state.clone(),
                    server.clone(),
                    secondaries.clone(),
                    config.dnssec.clone(),
                    served_zones(&config),
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

    // The one record sink every producer uses: pushed zones, then mxguard's own.
    let push = Arc::new(crate::publish::push::PushSink::with_state(state.root()));
    let sink: Option<Arc<dyn RecordSink>> =
        (zones.is_some() || config.domains.iter().any(|d| d.push.is_some())).then(|| {
            Arc::new(crate::publish::Router {
                signed: zones.clone(),
                push: push.clone(),
            }) as Arc<dyn RecordSink>
        });
    let monitor = Arc::new(crate::check::monitor::Monitor::new(changes.wake()));
    let config = Arc::new(config);
    let (checks, check_inputs) =
        tokio::sync::watch::channel(Arc::new(crate::check::targets::monitor_inputs(&config)));
    let mut daemon = Daemon {
        config: config.clone(),
        served: served.clone(),
        resolver: resolver.clone(),
        local_ca,
        cert_specs: cert_specs.clone(),
        cert_wake: cert_wake.clone(),
        zones: zones.clone(),
        push: push.clone(),
        base_keys: Default::default(),
        zones_reloadable: false,
        caa: caa.clone(),
        state: state.clone(),
        changes: changes.clone(),
        status_config: Arc::new(ArcSwap::new(config.clone())),
        checks,
        key_roll: Arc::new(ArcSwap::from_pointee(key_roll_settings(&config))),
    };
    // `apply` takes its own copy and shares it with the status page; this one goes.
    let startup = Config::clone(&config);
    drop(config);
    daemon.apply(startup, loaded).await?;
    let manager = Manager {
        state: state.clone(),
        backend,
        resolver: resolver.clone(),
        responder: DaemonResponder {
            served: served.clone(),
            resolver: resolver.clone(),
            sink: sink.clone(),
            dns01: Default::default(),
            dns01_timeout: daemon.config.acme.dns01_timeout,
        },
        specs: cert_specs,
        wake: cert_wake,
        backoff: daemon.config.acme.backoff,
        sink: sink.clone(),
        caa,
        caa_account: Default::default(),
        roll: sink.clone().map(|z| crate::dane::executor::RollExecutor {
            state: state.clone(),
            sink: z,
            timing: daemon.config.roll_timing(),
            poll: daemon.config.rollover.poll,
            tlsa_port: daemon.config.records.tlsa_port,
            tlsa_ttl: daemon.config.records.tlsa_ttl,
            changes: changes.clone(),
            keep_retired: daemon.config.rollover.keep_retired_key,
        }),
        roll_poll: daemon.config.rollover.poll,
        changes: changes.clone(),
    };
    let mut https_router = http::https_router(served.clone());
    if let Some(intake) = &intake {
        https_router = https_router.merge(crate::tlsrpt::intake::router(intake.clone()));
    }
    if let Some(l) = admin_listener {
        let state = http::AdminState {
            intake: intake.clone(),
            zones: dns_task
                .as_ref()
                .map(|(server, _, _)| server.zones().clone()),
            refresh: daemon.config.dnssec.refresh,
            sources: vec![monitor.clone() as Arc<dyn http::AdminSource>],
            page: Some(Arc::new(crate::status::StatusPage {
                config: daemon.status_config.clone(),
                monitor: monitor.clone(),
                changes: changes.clone(),
                reports: intake.as_ref().map(|i| i.store().clone()),
                push: push.clone(),
            })),
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
        tracker.spawn(crate::tlsrpt::smtp::serve(
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
            {
                let l = &daemon.config.limits;
                http::Limits {
                    max_connections: l.https_connections,
                    max_per_source: l.https_per_address,
                    first_request_timeout: l.https_first_request,
                    idle_timeout: l.https_idle,
                    ..http::Limits::default()
                }
            },
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
            if let Err(e) = server.run_on_own_threads(sockets, secondaries, tok).await {
                tracing::error!(err = %e, "dns server failed");
            }
        });
        tracker.spawn(publisher.clone().run_resigner(shutdown.clone()));
        let roller = crate::dnssec::executor::KeyRoller {
            state: state.clone(),
            zones: publisher.clone(),
            settings: daemon.key_roll.clone(),
            changes: changes.clone(),
            parent_next: Default::default(),
        };
        spawn_critical(
            &tracker,
            &died_tx,
            &shutdown,
            "dnssec key roller",
            roller.run(shutdown.clone()),
        );
        tracker.spawn(publisher.clone().run_catch_up(shutdown.clone()));
        // A secondary that serves a higher serial (mxguard's state restored from a backup)
        // never transfers again: move above it first thing.
        let (p, tok) = (publisher.clone(), shutdown.clone());
        tracker.spawn(async move { tok.run_until_cancelled(p.catch_up_serials()).await });
    }
    tracker.spawn(push.clone().run_retries(shutdown.clone()));
    // The posture checks: first run once everything above serves.
    tracker.spawn(monitor.clone().run(check_inputs, shutdown.clone()));
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
