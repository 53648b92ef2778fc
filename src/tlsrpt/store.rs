//! The TLS-RPT report store: one SQLite database in the state directory.
//!
//! Owns: the database file (`tlsrpt.sqlite3` by convention, with its `-wal`/`-shm` files), its
//! schema and migrations (`PRAGMA user_version`), and every query over stored reports. Must not
//! touch HTTP, parsing rules (it stores what `crate::tlsrpt` parsed) or any other file.
//!
//! Durability: WAL with `synchronous=FULL`, so a committed transaction has been fsynced to the
//! WAL and survives SIGKILL and power loss. A report is acknowledged only after the transaction
//! holding it commits.
//!
//! Concurrency: one writer. [`ReportsHandle`] owns a dedicated writer thread fed by a bounded
//! channel of `(report, ack)`; the thread takes everything queued (up to [`MAX_BATCH`]),
//! inserts it in one transaction, commits, then acks each sender. Reads run on tokio's blocking
//! pool with pooled read-only connections (WAL readers never block the writer).
//!
//! Data: each report is one `reports` row with its raw JSON kept gzip-compressed for audit,
//! unique on (organization-name, report-id) so a retransmission is stored once; one
//! `policies` row per policy and one `failures` row per failure detail, so summaries are SQL.
//! Domains and MX names are stored lowercased without a trailing dot, IP addresses in
//! canonical form, timestamps as Unix seconds.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::tlsrpt::alert::WindowCounts;
use crate::tlsrpt::metrics::{LastReport, SessionTotal};
use crate::tlsrpt::summary::{Count, GroupSummary, OrgCount, Summary};
use crate::tlsrpt::{self, Report, normalize_domain};

/// Conventional file name of the database inside the state directory.
pub const DB_FILE: &str = "tlsrpt.sqlite3";
/// Most reports committed in one transaction.
pub const MAX_BATCH: usize = 256;
/// Capacity of the writer's queue; senders wait (backpressure) when it is full.
pub const QUEUE: usize = 4096;
/// Read connections kept open for reuse.
const MAX_IDLE_READERS: usize = 4;
/// Cap when inflating a stored raw report (it passed the intake cap when it arrived).
const MAX_STORED_RAW: usize = 64 * 1024 * 1024;

/// Schema migrations; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: reports, policies, failure details.
    "CREATE TABLE reports (
        id INTEGER PRIMARY KEY,
        organization_name TEXT NOT NULL,
        report_id TEXT NOT NULL,
        contact_info TEXT,
        start_time INTEGER NOT NULL,
        end_time INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        raw_gzip BLOB NOT NULL,
        UNIQUE (organization_name, report_id)
    );
    CREATE INDEX reports_end_time ON reports(end_time);
    CREATE TABLE policies (
        id INTEGER PRIMARY KEY,
        report INTEGER NOT NULL REFERENCES reports(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        policy_type TEXT NOT NULL,
        policy_domain TEXT,
        policy_string TEXT NOT NULL,
        mx_host TEXT NOT NULL,
        successful INTEGER NOT NULL,
        failed INTEGER NOT NULL
    );
    CREATE INDEX policies_report ON policies(report);
    CREATE INDEX policies_domain ON policies(policy_domain);
    CREATE TABLE failures (
        id INTEGER PRIMARY KEY,
        policy INTEGER NOT NULL REFERENCES policies(id) ON DELETE CASCADE,
        result_type TEXT NOT NULL,
        sending_mta_ip TEXT,
        receiving_mx_hostname TEXT,
        receiving_mx_helo TEXT,
        receiving_ip TEXT,
        failed_session_count INTEGER NOT NULL,
        additional_information TEXT,
        failure_reason_code TEXT
    );
    CREATE INDEX failures_policy ON failures(policy);",
    // 2: the report's end date copied onto each policy row, with a covering index on
    // (policy_domain, end_time) so the alert window count reads only index entries inside the
    // window, never the `reports` rows (which hold the raw blob). It replaces the plain
    // `policies_domain` index (same leading column), so inserts maintain no extra index.
    "ALTER TABLE policies ADD COLUMN end_time INTEGER NOT NULL DEFAULT 0;
    UPDATE policies SET end_time = (SELECT r.end_time FROM reports r WHERE r.id = policies.report);
    CREATE INDEX policies_domain_end ON policies(policy_domain, end_time, successful, failed);
    DROP INDEX policies_domain;",
];

/// An error of the report store, naming the database file.
#[derive(Debug, thiserror::Error)]
pub enum ReportsError {
    #[error("{path}: {what}: {source}")]
    Sqlite {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{path}: schema version {found} is newer than this mxguard understands ({supported}); run a newer mxguard or move the file away"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: usize,
    },
    #[error("{path}: stored report {id}: {reason}")]
    Corrupt {
        path: PathBuf,
        id: i64,
        reason: String,
    },
    #[error(transparent)]
    Dir(#[from] crate::state_dir::StoreError),
    #[error("{path}: the report writer has stopped")]
    WriterGone { path: PathBuf },
    #[error("{path}: query task failed: {reason}")]
    Task { path: PathBuf, reason: String },
}

/// A parsed report ready to store.
#[derive(Debug, Clone)]
pub struct NewReport {
    pub report: Report,
    /// The report's JSON exactly as received (after un-gzipping), gzip-compressed.
    pub raw_gzip: Vec<u8>,
    pub received_at: OffsetDateTime,
}

impl NewReport {
    /// Keeps `raw_json` compressed alongside the parsed `report`.
    pub fn new(report: Report, raw_json: &[u8], received_at: OffsetDateTime) -> NewReport {
        NewReport {
            report,
            raw_gzip: gzip(raw_json),
            received_at,
        }
    }
}

/// Gzip (RFC 1952) of `data` at the fast level, byte for byte what `flate2::write::GzEncoder`
/// with `Compression::fast()` writes. The deflate state (~200 KB, zeroed on creation) is kept
/// per thread and reset between reports instead of being allocated for each one.
fn gzip(data: &[u8]) -> Vec<u8> {
    use flate2::{Compress, Crc, FlushCompress, Status};
    thread_local! {
        static DEFLATE: std::cell::RefCell<Compress> =
            std::cell::RefCell::new(Compress::new(Compression::fast(), false));
    }
    // Header: magic, deflate, no flags, no mtime, XFL 4 (fastest), OS unknown.
    let mut out = Vec::with_capacity(data.len() / 3 + 64);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255]);
    DEFLATE.with_borrow_mut(|z| {
        z.reset();
        loop {
            let consumed = usize::try_from(z.total_in()).unwrap_or(usize::MAX);
            let input = data.get(consumed..).unwrap_or_default();
            out.reserve(input.len() / 2 + 256);
            match z.compress_vec(input, &mut out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                // Raw deflate into memory does not fail; fall back to an encoder if it did.
                Err(_) => {
                    out = gzip_with_encoder(data);
                    return;
                }
            }
        }
        let mut crc = Crc::new();
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&crc.amount().to_le_bytes());
    });
    out
}

fn gzip_with_encoder(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 3 + 64), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// The outcome of storing a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Stored {
    /// Newly stored under this row id.
    New { id: i64 },
    /// Already stored (same organization and report-id) under this row id.
    Duplicate { id: i64 },
}

impl Stored {
    pub fn id(self) -> i64 {
        match self {
            Stored::New { id } | Stored::Duplicate { id } => id,
        }
    }
}

/// One row of `list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportListing {
    pub id: i64,
    pub organization_name: String,
    pub report_id: String,
    #[serde(serialize_with = "tlsrpt::ser_datetime")]
    pub start: OffsetDateTime,
    #[serde(serialize_with = "tlsrpt::ser_datetime")]
    pub end: OffsetDateTime,
    #[serde(serialize_with = "tlsrpt::ser_datetime")]
    pub received_at: OffsetDateTime,
    /// Policy domains named in the report (sorted).
    pub domains: Vec<String>,
    pub successful_sessions: u64,
    pub failed_sessions: u64,
}

/// A stored report with its raw JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredReport {
    #[serde(flatten)]
    pub listing: ReportListing,
    pub report: Report,
    /// The JSON as received, decompressed.
    #[serde(skip)]
    pub raw_json: Vec<u8>,
}

/// Which reports `list` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub domain: Option<String>,
    /// Only reports whose end is at or after this instant.
    pub since: Option<OffsetDateTime>,
    /// At most this many (newest first); `None` for all.
    pub limit: Option<u32>,
}

/// A synchronous connection to the report database.
#[derive(Debug)]
pub struct ReportStore {
    conn: Connection,
    path: Arc<PathBuf>,
    /// Schema version when opened (a read-only connection may see an unmigrated file).
    version: i64,
}

impl ReportStore {
    /// Opens the database read-write, creating it and applying migrations as needed.
    pub fn open(path: &Path) -> Result<ReportStore, ReportsError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::state_dir::ensure_dir(dir)?;
        }
        let path = Arc::new(path.to_path_buf());
        let conn = Connection::open(path.as_ref()).map_err(sql(&path, "open"))?;
        let mut store = ReportStore {
            conn,
            path,
            version: 0,
        };
        store.configure()?;
        store.migrate()?;
        store.version = store.schema_version()?;
        Ok(store)
    }

    /// Opens an existing database for queries only (no migrations).
    pub fn open_read_only(path: &Path) -> Result<ReportStore, ReportsError> {
        let path = Arc::new(path.to_path_buf());
        let conn = Connection::open_with_flags(
            path.as_ref(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql(&path, "open read-only"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql(&path, "set busy timeout"))?;
        let mut store = ReportStore {
            conn,
            path,
            version: 0,
        };
        let version = store.schema_version()?;
        if version > MIGRATIONS.len() as i64 {
            return Err(store.too_new(version));
        }
        store.version = version;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn configure(&self) -> Result<(), ReportsError> {
        let p = &self.path;
        let mode: String = self
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(sql(p, "enable WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(ReportsError::Sqlite {
                path: p.to_path_buf(),
                what: "enable WAL",
                source: rusqlite::Error::InvalidQuery,
            });
        }
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(sql(p, "set synchronous=FULL"))?;
        self.conn
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(sql(p, "enable foreign keys"))?;
        self.conn
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql(p, "set busy timeout"))?;
        Ok(())
    }

    fn schema_version(&self) -> Result<i64, ReportsError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql(&self.path, "read schema version"))
    }

    fn too_new(&self, found: i64) -> ReportsError {
        ReportsError::SchemaTooNew {
            path: self.path.to_path_buf(),
            found,
            supported: MIGRATIONS.len(),
        }
    }

    fn migrate(&mut self) -> Result<(), ReportsError> {
        let current = self.schema_version()?;
        if current > MIGRATIONS.len() as i64 {
            return Err(self.too_new(current));
        }
        let path = Arc::clone(&self.path);
        for (i, step) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
            let version = i + 1;
            let tx = self
                .conn
                .transaction()
                .map_err(sql(&path, "begin migration"))?;
            tx.execute_batch(step)
                .map_err(sql(&path, "migrate schema"))?;
            tx.pragma_update(None, "user_version", version as i64)
                .map_err(sql(&path, "set schema version"))?;
            tx.commit().map_err(sql(&path, "commit migration"))?;
            tracing::info!(path = %path.display(), version, "report database schema migrated");
        }
        Ok(())
    }

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

    /// Whether a report with this organization and report-id is stored.
    pub fn contains(&self, organization_name: &str, report_id: &str) -> Result<bool, ReportsError> {
        self.conn
            .prepare_cached("SELECT 1 FROM reports WHERE organization_name = ?1 AND report_id = ?2")
            .and_then(|mut s| s.exists(params![organization_name, report_id]))
            .map_err(sql(&self.path, "look up report"))
    }

    /// The number of stored reports.
    pub fn count(&self) -> Result<u64, ReportsError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM reports", [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(sql(&self.path, "count reports"))
    }

    /// `PRAGMA integrity_check`; `"ok"` when the file is sound.
    pub fn integrity_check(&self) -> Result<String, ReportsError> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA integrity_check")
            .map_err(sql(&self.path, "integrity check"))?;
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(sql(&self.path, "integrity check"))?;
        Ok(rows.join("\n"))
    }

    /// Per domain and policy type, for reports ending at or after `since`.
    pub fn summary(
        &self,
        domain: Option<&str>,
        since: OffsetDateTime,
    ) -> Result<Summary, ReportsError> {
        let p = &self.path;
        let domain = domain.map(normalize_domain);
        let since_ts = since.unix_timestamp();
        let filter = "r.end_time >= ?1 AND (?2 IS NULL OR p.policy_domain = ?2)";
        type Key = (Option<String>, String);
        let mut groups: BTreeMap<Key, GroupSummary> = BTreeMap::new();

        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT p.policy_domain, p.policy_type, COUNT(DISTINCT p.report),
                        TOTAL(p.successful), TOTAL(p.failed)
                 FROM policies p JOIN reports r ON r.id = p.report
                 WHERE {filter}
                 GROUP BY p.policy_domain, p.policy_type"
            ))
            .map_err(sql(p, "summarize"))?;
        let rows = stmt
            .query_map(params![since_ts, domain], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, f64>(3)?,
                    r.get::<_, f64>(4)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(sql(p, "summarize"))?;
        for (d, t, reports, ok, failed) in rows {
            groups.insert(
                (d.clone(), t.clone()),
                GroupSummary {
                    domain: d,
                    policy_type: t,
                    reports: reports.max(0) as u64,
                    successful_sessions: to_u64(ok),
                    failed_sessions: to_u64(failed),
                    failures_by_result_type: Vec::new(),
                    failures_by_receiving_mx: Vec::new(),
                    failures_by_sending_ip: Vec::new(),
                    by_organization: Vec::new(),
                },
            );
        }

        type Pick = fn(&mut GroupSummary) -> &mut Vec<Count>;
        let breakdowns: [(&str, Pick); 3] = [
            ("f.result_type", |g| &mut g.failures_by_result_type),
            ("f.receiving_mx_hostname", |g| {
                &mut g.failures_by_receiving_mx
            }),
            ("f.sending_mta_ip", |g| &mut g.failures_by_sending_ip),
        ];
        for (column, pick) in breakdowns {
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "SELECT p.policy_domain, p.policy_type, {column}, TOTAL(f.failed_session_count)
                     FROM failures f JOIN policies p ON p.id = f.policy
                     JOIN reports r ON r.id = p.report
                     WHERE {filter}
                     GROUP BY p.policy_domain, p.policy_type, {column}"
                ))
                .map_err(sql(p, "summarize failures"))?;
            let rows = stmt
                .query_map(params![since_ts, domain], |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, f64>(3)?,
                    ))
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(sql(p, "summarize failures"))?;
            for (d, t, key, n) in rows {
                if let Some(g) = groups.get_mut(&(d, t)) {
                    pick(g).push(Count {
                        key,
                        sessions: to_u64(n),
                    });
                }
            }
        }

        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT p.policy_domain, p.policy_type, r.organization_name, COUNT(DISTINCT r.id),
                        TOTAL(p.successful), TOTAL(p.failed)
                 FROM policies p JOIN reports r ON r.id = p.report
                 WHERE {filter}
                 GROUP BY p.policy_domain, p.policy_type, r.organization_name"
            ))
            .map_err(sql(p, "summarize organizations"))?;
        let rows = stmt
            .query_map(params![since_ts, domain], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, f64>(4)?,
                    r.get::<_, f64>(5)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(sql(p, "summarize organizations"))?;
        for (d, t, org, reports, ok, failed) in rows {
            if let Some(g) = groups.get_mut(&(d, t)) {
                g.by_organization.push(OrgCount {
                    organization: org,
                    reports: reports.max(0) as u64,
                    successful_sessions: to_u64(ok),
                    failed_sessions: to_u64(failed),
                });
            }
        }

        let reports: i64 = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM reports r WHERE r.end_time >= ?1 AND (?2 IS NULL OR EXISTS
                   (SELECT 1 FROM policies p WHERE p.report = r.id AND p.policy_domain = ?2))",
            )
            .and_then(|mut s| s.query_row(params![since_ts, domain], |r| r.get(0)))
            .map_err(sql(p, "count reports"))?;

        let mut groups: Vec<GroupSummary> = groups.into_values().collect();
        for g in &mut groups {
            for counts in [
                &mut g.failures_by_result_type,
                &mut g.failures_by_receiving_mx,
                &mut g.failures_by_sending_ip,
            ] {
                counts.sort_by(|a, b| b.sessions.cmp(&a.sessions).then_with(|| a.key.cmp(&b.key)));
            }
            g.by_organization.sort_by(|a, b| {
                b.failed_sessions
                    .cmp(&a.failed_sessions)
                    .then_with(|| b.reports.cmp(&a.reports))
                    .then_with(|| a.organization.cmp(&b.organization))
            });
        }
        Ok(Summary {
            since,
            domain,
            reports: reports.max(0) as u64,
            groups,
        })
    }

    /// Session counts for one domain over reports ending at or after `since` (alerting).
    ///
    /// Reads only the `policies_domain_end` index entries inside the window (a covering
    /// index: no table rows, no raw blobs), so its cost does not grow with older history.
    pub fn window_counts(
        &self,
        domain: &str,
        since: OffsetDateTime,
    ) -> Result<WindowCounts, ReportsError> {
        let query = if self.version >= 2 {
            "SELECT TOTAL(successful), TOTAL(failed) FROM policies
             WHERE policy_domain = ?2 AND end_time >= ?1"
        } else {
            // A read-only connection to a file no daemon has migrated yet.
            "SELECT TOTAL(p.successful), TOTAL(p.failed)
             FROM policies p JOIN reports r ON r.id = p.report
             WHERE r.end_time >= ?1 AND p.policy_domain = ?2"
        };
        self.conn
            .prepare_cached(query)
            .and_then(|mut s| {
                s.query_row(
                    params![since.unix_timestamp(), normalize_domain(domain)],
                    |r| {
                        Ok(WindowCounts {
                            successful: to_u64(r.get(0)?),
                            failed: to_u64(r.get(1)?),
                        })
                    },
                )
            })
            .map_err(sql(&self.path, "count window"))
    }

    /// Stored session totals per domain and policy type (metrics).
    pub fn session_totals(&self) -> Result<Vec<SessionTotal>, ReportsError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT policy_domain, policy_type, TOTAL(successful), TOTAL(failed)
                 FROM policies GROUP BY policy_domain, policy_type
                 ORDER BY policy_domain, policy_type",
            )
            .map_err(sql(&self.path, "session totals"))?;
        stmt.query_map([], |r| {
            Ok(SessionTotal {
                domain: r.get(0)?,
                policy_type: r.get(1)?,
                successful: to_u64(r.get(2)?),
                failed: to_u64(r.get(3)?),
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(sql(&self.path, "session totals"))
    }

    /// When the last report naming each domain was received (metrics).
    pub fn last_reports(&self) -> Result<Vec<LastReport>, ReportsError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT p.policy_domain, MAX(r.received_at)
                 FROM policies p JOIN reports r ON r.id = p.report
                 GROUP BY p.policy_domain ORDER BY p.policy_domain",
            )
            .map_err(sql(&self.path, "last reports"))?;
        stmt.query_map([], |r| {
            Ok(LastReport {
                domain: r.get(0)?,
                received_at: r.get(1)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(sql(&self.path, "last reports"))
    }

    /// Stored reports, newest end date first.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<ReportListing>, ReportsError> {
        let domain = filter.domain.as_deref().map(normalize_domain);
        let since = filter.since.map(OffsetDateTime::unix_timestamp);
        let limit = filter.limit.map_or(-1, i64::from);
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "{LISTING_SELECT}
                 WHERE (?1 IS NULL OR r.end_time >= ?1)
                   AND (?2 IS NULL OR EXISTS
                     (SELECT 1 FROM policies q WHERE q.report = r.id AND q.policy_domain = ?2))
                 GROUP BY r.id ORDER BY r.end_time DESC, r.id DESC LIMIT ?3"
            ))
            .map_err(sql(&self.path, "list reports"))?;
        stmt.query_map(params![since, domain, limit], listing_row)
            .and_then(|rows| rows.collect())
            .map_err(sql(&self.path, "list reports"))
    }

    /// One stored report with its decompressed raw JSON, or `None` if there is no such id.
    pub fn show(&self, id: i64) -> Result<Option<StoredReport>, ReportsError> {
        let listing = self
            .conn
            .prepare_cached(&format!("{LISTING_SELECT} WHERE r.id = ?1 GROUP BY r.id"))
            .and_then(|mut s| s.query_row(params![id], listing_row).optional())
            .map_err(sql(&self.path, "show report"))?;
        let Some(listing) = listing else {
            return Ok(None);
        };
        let raw_gzip: Vec<u8> = self
            .conn
            .query_row(
                "SELECT raw_gzip FROM reports WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .map_err(sql(&self.path, "show report"))?;
        let corrupt = |reason: String| ReportsError::Corrupt {
            path: self.path.to_path_buf(),
            id,
            reason,
        };
        let mut raw_json = Vec::new();
        GzDecoder::new(&raw_gzip[..])
            .take(MAX_STORED_RAW as u64)
            .read_to_end(&mut raw_json)
            .map_err(|e| corrupt(format!("raw data does not gunzip: {e}")))?;
        let report = tlsrpt::parse_report(&raw_json)
            .map_err(|e| corrupt(format!("raw JSON no longer parses: {e}")))?;
        Ok(Some(StoredReport {
            listing,
            report,
            raw_json,
        }))
    }
}

const LISTING_SELECT: &str =
    "SELECT r.id, r.organization_name, r.report_id, r.start_time, r.end_time,
        r.received_at, group_concat(DISTINCT p.policy_domain), TOTAL(p.successful), TOTAL(p.failed)
     FROM reports r LEFT JOIN policies p ON p.report = r.id";

fn listing_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReportListing> {
    let ts = |i: usize| -> rusqlite::Result<OffsetDateTime> {
        let secs: i64 = r.get(i)?;
        OffsetDateTime::from_unix_timestamp(secs).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                i,
                rusqlite::types::Type::Integer,
                Box::new(e),
            )
        })
    };
    let domains: Option<String> = r.get(6)?;
    let mut domains: Vec<String> = domains
        .map(|d| d.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    domains.sort();
    Ok(ReportListing {
        id: r.get(0)?,
        organization_name: r.get(1)?,
        report_id: r.get(2)?,
        start: ts(3)?,
        end: ts(4)?,
        received_at: ts(5)?,
        domains,
        successful_sessions: to_u64(r.get(7)?),
        failed_sessions: to_u64(r.get(8)?),
    })
}

fn insert_one(tx: &Transaction<'_>, new: &NewReport) -> rusqlite::Result<Stored> {
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
fn normalize_ip(s: &str) -> String {
    let t = s.trim();
    t.parse::<IpAddr>()
        .map_or_else(|_| t.to_string(), |ip| ip.to_string())
}

fn to_i64(n: u64) -> i64 {
    // The parser refuses counts above i64::MAX.
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// SQLite's TOTAL() is a float (it never overflows); counts are whole and non-negative.
fn to_u64(f: f64) -> u64 {
    if f.is_finite() && f > 0.0 {
        f as u64
    } else {
        0
    }
}

fn sql<'a>(
    path: &'a Arc<PathBuf>,
    what: &'static str,
) -> impl Fn(rusqlite::Error) -> ReportsError + 'a {
    move |source| ReportsError::Sqlite {
        path: path.to_path_buf(),
        what,
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Async handle: one writer thread, pooled readers.

enum Job {
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
    tx: mpsc::Sender<Job>,
    path: Arc<PathBuf>,
    readers: Arc<Mutex<Vec<ReportStore>>>,
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

    /// Resolves when the writer thread has stopped (it panicked or could not go on).
    pub async fn writer_stopped(&self) {
        self.tx.closed().await
    }

    fn gone(&self) -> ReportsError {
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
fn writer(mut store: ReportStore, mut rx: mpsc::Receiver<Job>) {
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

type InsertJob = (
    Box<NewReport>,
    oneshot::Sender<Result<Stored, ReportsError>>,
);

fn write_batch(store: &mut ReportStore, jobs: Vec<InsertJob>) {
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
                    tracing::error!(err = %e, report_id = %r.report.report_id, "storing report failed");
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

#[cfg(test)]
pub(crate) mod tests;
