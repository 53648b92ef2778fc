//! The status page on the admin listener (`GET /`): per domain the posture verdicts, the
//! certificates, the rollover state, the last changes and TLS-RPT charts over 30 days.
//!
//! Owns: gathering that view and rendering it ([`html`], [`svg`]: pure). Reads the posture
//! checks' last result, the change journal, the state directory (certificates, rollover) and
//! the report store; must not change any of them, nor anything served.

pub(crate) mod html;
pub(crate) mod svg;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::changelog::ChangeLog;
use crate::check::monitor::Monitor;
use crate::config::Config;
use crate::tlsrpt::store::ReportsHandle;
use html::{CertRow, Checks, DomainData, Event, PageData, TlsRpt};

/// Days of TLS-RPT charted.
pub const DAYS: i64 = 30;
/// Timeline lines per domain.
const EVENTS: usize = 20;
/// Organizations and result types shown.
const TOP: usize = 10;

/// Everything the page reads; shared with the daemon.
pub(crate) struct StatusPage {
    pub config: Arc<ArcSwap<Config>>,
    pub monitor: Arc<Monitor>,
    pub changes: Arc<ChangeLog>,
    pub reports: Option<ReportsHandle>,
    /// The pushed zones (their last failures are shown).
    pub push: Arc<crate::publish::push::PushSink>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn stamp(t: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t as i64)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

impl StatusPage {
    pub async fn render(&self) -> String {
        html::render(&self.gather().await)
    }

    async fn gather(&self) -> PageData {
        let config = self.config.load_full();
        let now = SystemTime::now();
        let now_s = unix(now);
        let today = (now_s / 86_400) as i64;
        let checks = if config.check.interval.is_zero() {
            Checks::Off
        } else {
            match self.monitor.last() {
                None => Checks::Pending,
                Some(s) => match &s.report {
                    Ok(_) => Checks::Ran {
                        at: stamp(unix(s.at)),
                    },
                    Err(e) => Checks::Failed {
                        at: stamp(unix(s.at)),
                        why: e.clone(),
                    },
                },
            }
        };
        let snapshot = self.monitor.last();
        let reports = snapshot.as_ref().and_then(|s| s.report.as_ref().ok());
        let certs = crate::acme::report::report(&config.state_dir, &config.cert_specs(), now);
        let journal = self.changes.recent();
        let transitions = self.monitor.timeline();
        let tlsrpt = self.tlsrpt(&config, now_s).await;
        let timing = config.roll_timing();
        let push_failures = self.push.failures().await;
        // Each domain's rows are looked up by name (scans of every certificate, MX and report
        // for each domain made a page with 10,000 domains cost O(N²)).
        let push_failures: HashMap<String, String> = push_failures
            .into_iter()
            .map(|(z, e)| (z.to_ascii().trim_end_matches('.').to_string(), e))
            .collect();
        let report_of: HashMap<&str, &crate::check::report::DomainReport> = reports
            .map(|r| r.domains.iter().map(|x| (x.domain.as_str(), x)).collect())
            .unwrap_or_default();
        let cert_at: HashMap<&str, usize> = certs
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        let mut tlsrpt_of: HashMap<&str, &TlsRpt> = HashMap::new();
        if let Some(Ok(per)) = &tlsrpt {
            for (n, t) in per {
                tlsrpt_of.entry(n.as_str()).or_insert(t);
            }
        }
        let mx_index = config.mx_index();

        let domains =
            config
                .domains
                .iter()
                .map(|d| {
                    let mta_sts = d.mta_sts_host();
                    let ours = |name: &str| {
                        name == d.name || name == mta_sts || d.mx.iter().any(|m| m == name)
                    };
                    let mut events: Vec<Event> =
                        journal
                            .iter()
                            .filter(|e| e.kind == "reload" || ours(&e.subject))
                            .map(|e| Event {
                                at: e.at,
                                kind: e.kind.clone(),
                                text: if e.kind == "reload" {
                                    e.detail.clone()
                                } else {
                                    format!("{}: {}", e.subject, e.detail)
                                },
                            })
                            .chain(transitions.iter().filter(|t| t.domain == d.name).map(|t| {
                                Event {
                                    at: t.at,
                                    kind: t.state.to_string(),
                                    text: format!("{} {}: {}", t.check, t.host, t.seen),
                                }
                            }))
                            .collect();
                    events.sort_by_key(|e| std::cmp::Reverse(e.at));
                    events.truncate(EVENTS);
                    DomainData {
                        name: d.name.clone(),
                        push: d
                            .push
                            .as_ref()
                            .map(|p| (p.target(), push_failures.get(&d.name).cloned())),
                        report: report_of.get(d.name.as_str()).map(|x| (*x).clone()),
                        certs: in_order(
                            &cert_at,
                            [d.name.as_str(), mta_sts.as_str()]
                                .into_iter()
                                .chain(d.mx.iter().map(String::as_str)),
                        )
                        .map(|i| &certs[i])
                        .map(|c| CertRow {
                            name: c.name.clone(),
                            key: c.key.clone(),
                            not_after: c.not_after.clone(),
                            next_renewal: c.next_renewal.clone(),
                            problem: c
                                .last_error
                                .clone()
                                .or_else(|| c.deploy_error.clone())
                                .or_else(|| c.near_expiry.then(|| "expires soon".to_string())),
                        })
                        .collect(),
                        rolls: mx_index
                            .of(d)
                            .into_iter()
                            .map(|m| {
                                (
                                    m.host.clone(),
                                    crate::dane::view::view(
                                        &config.state_dir,
                                        &crate::dane::view::MxKeys {
                                            host: &m.host,
                                            rollover: m.rollover,
                                            external: m.external.as_ref(),
                                            prepublish: &m.prepublish,
                                            single_key: crate::acme::manager::current_key_digest(
                                                &config.state_dir,
                                                &m.host,
                                            ),
                                        },
                                        &timing,
                                        now_s,
                                    ),
                                )
                            })
                            .collect(),
                        events,
                        tlsrpt: tlsrpt.as_ref().map(|all| match all {
                            Ok(_) => tlsrpt_of
                                .get(d.name.as_str())
                                .map(|t| (*t).clone())
                                .unwrap_or_default(),
                            Err(e) => TlsRpt {
                                error: Some(e.clone()),
                                ..TlsRpt::default()
                            },
                        }),
                    }
                })
                .collect();
        PageData {
            generated: stamp(now_s),
            today,
            days: DAYS,
            checks,
            domains,
        }
    }

    /// Per domain: sessions per day, failures by result type, organizations (`None`: the
    /// intake is off).
    async fn tlsrpt(
        &self,
        config: &Config,
        now: u64,
    ) -> Option<Result<Vec<(String, TlsRpt)>, String>> {
        let handle = self.reports.as_ref()?;
        let since = time::OffsetDateTime::from_unix_timestamp(
            now.saturating_sub(DAYS as u64 * 86_400) as i64,
        )
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let names: Vec<String> = config.domains.iter().map(|d| d.name.clone()).collect();
        let r = handle
            .read(move |s| {
                let mut out = Vec::new();
                for name in names {
                    let daily = s.daily(&name, since)?;
                    let summary = s.summary(Some(&name), since)?;
                    let mut types: std::collections::BTreeMap<String, u64> = Default::default();
                    let mut orgs: std::collections::BTreeMap<String, (u64, u64)> =
                        Default::default();
                    for g in &summary.groups {
                        for c in &g.failures_by_result_type {
                            let e = types
                                .entry(c.key.clone().unwrap_or_else(|| "(not given)".into()))
                                .or_default();
                            *e = e.saturating_add(c.sessions);
                        }
                        for o in &g.by_organization {
                            let e = orgs.entry(o.organization.clone()).or_default();
                            e.0 = e.0.saturating_add(
                                o.successful_sessions.saturating_add(o.failed_sessions),
                            );
                            e.1 = e.1.saturating_add(o.failed_sessions);
                        }
                    }
                    let mut result_types: Vec<(String, u64)> = types.into_iter().collect();
                    result_types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                    result_types.truncate(TOP);
                    let mut organizations: Vec<(String, u64, u64)> =
                        orgs.into_iter().map(|(k, (t, f))| (k, t, f)).collect();
                    organizations.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                    organizations.truncate(TOP);
                    out.push((
                        name,
                        TlsRpt {
                            daily,
                            result_types,
                            organizations,
                            error: None,
                        },
                    ));
                }
                Ok(out)
            })
            .await;
        Some(r.map_err(|e| e.to_string()))
    }
}

#[async_trait::async_trait]
impl crate::mtasts::http::AdminPage for StatusPage {
    async fn page(&self) -> String {
        self.render().await
    }
}

/// The positions that `names` have in `at`, ascending and each once: a domain's rows in the
/// order of the whole list, as a filter over it gave them.
fn in_order<'a>(
    at: &HashMap<&str, usize>,
    names: impl Iterator<Item = &'a str>,
) -> std::vec::IntoIter<usize> {
    let mut v: Vec<usize> = names.filter_map(|n| at.get(n).copied()).collect();
    v.sort_unstable();
    v.dedup();
    v.into_iter()
}
