//! The TLS-RPT HTTPS intake (RFC 8460 section 5.3): an axum router the HTTPS server mounts.
//!
//! Owns: [`Intake`] (the store handle, limits, counters, optional alerter), [`router`] (one
//! `POST` route, default `/tlsrpt`) and [`Intake::ingest`], which the mail intake can reuse.
//! Must not touch: listeners, TLS, config files, CLI; the SQL lives in `crate::tlsrpt::store`.
//!
//! A report is answered `201 Created` when newly stored and `200 OK` when it repeats a
//! stored report (same organization-name and report-id), in both cases only after the
//! transaction holding it has committed. Refusals: `400` (bad gzip or JSON, with a short
//! reason naming the field), `408` (body not received within the read timeout), `413`
//! (compressed or decompressed size over the limit), `415` (media type or coding),
//! `503` (storage failed; `Retry-After` set). The body is read with a hard size limit;
//! headers are checked first so a wrong type or a declared oversize body is refused unread.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::Instrument;

use crate::logfield::untrusted;
use crate::tlsrpt::alerter::Alerter;
use crate::tlsrpt::metrics::{self, IntakeCounters, RejectReason};
use crate::tlsrpt::store::{NewReport, ReportsError, ReportsHandle, Stored};
use crate::tlsrpt::{self, DecodeError, ParseError, RejectKind};

/// Bodies at most this large are decoded on the async thread; larger ones (whose gunzip may
/// take milliseconds) on the blocking pool.
const INLINE_DECODE_MAX: usize = 4 * 1024;
/// Longest reason text sent to a client.
const MAX_CLIENT_REASON: usize = 200;

fn default_path() -> String {
    "/tlsrpt".to_string()
}
fn default_max_compressed() -> usize {
    1024 * 1024
}
fn default_max_decompressed() -> usize {
    16 * 1024 * 1024
}
fn default_read_timeout_secs() -> u64 {
    30
}

/// Intake limits (a `[tlsrpt.http]`-style config section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeSettings {
    /// The path that accepts `POST` (RFC 8460 reports go to the URI in the TXT record).
    #[serde(default = "default_path")]
    pub path: String,
    /// Largest request body accepted, in bytes (default 1 MiB).
    #[serde(default = "default_max_compressed")]
    pub max_compressed: usize,
    /// Largest report after gunzip, in bytes (default 16 MiB).
    #[serde(default = "default_max_decompressed")]
    pub max_decompressed: usize,
    /// Seconds allowed to receive the whole body (default 30).
    #[serde(
        default = "default_read_timeout_secs",
        deserialize_with = "crate::duration::secs"
    )]
    pub read_timeout_secs: u64,
}

impl Default for IntakeSettings {
    fn default() -> Self {
        IntakeSettings {
            path: default_path(),
            max_compressed: default_max_compressed(),
            max_decompressed: default_max_decompressed(),
            read_timeout_secs: default_read_timeout_secs(),
        }
    }
}

impl IntakeSettings {
    /// Every problem, each prefixed with `prefix.` and the key.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.path.starts_with('/') || self.path.contains(['?', '#', '{', '}', '*']) {
            problems.push(format!(
                "{prefix}.path: {:?} must be a plain absolute path such as \"/tlsrpt\"",
                self.path
            ));
        }
        if self.max_compressed == 0 {
            problems.push(format!("{prefix}.max_compressed: must be at least 1 byte"));
        }
        if self.max_decompressed < self.max_compressed {
            problems.push(format!(
                "{prefix}.max_decompressed: {} is below max_compressed {}",
                self.max_decompressed, self.max_compressed
            ));
        }
        if self.read_timeout_secs == 0 {
            problems.push(format!("{prefix}.read_timeout_secs: must be at least 1"));
        }
        problems
    }
}

/// Why a report was refused. Each variant knows its HTTP status and metrics label.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("invalid report: {0}")]
    Parse(#[from] ParseError),
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("request body not received within {after:?}")]
    ReadTimeout { after: Duration },
    #[error("reading the request body failed: {reason}")]
    Read { reason: String },
    #[error("storing the report failed: {0}")]
    Storage(#[from] ReportsError),
    /// Every decode slot stayed taken for `waited` (decoding is bounded in memory).
    #[error("no decode slot free within {waited:?}")]
    Busy { waited: Duration },
    /// The report ended before the retention period: it would be deleted at once (and then
    /// accepted again as new), so it is not stored. Answered with 200: nothing to retry.
    #[error("report ended {ended}, before the retention period of {days} days")]
    Expired { ended: String, days: u32 },
}

impl IntakeError {
    pub fn status(&self) -> StatusCode {
        match self {
            IntakeError::Decode(e) => match e.kind() {
                RejectKind::Invalid => StatusCode::BAD_REQUEST,
                RejectKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                RejectKind::UnsupportedType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            },
            IntakeError::Parse(_) | IntakeError::Read { .. } => StatusCode::BAD_REQUEST,
            IntakeError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IntakeError::ReadTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            IntakeError::Storage(_) | IntakeError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            IntakeError::Expired { .. } => StatusCode::OK,
        }
    }

    pub fn reason(&self) -> RejectReason {
        match self {
            IntakeError::Decode(e) => match e.kind() {
                RejectKind::Invalid => RejectReason::InvalidGzip,
                RejectKind::TooLarge => RejectReason::TooLarge,
                RejectKind::UnsupportedType => RejectReason::UnsupportedMediaType,
            },
            IntakeError::Parse(_) => RejectReason::InvalidReport,
            IntakeError::BodyTooLarge { .. } => RejectReason::TooLarge,
            IntakeError::ReadTimeout { .. } => RejectReason::ReadTimeout,
            IntakeError::Read { .. } => RejectReason::ReadError,
            IntakeError::Storage(_) => RejectReason::Storage,
            IntakeError::Busy { .. } => RejectReason::Busy,
            IntakeError::Expired { .. } => RejectReason::Expired,
        }
    }

    /// The short text for the client (details, such as storage paths, stay in the log).
    pub fn client_message(&self) -> String {
        let text = match self {
            IntakeError::Decode(e) => match e.kind() {
                RejectKind::UnsupportedType => {
                    "unsupported media type or encoding; send application/tlsrpt+gzip or application/tlsrpt+json".to_string()
                }
                RejectKind::TooLarge => "report too large".to_string(),
                RejectKind::Invalid => format!("invalid body: {e}"),
            },
            IntakeError::Parse(e) => format!("invalid report: {e}"),
            IntakeError::BodyTooLarge { .. } => "report too large".to_string(),
            IntakeError::ReadTimeout { .. } => "request body timeout".to_string(),
            IntakeError::Read { .. } => "could not read request body".to_string(),
            IntakeError::Storage(_) => "storage unavailable, retry later".to_string(),
            IntakeError::Busy { .. } => "too many reports at once, retry later".to_string(),
            IntakeError::Expired { .. } => {
                "report older than the retention period: expired, not stored".to_string()
            }
        };
        let clean: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        tlsrpt::truncate(&clean, MAX_CLIENT_REASON)
    }
}

/// Everything the intake route needs; share it as `Arc<Intake>`.
#[derive(Debug)]
pub struct Intake {
    store: ReportsHandle,
    settings: IntakeSettings,
    counters: IntakeCounters,
    alerter: Option<Arc<Alerter>>,
    /// Reports decoded at once: memory for decoding stays below this many times
    /// `max_decompressed` (plus the parsed reports), however many arrive.
    decode_slots: tokio::sync::Semaphore,
    /// How long a report waits for a decode slot before 503 (Retry-After).
    decode_wait: Duration,
    /// Bytes of decoded reports waiting for their commit (one permit per byte of report JSON):
    /// [`DECODE_SLOTS`] × `max_decompressed`. A report takes its share before its decode slot
    /// is freed, so the decoded reports in memory stay bounded while the writer commits many
    /// at once.
    commit_budget: tokio::sync::Semaphore,
    /// The permits of `commit_budget` in all: the most one report takes.
    commit_budget_total: u32,
    /// Reports that ended more than this many days ago are not stored (`tlsrpt.retention_days`).
    retention_days: Option<u32>,
    /// The last storage failure, until a report is stored again (for `/healthz`).
    storage_failure: std::sync::Mutex<Option<String>>,
}

/// Reports decoded (gunzip + parse) at the same time.
pub const DECODE_SLOTS: usize = 2;
/// How long a report waits for a decode slot.
const DECODE_WAIT: Duration = Duration::from_secs(10);

/// Permits of [`Intake::commit_budget`]: as many bytes as [`DECODE_SLOTS`] reports of the
/// largest size take.
fn commit_budget(settings: &IntakeSettings) -> u32 {
    let bytes = DECODE_SLOTS.saturating_mul(settings.max_decompressed.max(1));
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl Intake {
    pub fn new(store: ReportsHandle, settings: IntakeSettings) -> Intake {
        let budget = commit_budget(&settings);
        Intake {
            store,
            settings,
            counters: IntakeCounters::default(),
            alerter: None,
            decode_slots: tokio::sync::Semaphore::new(DECODE_SLOTS),
            decode_wait: DECODE_WAIT,
            commit_budget: tokio::sync::Semaphore::new(budget as usize),
            commit_budget_total: budget,
            retention_days: None,
            storage_failure: std::sync::Mutex::new(None),
        }
    }

    /// Why the intake cannot store reports right now (its writer stopped, or the last
    /// report failed to be stored and none was stored since); `None` when it can.
    pub fn health(&self) -> Option<String> {
        if self.store.writer_is_stopped() {
            return Some("the report writer has stopped".into());
        }
        self.storage_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .map(|e| format!("the report store fails: {e}"))
    }

    /// Refuses (with 200, "expired, not stored") reports that the retention would delete.
    pub fn with_retention(mut self, days: u32) -> Intake {
        self.retention_days = Some(days);
        self
    }

    /// Notifies `alerter` of the domains of each newly stored report.
    pub fn with_alerter(mut self, alerter: Arc<Alerter>) -> Intake {
        self.alerter = Some(alerter);
        self
    }

    pub fn settings(&self) -> &IntakeSettings {
        &self.settings
    }

    pub fn store(&self) -> &ReportsHandle {
        &self.store
    }

    pub fn counters(&self) -> &IntakeCounters {
        &self.counters
    }

    /// Decodes, parses and stores one report body; returns after the commit. Counts the
    /// outcome. Usable by any transport (HTTPS here, mail later).
    pub async fn ingest(
        &self,
        body: Bytes,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
    ) -> Result<Stored, IntakeError> {
        let result = self
            .ingest_inner(body, content_type, content_encoding)
            .await;
        match &result {
            Ok(stored) => {
                self.counters
                    .received(matches!(stored, Stored::Duplicate { .. }));
                *self
                    .storage_failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
            }
            Err(e) => {
                self.counters.rejected(e.reason());
                if let IntakeError::Storage(s) = e {
                    *self
                        .storage_failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) =
                        Some(crate::logfield::untrusted(s).to_string());
                }
            }
        }
        result
    }

    /// A decode slot or a share of the commit budget, waited for at most `decode_wait`
    /// (503 with Retry-After beyond that).
    async fn within_wait<P>(
        &self,
        permit: impl Future<Output = Result<P, tokio::sync::AcquireError>>,
    ) -> Result<P, IntakeError> {
        let busy = || IntakeError::Busy {
            waited: self.decode_wait,
        };
        tokio::time::timeout(self.decode_wait, permit)
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())
    }

    async fn ingest_inner(
        &self,
        body: Bytes,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
    ) -> Result<Stored, IntakeError> {
        let (max_c, max_d) = (self.settings.max_compressed, self.settings.max_decompressed);
        let received_at = OffsetDateTime::now_utc();
        let prepare = move |body: &[u8], ct: Option<&str>, ce: Option<&str>| {
            let json = tlsrpt::decode_body(body, ct, ce, max_c, max_d)?;
            let report = tlsrpt::parse_report(&json)?;
            Ok::<_, IntakeError>((NewReport::new(report, &json, received_at), json.len()))
        };
        let slot = self.within_wait(self.decode_slots.acquire()).await?;
        let (new, size) = if body.len() <= INLINE_DECODE_MAX {
            prepare(&body, content_type, content_encoding)?
        } else {
            let (ct, ce) = (
                content_type.map(str::to_string),
                content_encoding.map(str::to_string),
            );
            tokio::task::spawn_blocking(move || prepare(&body, ct.as_deref(), ce.as_deref()))
                .await
                .map_err(|e| IntakeError::Read {
                    reason: format!("decode task failed: {e}"),
                })??
        };
        // The decode slot is held until the report has its share of the commit budget, then
        // freed: the commit (a durable write, batched with the others waiting) needs no slot.
        let total = self.commit_budget_total;
        let share = u32::try_from(size).map_or(total, |s| s.clamp(1, total));
        let _queued = self
            .within_wait(self.commit_budget.acquire_many(share))
            .await?;
        drop(slot);
        if let Some(days) = self.retention_days {
            let end = new.report.date_range.end_datetime;
            if end < received_at - time::Duration::days(i64::from(days)) {
                return Err(IntakeError::Expired {
                    ended: end.date().to_string(),
                    days,
                });
            }
        }
        let domains = new.report.domains();
        let (org, report_id) = (
            new.report.organization_name.clone(),
            new.report.report_id.clone(),
        );
        let stored = self.store.insert(new).await?;
        match stored {
            Stored::New { id } => {
                tracing::info!(
                    id,
                    org = %untrusted(&org),
                    report_id = %untrusted(&report_id),
                    domains = %untrusted(domains.join(",")),
                    "tlsrpt report stored"
                );
                if let Some(alerter) = &self.alerter {
                    alerter.notify(domains);
                }
            }
            Stored::Duplicate { id } => {
                tracing::info!(
                    id,
                    org = %untrusted(&org),
                    report_id = %untrusted(&report_id),
                    "tlsrpt report already stored"
                );
            }
        }
        Ok(stored)
    }

    /// The Prometheus text for the TLS-RPT metrics (counters plus stored totals).
    pub async fn render_metrics(&self) -> Result<String, ReportsError> {
        let (sessions, last) = self
            .store
            .read(|s| Ok((s.session_totals()?, s.last_reports()?)))
            .await?;
        Ok(metrics::render(&self.counters.snapshot(), &sessions, &last))
    }
}

/// The intake routes: `POST {settings.path}` with the body limit applied.
pub fn router(intake: Arc<Intake>) -> Router {
    let path = intake.settings.path.clone();
    let limit = intake.settings.max_compressed;
    Router::new()
        .route(&path, post(post_report))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(intake)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn post_report(State(intake): State<Arc<Intake>>, req: Request) -> Response {
    let span = tracing::info_span!("tlsrpt_intake");
    let result = receive(&intake, req).instrument(span.clone()).await;
    let _entered = span.enter();
    match result {
        Ok(Stored::New { .. }) => (StatusCode::CREATED, "report stored\n").into_response(),
        Ok(Stored::Duplicate { .. }) => (StatusCode::OK, "report already stored\n").into_response(),
        Err(e) => {
            let status = e.status();
            if status.is_server_error() {
                tracing::error!(status = status.as_u16(), err = %untrusted(&e), "tlsrpt report not stored");
            } else {
                tracing::info!(status = status.as_u16(), reason = e.reason().label(), err = %untrusted(&e), "tlsrpt report refused");
            }
            let mut resp = (status, format!("{}\n", e.client_message())).into_response();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            }
            resp
        }
    }
}

/// Most of a refused HTTP/2 upload read before answering (see [`receive`]).
const EARLY_DRAIN_MAX: usize = 64 * 1024;

async fn receive(intake: &Intake, req: Request) -> Result<Stored, IntakeError> {
    let headers = req.headers().clone();
    let ct = header_str(&headers, header::CONTENT_TYPE);
    let ce = header_str(&headers, header::CONTENT_ENCODING);
    let limit = intake.settings.max_compressed;
    // Refuse what the headers already condemn, without reading the body.
    let early = tlsrpt::check_headers(ct, ce)
        .map_err(IntakeError::from)
        .and_then(|()| {
            match header_str(&headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok()) {
                Some(n) if n > limit as u64 => Err(IntakeError::BodyTooLarge { limit }),
                _ => Ok(()),
            }
        });
    let after = Duration::from_secs(intake.settings.read_timeout_secs);
    if let Err(e) = early {
        intake.counters.rejected(e.reason());
        if req.version() == axum::http::Version::HTTP_2
            && !headers.contains_key(header::EXPECT)
            && !matches!(e, IntakeError::BodyTooLarge { .. })
        {
            // Read and drop a small body first: answering while an HTTP/2 client is still
            // uploading resets its stream, which the client reports as a transport error
            // instead of this status. (HTTP/1.1 needs no such care.)
            let drained = axum::body::to_bytes(req.into_body(), limit.min(EARLY_DRAIN_MAX));
            let _ = tokio::time::timeout(after, drained).await;
        }
        return Err(e);
    }
    let body = match tokio::time::timeout(after, Bytes::from_request(req, &())).await {
        Ok(Ok(b)) => b,
        Ok(Err(rejection)) => {
            let e = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                IntakeError::BodyTooLarge { limit }
            } else {
                IntakeError::Read {
                    reason: rejection.body_text(),
                }
            };
            intake.counters.rejected(e.reason());
            return Err(e);
        }
        Err(_) => {
            let e = IntakeError::ReadTimeout { after };
            intake.counters.rejected(e.reason());
            return Err(e);
        }
    };
    intake.ingest(body, ct, ce).await
}

#[cfg(test)]
mod tests;
