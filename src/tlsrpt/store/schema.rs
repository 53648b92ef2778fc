//! The database schema: migrations by `PRAGMA user_version`, connection settings (WAL,
//! synchronous=FULL), and refusing a database newer than this binary.

use std::sync::Arc;

use super::*;

/// Schema migrations; `PRAGMA user_version` is the number applied.
pub(super) const MIGRATIONS: &[&str] = &[
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

impl ReportStore {
    pub(super) fn configure(&self) -> Result<(), ReportsError> {
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

    pub(super) fn schema_version(&self) -> Result<i64, ReportsError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql(&self.path, "read schema version"))
    }

    pub(super) fn too_new(&self, found: i64) -> ReportsError {
        ReportsError::SchemaTooNew {
            path: self.path.to_path_buf(),
            found,
            supported: MIGRATIONS.len(),
        }
    }

    pub(super) fn migrate(&mut self) -> Result<(), ReportsError> {
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
}
