//! The single writer: inserts (deduplicated, gzip-compressed raw JSON) and retention
//! deletes on one thread fed by a bounded queue, and the async handle in front of it.

use crate::tlsrpt::alert::WindowCounts;
use crate::tlsrpt::normalize_domain;
use crate::tlsrpt::summary::Summary;
use rusqlite::{Transaction, params};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::*;

impl ReportStore {
    /// Stores one report in its own transaction.
    pub fn insert(&mut self, new: &NewReport) -> Result<Stored, ReportsError> {
        let mut out = self.insert_batch(&[new])?;
        Ok(out.remove(0))
    }

    /// Stores several reports in one transaction: all or none are committed.
    pub fn insert_batch(&mut self, batch: &[&NewReport]) -> Result<Vec<Stored>, ReportsError> {
        let path = Arc::clone(&self.path);
        let tx = self.conn.transaction().map_err(sql(&path, "begin"))?;
        let mut out = Vec::with_capacity(batch.len());
        for new in batch {
            out.push(insert_one(&tx, new).map_err(sql(&path, "insert report"))?);
        }
        tx.commit().map_err(sql(&path, "commit"))?;
        Ok(out)
    }

    /// Deletes reports whose end date is before `now - days`; returns how many.
    pub fn delete_older_than(
        &mut self,
        days: u32,
        now: OffsetDateTime,
    ) -> Result<usize, ReportsError> {
        let cutoff = now - time::Duration::days(i64::from(days));
        let path = Arc::clone(&self.path);
        let tx = self.conn.transaction().map_err(sql(&path, "begin"))?;
        let n = tx
            .execute(
                "DELETE FROM reports WHERE end_time < ?1",
                params![cutoff.unix_timestamp()],
            )
            .map_err(sql(&path, "delete old reports"))?;
        tx.commit().map_err(sql(&path, "commit"))?;
        Ok(n)
    }
}

pub(super) fn insert_one(tx: &Transaction<'_>, new: &NewReport) -> rusqlite::Result<Stored> {
    let r = &new.report;
    let inserted = tx
        .prepare_cached(
            "INSERT INTO reports (organization_name, report_id, contact_info, start_time, end_time,
                                  received_at, raw_gzip)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (organization_name, report_id) DO NOTHING",
        )?
        .execute(params![
            r.organization_name,
            r.report_id,
            r.contact_info,
            r.date_range.start_datetime.unix_timestamp(),
            r.date_range.end_datetime.unix_timestamp(),
            new.received_at.unix_timestamp(),
            new.raw_gzip,
        ])?;
    if inserted == 0 {
        let id = tx
            .prepare_cached(
                "SELECT id FROM reports WHERE organization_name = ?1 AND report_id = ?2",
            )?
            .query_row(params![r.organization_name, r.report_id], |row| row.get(0))?;
        return Ok(Stored::Duplicate { id });
    }
    let report_row = tx.last_insert_rowid();
    let mut policy_stmt = tx.prepare_cached(
        "INSERT INTO policies (report, position, policy_type, policy_domain, policy_string, mx_host,
                               successful, failed, end_time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut failure_stmt = tx.prepare_cached(
        "INSERT INTO failures (policy, result_type, sending_mta_ip, receiving_mx_hostname,
                               receiving_mx_helo, receiving_ip, failed_session_count,
                               additional_information, failure_reason_code)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let end_time = r.date_range.end_datetime.unix_timestamp();
    for (position, p) in r.policies.iter().enumerate() {
        policy_stmt.execute(params![
            report_row,
            position as i64,
            p.policy.policy_type.as_str(),
            p.policy.policy_domain.as_deref().map(normalize_domain),
            p.policy.policy_string.join("\n"),
            p.policy.mx_host.join("\n"),
            to_i64(p.summary.total_successful_session_count),
            to_i64(p.summary.total_failure_session_count),
            end_time,
        ])?;
        let policy_row = tx.last_insert_rowid();
        for f in &p.failure_details {
            failure_stmt.execute(params![
                policy_row,
                f.result_type.as_str(),
                f.sending_mta_ip.as_deref().map(normalize_ip),
                f.receiving_mx_hostname.as_deref().map(normalize_domain),
                f.receiving_mx_helo,
                f.receiving_ip.as_deref().map(normalize_ip),
                to_i64(f.failed_session_count),
                f.additional_information,
                f.failure_reason_code,
            ])?;
        }
    }
    Ok(Stored::New { id: report_row })
}

/// Canonical text of an IP address (`2001:db8::0012:1` → `2001:db8::12:1`); other text as is.
pub(super) fn normalize_ip(s: &str) -> String {
    let t = s.trim();
    t.parse::<IpAddr>()
        .map_or_else(|_| t.to_string(), |ip| ip.to_string())
}

pub(super) fn to_i64(n: u64) -> i64 {
    // The parser refuses counts above i64::MAX.
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) enum Job {
    Insert(
        Box<NewReport>,
        oneshot::Sender<Result<Stored, ReportsError>>,
    ),
    Retain(
        u32,
        OffsetDateTime,
        oneshot::Sender<Result<usize, ReportsError>>,
    ),
}

/// The async face of the store. Cheap to clone; the writer thread stops when the last clone
/// is dropped, after finishing the queued work.
#[derive(Debug, Clone)]
pub struct ReportsHandle {
    pub(super) tx: mpsc::Sender<Job>,
    pub(super) path: Arc<PathBuf>,
    pub(super) readers: Arc<Mutex<Vec<ReportStore>>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Insert(r, _) => write!(f, "Insert({:?})", r.report.report_id),
            Job::Retain(d, _, _) => write!(f, "Retain({d})"),
        }
    }
}

impl ReportsHandle {
    /// Opens (creating and migrating) the database and starts its writer thread.
    pub fn open(path: &Path) -> Result<ReportsHandle, ReportsError> {
        let store = ReportStore::open(path)?;
        let path = Arc::clone(&store.path);
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("tlsrpt-writer".into())
            .spawn(move || writer(store, rx))
            .map_err(|e| ReportsError::Dir(crate::state_dir::StoreError::io(path.as_ref(), e)))?;
        Ok(ReportsHandle {
            tx,
            path,
            readers: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the writer thread has stopped.
    pub fn writer_is_stopped(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the writer thread has stopped (it panicked or could not go on).
    pub async fn writer_stopped(&self) {
        self.tx.closed().await
    }

    pub(super) fn gone(&self) -> ReportsError {
        ReportsError::WriterGone {
            path: self.path.to_path_buf(),
        }
    }

    /// Stores a report; resolves only after the transaction holding it has committed.
    pub async fn insert(&self, new: NewReport) -> Result<Stored, ReportsError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Job::Insert(Box::new(new), ack))
            .await
            .map_err(|_| self.gone())?;
        done.await.map_err(|_| self.gone())?
    }

    /// Deletes reports whose end date is more than `days` days before `now`.
    pub async fn delete_older_than(
        &self,
        days: u32,
        now: OffsetDateTime,
    ) -> Result<usize, ReportsError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Job::Retain(days, now, ack))
            .await
            .map_err(|_| self.gone())?;
        done.await.map_err(|_| self.gone())?
    }

    /// Runs a query on a pooled read connection on tokio's blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ReportsError>
    where
        T: Send + 'static,
        F: FnOnce(&ReportStore) -> Result<T, ReportsError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let path = Arc::clone(&self.path);
        let joined = tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().ok().and_then(|mut v| v.pop());
            let store = match pooled {
                Some(s) => s,
                None => ReportStore::open_read_only(&path)?,
            };
            let result = f(&store);
            if let Ok(mut v) = readers.lock()
                && v.len() < MAX_IDLE_READERS
            {
                v.push(store);
            }
            result
        })
        .await;
        match joined {
            Ok(r) => r,
            Err(e) => Err(ReportsError::Task {
                path: self.path.to_path_buf(),
                reason: e.to_string(),
            }),
        }
    }

    pub async fn summary(
        &self,
        domain: Option<String>,
        since: OffsetDateTime,
    ) -> Result<Summary, ReportsError> {
        self.read(move |s| s.summary(domain.as_deref(), since))
            .await
    }

    pub async fn list(&self, filter: ListFilter) -> Result<Vec<ReportListing>, ReportsError> {
        self.read(move |s| s.list(&filter)).await
    }

    pub async fn show(&self, id: i64) -> Result<Option<StoredReport>, ReportsError> {
        self.read(move |s| s.show(id)).await
    }

    pub async fn window_counts(
        &self,
        domain: String,
        since: OffsetDateTime,
    ) -> Result<WindowCounts, ReportsError> {
        self.read(move |s| s.window_counts(&domain, since)).await
    }
}

/// Deletes reports whose end date is more than `days` days old, now and then every `every`,
/// until `cancel` fires. Failures are logged and retried at the next pass.
pub async fn run_retention(
    handle: ReportsHandle,
    days: u32,
    every: std::time::Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        if let Err(e) = handle
            .delete_older_than(days, OffsetDateTime::now_utc())
            .await
        {
            tracing::warn!(err = %e, days, "tlsrpt retention pass failed");
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// The writer thread: batches queued inserts into one transaction each.
pub(super) fn writer(mut store: ReportStore, mut rx: mpsc::Receiver<Job>) {
    let span = tracing::info_span!("tlsrpt-writer", path = %store.path.display());
    let _enter = span.enter();
    while let Some(first) = rx.blocking_recv() {
        let mut inserts: Vec<InsertJob> = Vec::new();
        let mut others = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Insert(r, ack) => inserts.push((r, ack)),
                other => others.push(other),
            }
            if inserts.len() + others.len() >= MAX_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !inserts.is_empty() {
            write_batch(&mut store, inserts);
        }
        for job in others {
            if let Job::Retain(days, now, ack) = job {
                let result = store.delete_older_than(days, now);
                match &result {
                    Ok(n) => tracing::info!(deleted = n, days, "old reports deleted"),
                    Err(e) => tracing::error!(err = %e, "deleting old reports failed"),
                }
                let _ = ack.send(result);
            }
        }
    }
    tracing::debug!("report writer stopped");
}

pub(super) type InsertJob = (
    Box<NewReport>,
    oneshot::Sender<Result<Stored, ReportsError>>,
);

pub(super) fn write_batch(store: &mut ReportStore, jobs: Vec<InsertJob>) {
    let refs: Vec<&NewReport> = jobs.iter().map(|(r, _)| r.as_ref()).collect();
    match store.insert_batch(&refs) {
        Ok(results) => {
            tracing::debug!(reports = jobs.len(), "batch committed");
            for ((_, ack), result) in jobs.into_iter().zip(results) {
                let _ = ack.send(Ok(result));
            }
        }
        Err(e) if jobs.len() > 1 => {
            // Isolate the failing report: retry one by one so good reports still commit.
            tracing::warn!(err = %e, reports = jobs.len(), "batch failed; retrying one by one");
            for (r, ack) in jobs {
                let result = store.insert(&r);
                if let Err(e) = &result {
                    tracing::error!(err = %e, report_id = %crate::logfield::untrusted(&r.report.report_id), "storing report failed");
                }
                let _ = ack.send(result);
            }
        }
        Err(e) => {
            tracing::error!(err = %e, "storing report failed");
            if let Some((_, ack)) = jobs.into_iter().next() {
                let _ = ack.send(Err(e));
            }
        }
    }
}
