//! `mxguard reports`: the TLS-RPT summary, one stored report, and importing report mails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;

/// The TLS-RPT database in the state directory.
use crate::daemon::REPORTS_DB;

/// report files; idempotent. Returns an error if any item failed (not for skipped ones).
/// `mxguard reports import PATH…`: stores the reports found in .eml, mbox, Maildir and
/// report files; idempotent. Returns an error if any item failed (not for skipped ones).
pub async fn import_reports(path: &Path, paths: &[PathBuf], json: bool) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    crate::state_dir::ensure_dir(&config.state_dir)?;
    let db = config.state_dir.join(REPORTS_DB);
    let handle = crate::tlsrpt::store::ReportsHandle::open(&db)
        .with_context(|| format!("opening the report store {}", db.display()))?;
    let intake = crate::tlsrpt::intake::Intake::new(handle, config.tlsrpt.intake.clone())
        .with_retention(config.tlsrpt.retention_days);
    let summary = crate::tlsrpt::import::import(&intake, paths).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.render());
    }
    if summary.failed() > 0 {
        anyhow::bail!("{} item(s) could not be imported", summary.failed());
    }
    Ok(())
}

/// Parses `--since`: `7d`, `24h`, `90m`, `3600s` or plain seconds.
pub fn parse_since(text: &str) -> anyhow::Result<Duration> {
    crate::duration::parse(text).map_err(|e| anyhow::anyhow!("--since: {e}"))
}

fn open_reports(config: &Config) -> anyhow::Result<crate::tlsrpt::store::ReportStore> {
    let db = config.state_dir.join(REPORTS_DB);
    if !db.exists() {
        anyhow::bail!(
            "no report database at {} yet: start the daemon with [tlsrpt] enabled first",
            db.display()
        );
    }
    crate::tlsrpt::store::ReportStore::open_read_only(&db)
        .with_context(|| format!("opening {}", db.display()))
}

/// `mxguard reports`: summary per domain and policy type.
pub fn print_reports(
    path: &Path,
    domain: Option<&str>,
    since: &str,
    json: bool,
    all: bool,
) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let since = time::OffsetDateTime::now_utc() - parse_since(since)?;
    let store = open_reports(&config)?;
    let domain = domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase());
    let summary = store.summary(domain.as_deref(), since)?;
    // Failures set against mxguard's own changes (rollover steps, deployments, policies).
    let changes = crate::changelog::read(&config.state_dir.join(crate::changelog::FILE));
    let mut overlaps = std::collections::BTreeMap::new();
    let mut failing: Vec<&str> = summary
        .groups
        .iter()
        .filter(|g| g.failed_sessions > 0)
        .filter_map(|g| g.domain.as_deref())
        .collect();
    failing.dedup();
    for d in failing {
        let o = crate::tlsrpt::correlate::overlaps(d, &store.failure_periods(d, since)?, &changes);
        if !o.is_empty() {
            overlaps.insert(d.to_string(), o);
        }
    }
    if json {
        let mut v = serde_json::to_value(&summary)?;
        v["overlapping_changes"] = serde_json::to_value(&overlaps)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", crate::tlsrpt::summary::render_text(&summary, all));
        if !overlaps.is_empty() {
            println!("\nfailures around mxguard's own changes:");
            for (d, list) in &overlaps {
                for o in list {
                    println!("  {}: {}", crate::tlsrpt::summary::clean(d), o.text);
                }
            }
        }
    }
    Ok(())
}

/// `mxguard reports list`: one line per stored report (id, organization, period, domains,
/// sessions), newest first.
pub fn list_reports(
    path: &Path,
    domain: Option<&str>,
    since: &str,
    json: bool,
) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let since = time::OffsetDateTime::now_utc() - parse_since(since)?;
    let store = open_reports(&config)?;
    let listing = store.list(&crate::tlsrpt::store::ListFilter {
        domain: domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
        since: Some(since),
        limit: None,
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(());
    }
    let day = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    let rows: Vec<[String; 6]> = listing
        .iter()
        .map(|r| {
            [
                r.id.to_string(),
                crate::tlsrpt::summary::clean(&r.organization_name),
                format!(
                    "{} – {}",
                    r.start.format(&day).unwrap_or_default(),
                    r.end.format(&day).unwrap_or_default()
                ),
                r.domains.join(","),
                r.successful_sessions.to_string(),
                r.failed_sessions.to_string(),
            ]
        })
        .collect();
    let header = [
        "ID",
        "ORGANIZATION",
        "PERIOD (UTC)",
        "DOMAINS",
        "SUCCESSFUL",
        "FAILED",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            if i == 0 || i >= 4 {
                l.push_str(&format!("{c:>w$}"));
            } else {
                l.push_str(&format!("{c:<w$}"));
            }
        }
        println!("{}", l.trim_end());
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]);
    }
    if rows.is_empty() {
        println!("no reports");
    }
    Ok(())
}

/// `mxguard reports show ID`: one stored report with its raw JSON.
pub fn print_report(path: &Path, id: i64) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let store = open_reports(&config)?;
    match store.show(id)? {
        Some(r) => {
            println!("{}", serde_json::to_string_pretty(&r)?);
            println!("-- raw report as received --");
            println!("{}", String::from_utf8_lossy(&r.raw_json));
            Ok(())
        }
        None => anyhow::bail!("no report with id {id}"),
    }
}
