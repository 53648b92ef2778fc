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
//!
//! Parts: `schema` (migrations, connection settings), `queries` (read-only),
//! `writer` (the single writer thread and the async handle).

mod queries;
mod schema;
mod writer;

#[allow(unused_imports)]
// each child's items, for the others, the tests and (pub ones) the crate
pub use queries::*;
#[allow(unused_imports)]
// each child's items, for the others, the tests and (pub ones) the crate
pub use schema::*;
#[allow(unused_imports)]
// each child's items, for the others, the tests and (pub ones) the crate
pub use writer::*;

use crate::tlsrpt::{self, Report};
use flate2::Compression;
use flate2::write::GzEncoder;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::OffsetDateTime;

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
}

// ---------------------------------------------------------------------------------------------
// Async handle: one writer thread, pooled readers.

#[cfg(test)]
pub(crate) mod tests;
