//! The daemon checking itself: runs the checks every `[check] interval`, a few seconds after
//! every change mxguard makes (rollover step, certificate deployment, reload), and keeps the
//! last result for the metrics and the status page. Every transition of a check to failing is
//! logged as an error and sent to the webhook; so is every recovery.
//!
//! Owns: the last report, the check timeline (bounded) and the pending webhook deliveries.
//! Must not change anything it checks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::Options;
use super::report::{Report, Status};
use crate::tlsrpt::alert::WebhookUrl;

/// What a run needs; replaced on every reload.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The config whose promises are checked: the targets are taken from it at each run
    /// (kept, they took about 400 bytes per domain between runs).
    pub(crate) config: Arc<crate::config::Config>,
    pub opts: Options,
    /// Zero: the checks are off.
    pub interval: Duration,
    /// Where transitions are POSTed (the TLS-RPT alert webhook).
    pub(crate) webhook: Option<WebhookUrl>,
    /// Set when the inputs could not be built (e.g. the zone keys are missing).
    pub error: Option<String>,
    /// `trust_anchor = "zone-keys"`: where the anchors are read again before each run.
    pub(crate) zone_keys: Option<super::targets::ZoneKeyAnchors>,
}

/// The checks of every domain of `inputs`' config.
async fn run_config(inputs: &Inputs) -> Result<Report, String> {
    let targets = super::targets::from_config(&inputs.config, &[], None)?;
    super::run(targets, &inputs.opts)
        .await
        .map_err(|e| e.to_string())
}

/// One run's result.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: SystemTime,
    /// `Err`: the run could not start (resolver, roots).
    pub report: Result<Report, String>,
}

/// A check that started failing or recovered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Transition {
    /// Unix seconds.
    pub at: u64,
    pub domain: String,
    pub host: String,
    pub check: String,
    /// `failing` or `recovered`.
    pub state: &'static str,
    pub seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Transitions kept for the page and the webhook.
const TIMELINE: usize = 200;
/// Wait after a change before checking (the change must be served first).
const SETTLE: Duration = Duration::from_secs(5);
/// One run may take this long at most.
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// Webhook deliveries are bounded per POST.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

type Key = (String, String, String);

#[derive(Default)]
pub struct Monitor {
    last: ArcSwapOption<Snapshot>,
    timeline: Mutex<VecDeque<Transition>>,
    kick: Arc<Notify>,
}

impl Monitor {
    /// A monitor that runs soon (after [`SETTLE`]) whenever `kick` is notified: the change
    /// journal's wake-up, i.e. something mxguard serves changed.
    pub fn new(kick: Arc<Notify>) -> Monitor {
        Monitor {
            kick,
            ..Monitor::default()
        }
    }

    pub fn last(&self) -> Option<Arc<Snapshot>> {
        self.last.load_full()
    }

    /// The last transitions, newest first.
    pub fn timeline(&self) -> Vec<Transition> {
        self.timeline
            .lock()
            .map(|t| t.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    pub async fn run(
        self: Arc<Self>,
        mut inputs: watch::Receiver<Arc<Inputs>>,
        shutdown: CancellationToken,
    ) {
        let mut previous: BTreeMap<Key, Status> = BTreeMap::new();
        let mut undelivered: Vec<Transition> = Vec::new();
        // The first run once the daemon serves.
        tokio::select! {
            _ = tokio::time::sleep(SETTLE) => {}
            _ = shutdown.cancelled() => return,
        }
        loop {
            let mut current = inputs.borrow_and_update().clone();
            // The zone keys as they are now (a key roll changes them between runs).
            if let Some(source) = &current.zone_keys {
                let mut refreshed = Inputs::clone(&current);
                match source.read() {
                    Ok(keys) => {
                        refreshed.opts.resolver.trusted_keys = keys;
                        // Keys missing when the inputs were built exist now.
                        if refreshed
                            .error
                            .as_deref()
                            .is_some_and(|e| e.starts_with("check.trust_anchor = \"zone-keys\""))
                        {
                            refreshed.error = None;
                        }
                    }
                    Err(e) => refreshed.error = Some(e),
                }
                current = Arc::new(refreshed);
            }
            if !current.interval.is_zero() {
                let report = match &current.error {
                    Some(e) => Err(e.clone()),
                    None => match tokio::time::timeout(RUN_LIMIT, run_config(&current)).await {
                        Ok(r) => r,
                        Err(_) => Err(format!("the checks took longer than {RUN_LIMIT:?}")),
                    },
                };
                let now = SystemTime::now();
                match &report {
                    Ok(r) => {
                        let t = transitions(&mut previous, r, unix(now));
                        for x in &t {
                            log(x);
                        }
                        if let Ok(mut tl) = self.timeline.lock() {
                            for x in &t {
                                if tl.len() == TIMELINE {
                                    tl.pop_front();
                                }
                                tl.push_back(x.clone());
                            }
                        }
                        undelivered.extend(t);
                        let excess = undelivered.len().saturating_sub(TIMELINE);
                        undelivered.drain(..excess);
                    }
                    Err(e) => tracing::error!(err = %e, "posture checks could not run"),
                }
                self.last
                    .store(Some(Arc::new(Snapshot { at: now, report })));
                if let (Some(url), false) = (&current.webhook, undelivered.is_empty()) {
                    let body = serde_json::json!({
                        "source": "mxguard check",
                        "transitions": &undelivered,
                    });
                    match crate::tlsrpt::alerter::post_json(
                        url,
                        body.to_string().as_bytes(),
                        WEBHOOK_TIMEOUT,
                    )
                    .await
                    {
                        Ok(_) => undelivered.clear(),
                        Err(e) => {
                            tracing::warn!(err = %e, "check alert not delivered; retried after the next run")
                        }
                    }
                } else if current.webhook.is_none() {
                    undelivered.clear();
                }
            }
            let wait = if current.interval.is_zero() {
                Duration::from_secs(365 * 86_400)
            } else {
                current.interval
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.kick.notified() => {
                    tokio::select! {
                        _ = tokio::time::sleep(SETTLE) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
                r = inputs.changed() => {
                    if r.is_err() {
                        return;
                    }
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Prometheus text: `mxguard_check_ok{domain,mx,check}` per check that ran (1 passes or
    /// only warns, 0 fails) and the time of the last run.
    pub fn render_metrics(&self) -> String {
        let Some(snap) = self.last() else {
            return String::new();
        };
        let mut out = String::from(
            "# HELP mxguard_check_ok 1 when the posture check passes (or only warns), 0 when it fails.\n# TYPE mxguard_check_ok gauge\n",
        );
        if let Ok(r) = &snap.report {
            for d in &r.domains {
                // One series per (mx, check): the worst finding of the check counts.
                let mut series: BTreeMap<(&str, &str), bool> = BTreeMap::new();
                for f in d.checks.iter().filter(|f| f.status != Status::Skip) {
                    let mx = if d.mx.iter().any(|m| m.host == f.host) {
                        f.host.as_str()
                    } else {
                        ""
                    };
                    let ok = series.entry((mx, f.check)).or_insert(true);
                    *ok &= f.status != Status::Fail;
                }
                for ((mx, check), ok) in series {
                    out.push_str(&format!(
                        "mxguard_check_ok{{domain=\"{}\",mx=\"{}\",check=\"{}\"}} {}\n",
                        label(&d.domain),
                        label(mx),
                        label(check),
                        u8::from(ok)
                    ));
                }
            }
        }
        out.push_str(&format!(
            "# HELP mxguard_check_last_run_timestamp_seconds When the posture checks last ran.\n# TYPE mxguard_check_last_run_timestamp_seconds gauge\nmxguard_check_last_run_timestamp_seconds {}\n# HELP mxguard_check_run_ok 1 when the last run could check (resolver and roots usable).\n# TYPE mxguard_check_run_ok gauge\nmxguard_check_run_ok {}\n",
            unix(snap.at),
            u8::from(snap.report.is_ok())
        ));
        out
    }
}

/// How bad a status is (a failure outranks a warning outranks a pass outranks a skip).
fn rank(s: Status) -> u8 {
    match s {
        Status::Skip => 0,
        Status::Pass => 1,
        Status::Warn => 2,
        Status::Fail => 3,
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn log(t: &Transition) {
    if t.state == "failing" {
        tracing::error!(
            domain = %t.domain, host = %t.host, check = %t.check,
            seen = %crate::logfield::untrusted(&t.seen),
            fix = t.fix.as_deref().unwrap_or(""),
            "posture check failing"
        );
    } else {
        tracing::info!(domain = %t.domain, host = %t.host, check = %t.check, "posture check recovered");
    }
}

/// Compares `report` with the previous statuses: checks now failing that were not, and checks
/// that failed and no longer do (or are gone). Updates `previous`.
fn transitions(previous: &mut BTreeMap<Key, Status>, report: &Report, at: u64) -> Vec<Transition> {
    let mut now: BTreeMap<Key, (Status, String, Option<String>)> = BTreeMap::new();
    for d in &report.domains {
        for f in &d.checks {
            // One check may report several findings for a host: the worst one counts.
            let key = (d.domain.clone(), f.host.clone(), f.check.to_string());
            if now
                .get(&key)
                .is_none_or(|(s, _, _)| rank(f.status) > rank(*s))
            {
                now.insert(key, (f.status, f.seen.clone(), f.fix.clone()));
            }
        }
    }
    let mut out = Vec::new();
    for (k, (status, seen, fix)) in &now {
        let was_failing = previous.get(k) == Some(&Status::Fail);
        if *status == Status::Fail && !was_failing {
            out.push(Transition {
                at,
                domain: k.0.clone(),
                host: k.1.clone(),
                check: k.2.clone(),
                state: "failing",
                seen: seen.clone(),
                fix: fix.clone(),
            });
        } else if *status != Status::Fail && was_failing {
            out.push(Transition {
                at,
                domain: k.0.clone(),
                host: k.1.clone(),
                check: k.2.clone(),
                state: "recovered",
                seen: seen.clone(),
                fix: None,
            });
        }
    }
    for (k, s) in previous.iter() {
        if *s == Status::Fail && !now.contains_key(k) {
            out.push(Transition {
                at,
                domain: k.0.clone(),
                host: k.1.clone(),
                check: k.2.clone(),
                state: "recovered",
                seen: "no longer checked".into(),
                fix: None,
            });
        }
    }
    *previous = now.into_iter().map(|(k, (s, _, _))| (k, s)).collect();
    out
}

impl crate::mtasts::http::AdminSource for Monitor {
    fn metrics(&self) -> String {
        self.render_metrics()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::report::{DomainReport, Findings, Verdict};

    fn report(fail: bool) -> Report {
        let mut f = Findings::default();
        f.pass("dns.mx", "example.com", "1 MX, secure");
        if fail {
            f.fail("dane.match", "mx1.example.com", "no match", "publish it");
        } else {
            f.pass("dane.match", "mx1.example.com", "matches 3 1 1 ab");
        }
        Report::new(vec![DomainReport {
            domain: "example.com".into(),
            dane: Verdict::Ok,
            mta_sts: Verdict::Ok,
            tls_rpt: Verdict::Ok,
            policy_mode: None,
            mx: vec![crate::check::report::MxReport {
                host: "mx1.example.com".into(),
                addresses: vec![],
                endpoint: None,
                dane: Verdict::Ok,
                mta_sts: Verdict::Ok,
                tlsa: vec![],
                certificate: None,
            }],
            checks: f.0,
        }])
    }

    #[test]
    fn a_failure_is_reported_once_and_so_is_its_recovery() {
        let mut prev = BTreeMap::new();
        assert!(transitions(&mut prev, &report(false), 1).is_empty());
        let t = transitions(&mut prev, &report(true), 2);
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].state, t[0].check.as_str(), t[0].host.as_str()),
            ("failing", "dane.match", "mx1.example.com")
        );
        assert!(transitions(&mut prev, &report(true), 3).is_empty());
        let t = transitions(&mut prev, &report(false), 4);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].state, "recovered");
        // A failing check that disappears (domain removed) recovers too.
        transitions(&mut prev, &report(true), 5);
        let t = transitions(&mut prev, &Report::new(vec![]), 6);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].seen, "no longer checked");
    }

    #[test]
    fn metrics_name_domain_mx_and_check() {
        let m = Monitor::default();
        assert_eq!(m.render_metrics(), "");
        m.last.store(Some(Arc::new(Snapshot {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            report: Ok(report(true)),
        })));
        let text = m.render_metrics();
        assert!(text.contains(
            "mxguard_check_ok{domain=\"example.com\",mx=\"mx1.example.com\",check=\"dane.match\"} 0\n"
        ));
        assert!(
            text.contains("mxguard_check_ok{domain=\"example.com\",mx=\"\",check=\"dns.mx\"} 1\n")
        );
        assert!(text.contains("mxguard_check_last_run_timestamp_seconds 1700000000\n"));
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
