//! TLS-RPT alert delivery: re-evaluates domains after new reports and POSTs to a webhook.
//!
//! Owns: the per-domain alert state (in memory) and the webhook client, a plain HTTP/1.1
//! `POST` over a tokio `TcpStream`. The decision itself is the pure
//! `crate::tlsrpt::alert::decide`; counts come from `crate::tlsrpt::store`. Must not touch HTTP
//! serving, config files or the report tables.
//!
//! One task (`Alerter::run`) is the only writer of alert state: the intake calls
//! `Alerter::notify` with the domains of each new report (never blocking), the task drains
//! the pending set, and also re-checks firing domains periodically so an alert resolves when
//! old failures leave the window even without new reports. A state change is kept only after
//! the webhook accepted it (2xx), so a failed delivery is retried at the next evaluation.
//!
//! Passes are at least `MIN_EVAL_INTERVAL` apart: under steady intake the domains notified
//! in between are evaluated together in the next pass (each at most once per interval)
//! instead of once per report; a notification is never dropped, only delayed by at most the
//! interval.
//!
//! Limitations: `https://` webhooks are refused at validation; alert state is not persisted,
//! so after a restart a condition that still holds alerts once more.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::tlsrpt::alert::{
    self, AlertAction, AlertPayload, AlertSettings, AlertState, WebhookUrl, WebhookUrlError,
};
use crate::tlsrpt::store::{ReportsError, ReportsHandle};

/// Time allowed for one webhook delivery (connect, send, status line).
pub(crate) const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Least time from the end of one evaluation pass to the start of the next.
pub(crate) const MIN_EVAL_INTERVAL: Duration = Duration::from_secs(1);

/// An alerting error, naming the webhook or the store.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AlertError {
    #[error("tlsrpt.alerts.webhook: {0}")]
    Url(#[from] WebhookUrlError),
    #[error("webhook {url}: {reason}")]
    Webhook { url: String, reason: String },
    #[error(transparent)]
    Store(#[from] ReportsError),
}

/// Decides and delivers alerts; share as `Arc<Alerter>` between the intake and its task.
#[derive(Debug)]
pub struct Alerter {
    settings: AlertSettings,
    webhook: Option<WebhookUrl>,
    store: ReportsHandle,
    pending: Mutex<BTreeSet<String>>,
    wake: tokio::sync::Notify,
    states: Mutex<HashMap<String, AlertState>>,
    min_interval: Duration,
    /// Domain evaluations (window queries) so far.
    evaluations: AtomicU64,
    /// mxguard's own changes, named in an alert when the failures fall around one.
    changes: Option<std::sync::Arc<crate::changelog::ChangeLog>>,
}

impl Alerter {
    /// Fails when the webhook URL is unusable (e.g. `https://`).
    pub(crate) fn new(
        settings: AlertSettings,
        store: ReportsHandle,
    ) -> Result<Alerter, AlertError> {
        let webhook = settings
            .webhook
            .as_deref()
            .map(WebhookUrl::parse)
            .transpose()?;
        Ok(Alerter {
            settings,
            webhook,
            store,
            pending: Mutex::new(BTreeSet::new()),
            wake: tokio::sync::Notify::new(),
            states: Mutex::new(HashMap::new()),
            min_interval: MIN_EVAL_INTERVAL,
            evaluations: AtomicU64::new(0),
            changes: None,
        })
    }

    /// Alerts name the change of mxguard's (from this journal) that failures fall around.
    pub(crate) fn with_changes(
        mut self,
        changes: std::sync::Arc<crate::changelog::ChangeLog>,
    ) -> Alerter {
        self.changes = Some(changes);
        self
    }

    #[cfg(test)]
    /// Sets the least time between evaluation passes (default [`MIN_EVAL_INTERVAL`]).
    pub(crate) fn with_min_interval(mut self, interval: Duration) -> Alerter {
        self.min_interval = interval;
        self
    }

    #[cfg(test)]
    /// How many domain evaluations (window queries) have run.
    pub(crate) fn evaluations(&self) -> u64 {
        self.evaluations.load(Ordering::Relaxed)
    }

    /// Queues domains for evaluation; returns at once.
    pub(crate) fn notify(&self, domains: Vec<String>) {
        if domains.is_empty() {
            return;
        }
        if let Ok(mut p) = self.pending.lock() {
            p.extend(domains);
        }
        self.wake.notify_one();
    }

    /// The current alert state of a domain.
    pub(crate) fn state(&self, domain: &str) -> AlertState {
        self.states
            .lock()
            .ok()
            .and_then(|s| s.get(domain).copied())
            .unwrap_or_default()
    }

    /// Evaluates queued domains until `cancel`; re-checks firing domains every `recheck`.
    /// Passes start at least the minimum interval after the previous one ended; domains
    /// notified in between wait in the pending set and are evaluated once in the next pass.
    pub(crate) async fn run(&self, cancel: CancellationToken, recheck: Duration) {
        let mut next_recheck = tokio::time::Instant::now() + recheck;
        let mut earliest = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(next_recheck) => {
                    next_recheck = tokio::time::Instant::now() + recheck;
                    let firing: Vec<String> = self
                        .states
                        .lock()
                        .map(|s| {
                            s.iter()
                                .filter(|(_, st)| **st == AlertState::Firing)
                                .map(|(d, _)| d.clone())
                                .collect()
                        })
                        .unwrap_or_default();
                    if let Ok(mut p) = self.pending.lock() {
                        p.extend(firing);
                    }
                }
            }
            // Coalesce: let notifications gather until the interval since the last pass is
            // over (they stay in `pending`; a wake-up meanwhile leaves a permit in `wake`).
            if tokio::time::Instant::now() < earliest {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep_until(earliest) => {}
                }
            }
            let domains = self
                .pending
                .lock()
                .map(|mut p| std::mem::take(&mut *p))
                .unwrap_or_default();
            if domains.is_empty() {
                // A stale wake-up for domains an earlier pass already took.
                continue;
            }
            if let Err(e) = self.process(domains, OffsetDateTime::now_utc()).await {
                tracing::warn!(err = %e, "tlsrpt alert evaluation failed");
            }
            earliest = tokio::time::Instant::now() + self.min_interval;
        }
    }

    /// Evaluates each domain at `now` and delivers the resulting alerts. Returns the actions
    /// taken. Must not run concurrently with itself ([`Alerter::run`] is its only caller in
    /// the daemon).
    pub(crate) async fn process(
        &self,
        domains: BTreeSet<String>,
        now: OffsetDateTime,
    ) -> Result<Vec<(String, AlertAction)>, AlertError> {
        let since = self.settings.window_start(now);
        let mut taken = Vec::new();
        let mut first_error = None;
        for domain in domains {
            self.evaluations.fetch_add(1, Ordering::Relaxed);
            let counts = self.store.window_counts(domain.clone(), since).await?;
            let (next, action) = alert::decide(&self.settings, counts, self.state(&domain));
            if let Some(mut payload) = alert::payload(&self.settings, &domain, counts, action) {
                if action == AlertAction::Fire
                    && let Some(changes) = &self.changes
                {
                    let d = domain.clone();
                    let failures = self
                        .store
                        .read(move |s| s.failure_periods(&d, since))
                        .await?;
                    let o =
                        crate::tlsrpt::correlate::overlaps(&domain, &failures, &changes.recent());
                    if let Some(first) = o.first() {
                        payload.text.push_str(&format!("; {}", first.text));
                    }
                    payload.overlapping_changes = o.into_iter().map(|x| x.text).collect();
                }
                tracing::info!(domain = %crate::logfield::untrusted(&domain), status = %payload.status, failed = counts.failed, successful = counts.successful, "tlsrpt alert");
                if let Err(e) = self.deliver(&payload).await {
                    // Keep the old state: the next evaluation retries.
                    tracing::warn!(domain = %crate::logfield::untrusted(&domain), err = %e, "tlsrpt alert delivery failed");
                    first_error.get_or_insert(e);
                    continue;
                }
                taken.push((domain.clone(), action));
            }
            if let Ok(mut s) = self.states.lock() {
                s.insert(domain, next);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(taken),
        }
    }

    async fn deliver(&self, payload: &AlertPayload) -> Result<(), AlertError> {
        let Some(url) = &self.webhook else {
            return Ok(());
        };
        let body = serde_json::to_vec(payload).map_err(|e| AlertError::Webhook {
            url: format!("http://{}:{}{}", url.host, url.port, url.path),
            reason: e.to_string(),
        })?;
        post_json(url, &body, WEBHOOK_TIMEOUT).await.map(|_| ())
    }
}

/// POSTs `body` as JSON over plain HTTP/1.1; succeeds on a 2xx status, which it returns.
pub(crate) async fn post_json(
    url: &WebhookUrl,
    body: &[u8],
    timeout: Duration,
) -> Result<u16, AlertError> {
    let shown = format!("http://{}:{}{}", url.host, url.port, url.path);
    let fail = |reason: String| AlertError::Webhook {
        url: shown.clone(),
        reason,
    };
    let exchange = async {
        let mut stream = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| fail(format!("connect: {e}")))?;
        let host = if url.host.contains(':') {
            format!("[{}]:{}", url.host, url.port)
        } else {
            format!("{}:{}", url.host, url.port)
        };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mxguard\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            url.path,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| fail(format!("send: {e}")))?;
        stream
            .write_all(body)
            .await
            .map_err(|e| fail(format!("send: {e}")))?;
        // Read just the status line (bounded).
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.contains(&b'\n') && buf.len() < 4096 {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| fail(format!("receive: {e}")))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        let status = line
            .lines()
            .next()
            .and_then(|l| {
                let mut parts = l.split_whitespace();
                let version = parts.next()?;
                version.starts_with("HTTP/1.").then_some(())?;
                parts.next()?.parse::<u16>().ok()
            })
            .ok_or_else(|| fail("no HTTP status line in the response".to_string()))?;
        if (200..300).contains(&status) {
            Ok(status)
        } else {
            Err(fail(format!("answered HTTP {status}")))
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(fail(format!("no answer within {timeout:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlsrpt::parse_report;
    use crate::tlsrpt::store::NewReport;
    use crate::tlsrpt::tests::fixtures;
    use time::macros::datetime;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// A webhook that records each request body and answers with `status`.
    async fn webhook(status: u16) -> (String, mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut data = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then Content-Length bytes of body.
                let body = loop {
                    let n = conn.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "client closed early");
                    data.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&data).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        assert!(head.starts_with("POST /hook HTTP/1.1\r\n"), "{head}");
                        assert!(head.contains("Content-Type: application/json"), "{head}");
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .unwrap()
                            .parse()
                            .unwrap();
                        if body.len() >= len {
                            break body.to_string();
                        }
                    }
                };
                let _ = tx.send(body);
                let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                conn.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        (url, rx)
    }

    fn settings(url: &str) -> AlertSettings {
        AlertSettings {
            webhook: Some(url.to_string()),
            min_failures: 10,
            max_failure_ratio: 0.05,
            window: 30 * 86_400,
        }
    }

    async fn add(store: &ReportsHandle, id: &str, ok: u64, failed: u64) {
        let json = fixtures::synthetic("Org", id, "alert.example", ok, failed);
        let r = NewReport::new(
            parse_report(&json).unwrap(),
            &json,
            datetime!(2024-06-01 0:00 UTC),
        );
        store.insert(r).await.unwrap();
    }

    const NOW: OffsetDateTime = datetime!(2024-06-02 0:00 UTC);

    fn domain() -> BTreeSet<String> {
        BTreeSet::from(["alert.example".to_string()])
    }

    #[tokio::test]
    async fn an_alert_names_the_change_its_failures_fall_around() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReportsHandle::open(&dir.path().join("db")).unwrap();
        let (url, mut hook) = webhook(204).await;
        let changes = std::sync::Arc::new(crate::changelog::ChangeLog::in_memory());
        // The key roll of the MX the synthetic reports name, inside their period.
        changes.record_event(crate::changelog::ChangeEvent {
            at: datetime!(2024-05-31 10:00 UTC).unix_timestamp() as u64,
            kind: "rollover".into(),
            subject: "mx.alert.example".into(),
            detail: "key roll starts".into(),
        });
        let alerter = Alerter::new(settings(&url), store.clone())
            .unwrap()
            .with_changes(changes);
        add(&store, "a", 10, 20).await;
        add(&store, "b", 10, 30).await;
        assert_eq!(
            alerter.process(domain(), NOW).await.unwrap(),
            vec![("alert.example".to_string(), AlertAction::Fire)]
        );
        let body: AlertPayload = serde_json::from_str(&hook.recv().await.unwrap()).unwrap();
        assert!(
            body.text.ends_with("; certificate-expired for mx.alert.example from 1 organization (50 sessions), in reports covering mxguard's rollover of mx.alert.example at 2024-05-31 10:00 UTC (key roll starts)"),
            "{}",
            body.text
        );
        assert_eq!(body.overlapping_changes.len(), 1);
    }

    #[tokio::test]
    async fn alerts_once_per_condition_and_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReportsHandle::open(&dir.path().join("db")).unwrap();
        let (url, mut hook) = webhook(204).await;
        let alerter = Alerter::new(settings(&url), store.clone()).unwrap();

        add(&store, "a", 100, 5).await; // 5 failures: below min_failures
        assert_eq!(alerter.process(domain(), NOW).await.unwrap(), vec![]);
        add(&store, "b", 0, 20).await; // 25 of 125 failed
        assert_eq!(
            alerter.process(domain(), NOW).await.unwrap(),
            vec![("alert.example".to_string(), AlertAction::Fire)]
        );
        let body: AlertPayload = serde_json::from_str(&hook.recv().await.unwrap()).unwrap();
        assert_eq!(
            (
                body.status.as_str(),
                body.failed_sessions,
                body.successful_sessions
            ),
            ("firing", 25, 100)
        );
        assert_eq!(alerter.state("alert.example"), AlertState::Firing);

        add(&store, "c", 0, 20).await; // still failing: no second alert
        assert_eq!(alerter.process(domain(), NOW).await.unwrap(), vec![]);

        add(&store, "d", 100_000, 0).await; // ratio back under 5%
        assert_eq!(
            alerter.process(domain(), NOW).await.unwrap(),
            vec![("alert.example".to_string(), AlertAction::Resolve)]
        );
        let body: AlertPayload = serde_json::from_str(&hook.recv().await.unwrap()).unwrap();
        assert_eq!(body.status, "resolved");
        assert!(hook.try_recv().is_err(), "exactly two webhook calls");

        // Once the reports leave the window, nothing is counted.
        let later = NOW + time::Duration::days(60);
        assert_eq!(alerter.process(domain(), later).await.unwrap(), vec![]);
    }

    #[tokio::test]
    async fn failed_delivery_is_retried_at_next_evaluation() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReportsHandle::open(&dir.path().join("db")).unwrap();
        let (url, mut hook) = webhook(500).await;
        let alerter = Alerter::new(settings(&url), store.clone()).unwrap();
        add(&store, "a", 0, 50).await;
        let err = alerter.process(domain(), NOW).await.unwrap_err();
        assert!(err.to_string().contains("answered HTTP 500"), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("webhook {}", url.replace("/hook", ""))),
            "{err}"
        );
        hook.recv().await.unwrap();
        assert_eq!(alerter.state("alert.example"), AlertState::Armed);
    }

    #[tokio::test]
    async fn run_task_evaluates_notified_domains() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReportsHandle::open(&dir.path().join("db")).unwrap();
        let (url, mut hook) = webhook(200).await;
        // The synthetic reports end on 2024-06-01: use a window reaching back to then.
        let wide = AlertSettings {
            window: u64::MAX / 4,
            ..settings(&url)
        };
        let alerter = std::sync::Arc::new(Alerter::new(wide, store.clone()).unwrap());
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let (a, c) = (alerter.clone(), cancel.clone());
            async move { a.run(c, Duration::from_secs(3600)).await }
        });
        add(&store, "a", 0, 50).await;
        alerter.notify(vec!["alert.example".to_string()]);
        let body = tokio::time::timeout(Duration::from_secs(30), hook.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(body.contains("\"status\":\"firing\""), "{body}");
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap()
            .unwrap();
    }

    /// A stream of notifications costs a few evaluations, not one per notification, and the
    /// last one is still evaluated promptly: the alert fires and resolves exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn notifications_are_coalesced_but_never_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = ReportsHandle::open(&dir.path().join("db")).unwrap();
        let (url, mut hook) = webhook(200).await;
        let wide = AlertSettings {
            window: u64::MAX / 4,
            ..settings(&url)
        };
        let interval = Duration::from_millis(300);
        let alerter = std::sync::Arc::new(
            Alerter::new(wide, store.clone())
                .unwrap()
                .with_min_interval(interval),
        );
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let (a, c) = (alerter.clone(), cancel.clone());
            async move { a.run(c, Duration::from_secs(3600)).await }
        });
        async fn recv(hook: &mut mpsc::UnboundedReceiver<String>) -> String {
            tokio::time::timeout(Duration::from_secs(10), hook.recv())
                .await
                .expect("alert within 10 s")
                .unwrap()
        }

        add(&store, "a", 1000, 0).await;
        let start = tokio::time::Instant::now();
        for _ in 0..60 {
            alerter.notify(vec!["alert.example".to_string()]);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The condition appears at the end of the stream: its notification must not be lost.
        add(&store, "b", 0, 500).await;
        alerter.notify(vec!["alert.example".to_string()]);
        let body = recv(&mut hook).await;
        assert!(body.contains("\"status\":\"firing\""), "{body}");
        let elapsed = start.elapsed();
        let evaluations = alerter.evaluations();
        // One pass per interval at most (plus the first), not one per notification.
        let bound = elapsed.as_millis() / interval.as_millis() + 2;
        assert!(
            evaluations as u128 <= bound && evaluations < 20,
            "{evaluations} evaluations in {elapsed:?}"
        );

        // Still failing: more notifications, no second alert.
        for _ in 0..20 {
            alerter.notify(vec!["alert.example".to_string()]);
        }
        add(&store, "c", 100_000, 0).await;
        alerter.notify(vec!["alert.example".to_string()]);
        let body = recv(&mut hook).await;
        assert!(body.contains("\"status\":\"resolved\""), "{body}");
        tokio::time::sleep(interval * 3).await;
        assert!(hook.try_recv().is_err(), "exactly two webhook calls");
        assert_eq!(alerter.state("alert.example"), AlertState::Armed);
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn https_webhook_is_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let store = ReportsHandle::open(&dir.path().join("db")).unwrap();
        let err = Alerter::new(settings("https://hooks.example/x"), store).unwrap_err();
        assert!(
            err.to_string().starts_with("tlsrpt.alerts.webhook: "),
            "{err}"
        );
    }
}
