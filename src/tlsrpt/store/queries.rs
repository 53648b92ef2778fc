//! Read queries over stored reports: summaries, alert window counts, metrics totals,
//! listings and one report with its raw JSON. Read-only.

use crate::tlsrpt::alert::WindowCounts;
use crate::tlsrpt::metrics::{LastReport, SessionTotal};
use crate::tlsrpt::summary::{Count, DailySessions, GroupSummary, OrgCount, Summary};
use crate::tlsrpt::{self, normalize_domain};
use flate2::read::GzDecoder;
use rusqlite::{OptionalExtension, params};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use time::OffsetDateTime;

use super::*;

impl ReportStore {
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

    /// The failure details reported for `domain` in reports ending at or after `since`, with
    /// each report's period and organization (at most 10,000, newest first).
    pub fn failure_periods(
        &self,
        domain: &str,
        since: OffsetDateTime,
    ) -> Result<Vec<crate::tlsrpt::correlate::FailurePeriod>, ReportsError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT r.organization_name, r.start_time, r.end_time, f.result_type,
                        f.receiving_mx_hostname, f.failed_session_count
                 FROM failures f JOIN policies p ON p.id = f.policy
                 JOIN reports r ON r.id = p.report
                 WHERE p.policy_domain = ?1 AND r.end_time >= ?2
                 ORDER BY r.end_time DESC LIMIT 10000",
            )
            .map_err(sql(&self.path, "failure periods"))?;
        stmt.query_map(
            params![normalize_domain(domain), since.unix_timestamp()],
            |r| {
                Ok(crate::tlsrpt::correlate::FailurePeriod {
                    organization: r.get(0)?,
                    start: r.get(1)?,
                    end: r.get(2)?,
                    result_type: r.get(3)?,
                    mx: r
                        .get::<_, Option<String>>(4)?
                        .map(|m| m.trim_end_matches('.').to_ascii_lowercase()),
                    sessions: r.get::<_, i64>(5)?.max(0) as u64,
                })
            },
        )
        .and_then(|rows| rows.collect())
        .map_err(sql(&self.path, "failure periods"))
    }

    /// Sessions per UTC day (of the report's start) and policy type for `domain`, for the
    /// reports ending at or after `since`, oldest day first.
    pub fn daily(
        &self,
        domain: &str,
        since: OffsetDateTime,
    ) -> Result<Vec<DailySessions>, ReportsError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT r.start_time / 86400, p.policy_type, TOTAL(p.successful), TOTAL(p.failed)
                 FROM policies p JOIN reports r ON r.id = p.report
                 WHERE r.end_time >= ?1 AND p.policy_domain = ?2
                 GROUP BY 1, 2 ORDER BY 1, 2",
            )
            .map_err(sql(&self.path, "daily sessions"))?;
        stmt.query_map(
            params![since.unix_timestamp(), normalize_domain(domain)],
            |r| {
                Ok(DailySessions {
                    day: r.get(0)?,
                    policy_type: r.get(1)?,
                    successful: to_u64(r.get(2)?),
                    failed: to_u64(r.get(3)?),
                })
            },
        )
        .and_then(|rows| rows.collect())
        .map_err(sql(&self.path, "daily sessions"))
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

pub(super) const LISTING_SELECT: &str =
    "SELECT r.id, r.organization_name, r.report_id, r.start_time, r.end_time,
        r.received_at, group_concat(DISTINCT p.policy_domain), TOTAL(p.successful), TOTAL(p.failed)
     FROM reports r LEFT JOIN policies p ON p.report = r.id";

pub(super) fn listing_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReportListing> {
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

/// SQLite's TOTAL() is a float (it never overflows); counts are whole and non-negative.
pub(super) fn to_u64(f: f64) -> u64 {
    if f.is_finite() && f > 0.0 {
        f as u64
    } else {
        0
    }
}

pub(super) fn sql<'a>(
    path: &'a Arc<PathBuf>,
    what: &'static str,
) -> impl Fn(rusqlite::Error) -> ReportsError + 'a {
    move |source| ReportsError::Sqlite {
        path: path.to_path_buf(),
        what,
        source,
    }
}
