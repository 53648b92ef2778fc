//! Report store tests: sample summaries, dedupe, retention, migrations, batching, durability.

use super::*;
use std::io::Read;

use flate2::read::GzDecoder;
use rusqlite::params;

use crate::tlsrpt::alert::WindowCounts;
use crate::tlsrpt::parse_report;
use crate::tlsrpt::summary::{Count, GroupSummary, OrgCount};
use crate::tlsrpt::tests::fixtures;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2024-09-10 12:00 UTC);

fn new_report(json: &[u8]) -> NewReport {
    NewReport::new(parse_report(json).unwrap(), json, NOW)
}

fn open_with_samples() -> (tempfile::TempDir, ReportStore) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = ReportStore::open(&dir.path().join("state").join(DB_FILE)).unwrap();
    for (name, json) in fixtures::ALL {
        let stored = store.insert(&new_report(json)).unwrap();
        assert!(matches!(stored, Stored::New { .. }), "{name}: {stored:?}");
    }
    (dir, store)
}

fn count(key: Option<&str>, sessions: u64) -> Count {
    Count {
        key: key.map(str::to_string),
        sessions,
    }
}

fn org(name: &str, reports: u64, ok: u64, failed: u64) -> OrgCount {
    OrgCount {
        organization: name.to_string(),
        reports,
        successful_sessions: ok,
        failed_sessions: failed,
    }
}

/// The expected summary over all four samples, worked out by hand from the files:
/// - google.com.from-eml.json: cardinalhealth.ca, no-policy-found, 48 ok, 0 failed.
/// - rfc8460.json: company-y.example, sts, 5326 ok, 303 failed; details 100
///   certificate-expired (mx1, 2001:db8:abcd:0012::1), 200 starttls-not-supported (mx2,
///   2001:db8:abcd:0013::1), 3 validation-failure (mx-backup, 198.51.100.62).
/// - smtp_tls.json: example.com, sts, 0 ok, 3 failed; details 2 + 1 validation-failure at MX
///   example.com from 209.85.222.201 and 209.85.208.176.
/// - mail.ru.json: example.com, sts, 0 ok, 1 failed; details 1 + 1 sts-policy-fetch-error
///   without MX or IP (the details add up to 2, more than the total of 1).
pub(crate) fn expected_groups() -> Vec<GroupSummary> {
    vec![
        GroupSummary {
            domain: Some("cardinalhealth.ca".into()),
            policy_type: "no-policy-found".into(),
            reports: 1,
            successful_sessions: 48,
            failed_sessions: 0,
            failures_by_result_type: vec![],
            failures_by_receiving_mx: vec![],
            failures_by_sending_ip: vec![],
            by_organization: vec![org("Google Inc.", 1, 48, 0)],
        },
        GroupSummary {
            domain: Some("company-y.example".into()),
            policy_type: "sts".into(),
            reports: 1,
            successful_sessions: 5326,
            failed_sessions: 303,
            failures_by_result_type: vec![
                count(Some("starttls-not-supported"), 200),
                count(Some("certificate-expired"), 100),
                count(Some("validation-failure"), 3),
            ],
            failures_by_receiving_mx: vec![
                count(Some("mx2.mail.company-y.example"), 200),
                count(Some("mx1.mail.company-y.example"), 100),
                count(Some("mx-backup.mail.company-y.example"), 3),
            ],
            failures_by_sending_ip: vec![
                count(Some("2001:db8:abcd:13::1"), 200),
                count(Some("2001:db8:abcd:12::1"), 100),
                count(Some("198.51.100.62"), 3),
            ],
            by_organization: vec![org("Company-X", 1, 5326, 303)],
        },
        GroupSummary {
            domain: Some("example.com".into()),
            policy_type: "sts".into(),
            reports: 2,
            successful_sessions: 0,
            failed_sessions: 4,
            failures_by_result_type: vec![
                count(Some("validation-failure"), 3),
                count(Some("sts-policy-fetch-error"), 2),
            ],
            failures_by_receiving_mx: vec![count(Some("example.com"), 3), count(None, 2)],
            failures_by_sending_ip: vec![
                count(None, 2),
                count(Some("209.85.222.201"), 2),
                count(Some("209.85.208.176"), 1),
            ],
            by_organization: vec![org("Example Inc.", 1, 0, 3), org("Mail.ru", 1, 0, 1)],
        },
    ]
}

#[test]
fn summary_of_the_samples_has_the_hand_computed_counts() {
    let (_dir, store) = open_with_samples();
    let since = datetime!(2000-01-01 0:00 UTC);
    let s = store.summary(None, since).unwrap();
    assert_eq!(s.reports, 4);
    assert_eq!(s.since, since);
    assert_eq!(s.domain, None);
    assert_eq!(s.groups, expected_groups());

    // Restricted to one domain (given in another case, with a trailing dot).
    let s = store.summary(Some("Example.COM."), since).unwrap();
    assert_eq!(s.reports, 2);
    assert_eq!(s.domain.as_deref(), Some("example.com"));
    assert_eq!(s.groups, vec![expected_groups().remove(2)]);

    // Since 2024-01-10: smtp_tls (ends 2024-01-09) and rfc8460 (2016) drop out.
    let s = store.summary(None, datetime!(2024-01-10 0:00 UTC)).unwrap();
    assert_eq!(s.reports, 2);
    let ex = s
        .groups
        .iter()
        .find(|g| g.domain.as_deref() == Some("example.com"))
        .unwrap();
    assert_eq!((ex.reports, ex.failed_sessions), (1, 1));
    assert_eq!(ex.by_organization, vec![org("Mail.ru", 1, 0, 1)]);

    assert_eq!(
        store.window_counts("example.com", since).unwrap(),
        WindowCounts {
            successful: 0,
            failed: 4
        }
    );
    assert_eq!(
        store.window_counts("company-y.example", since).unwrap(),
        WindowCounts {
            successful: 5326,
            failed: 303
        }
    );
}

#[test]
fn retransmission_is_stored_once() {
    let (_dir, mut store) = open_with_samples();
    for (name, json) in fixtures::ALL {
        let stored = store.insert(&new_report(json)).unwrap();
        assert!(
            matches!(stored, Stored::Duplicate { .. }),
            "{name}: {stored:?}"
        );
    }
    // Duplicates within one batch, too.
    let a = new_report(&fixtures::synthetic("Org", "dup-1", "d.example", 1, 0));
    let results = store.insert_batch(&[&a, &a]).unwrap();
    assert!(matches!(results[0], Stored::New { .. }));
    assert_eq!(
        results[1],
        Stored::Duplicate {
            id: results[0].id()
        }
    );
    assert_eq!(store.count().unwrap(), 5);
    let s = store.summary(None, datetime!(2000-01-01 0:00 UTC)).unwrap();
    assert_eq!(s.reports, 5);
    // Same report-id from another organization is a different report.
    let b = new_report(&fixtures::synthetic("Other", "dup-1", "d.example", 1, 0));
    assert!(matches!(store.insert(&b).unwrap(), Stored::New { .. }));
}

#[test]
fn show_returns_the_raw_json_and_list_is_newest_first() {
    let (_dir, store) = open_with_samples();
    let all = store.list(&ListFilter::default()).unwrap();
    let ids: Vec<&str> = all.iter().map(|l| l.organization_name.as_str()).collect();
    assert_eq!(ids, ["Google Inc.", "Mail.ru", "Example Inc.", "Company-X"]);
    let mail_ru = &all[1];
    assert_eq!(
        mail_ru.report_id,
        "b28254de-7b2e-be36-bb5c-4c3b92da8b25@mail.ru"
    );
    assert_eq!(mail_ru.domains, vec!["example.com"]);
    assert_eq!(
        (mail_ru.successful_sessions, mail_ru.failed_sessions),
        (0, 1)
    );
    assert_eq!(mail_ru.end, datetime!(2024-02-23 0:00 UTC));
    assert_eq!(mail_ru.received_at, NOW);

    let shown = store.show(mail_ru.id).unwrap().unwrap();
    assert_eq!(shown.raw_json, fixtures::MAIL_RU);
    assert_eq!(shown.report, parse_report(fixtures::MAIL_RU).unwrap());
    assert_eq!(&shown.listing, mail_ru);
    assert!(store.show(9999).unwrap().is_none());

    let filtered = store
        .list(&ListFilter {
            domain: Some("example.com".into()),
            since: None,
            limit: Some(1),
        })
        .unwrap();
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].organization_name, "Mail.ru");
    let json = serde_json::to_string(&shown).unwrap();
    assert!(json.contains("\"end\":\"2024-02-23T00:00:00Z\""), "{json}");
}

#[test]
fn retention_deletes_reports_ending_before_the_cutoff_with_their_rows() {
    let (_dir, mut store) = open_with_samples();
    // 30 days before 2024-09-10 is 2024-08-11: only Google's report (2024-09-03) stays.
    let deleted = store.delete_older_than(30, NOW).unwrap();
    assert_eq!(deleted, 3);
    assert_eq!(store.count().unwrap(), 1);
    let rows = |table: &str| -> i64 {
        store
            .conn
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(rows("policies"), 1);
    assert_eq!(rows("failures"), 0);
    assert!(
        store
            .contains("Google Inc.", "2024-09-03T00:00:00Z_cardinalhealth.ca")
            .unwrap()
    );
    assert_eq!(store.delete_older_than(30, NOW).unwrap(), 0);
}

#[test]
fn migrations_are_versioned_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    drop(ReportStore::open(&path).unwrap());
    let store = ReportStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
    let mode: String = store
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = store
        .conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous=FULL");
    store.conn.pragma_update(None, "user_version", 99).unwrap();
    drop(store);
    let err = ReportStore::open(&path).unwrap_err();
    assert!(
        matches!(err, ReportsError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains(DB_FILE), "{err}");
    assert!(ReportStore::open_read_only(&path).is_err());
}

/// The per-thread deflate state writes what a fresh `GzEncoder` writes for report-sized
/// input, the same bytes call after call (reuse leaks nothing from one report into the
/// next), and every output gunzips back, large input (chunked differently) included.
#[test]
fn gzip_matches_a_fresh_encoder_and_round_trips() {
    let big: Vec<u8> = (0..40_000u32)
        .flat_map(|i| format!("{{\"n\":{}}}", i.wrapping_mul(2_654_435_761) % 9973).into_bytes())
        .collect();
    let mut inputs: Vec<&[u8]> = fixtures::ALL.iter().map(|(_, json)| *json).collect();
    inputs.extend([&b""[..], &big[..], fixtures::RFC8460]);
    for data in inputs {
        let ours = gzip(data);
        if data.len() <= 64 * 1024 {
            assert!(ours == gzip_with_encoder(data), "{} bytes", data.len());
        }
        assert!(
            ours == gzip(data),
            "{} bytes: not deterministic",
            data.len()
        );
        let mut back = Vec::new();
        GzDecoder::new(&ours[..]).read_to_end(&mut back).unwrap();
        assert!(back == data, "{} bytes: round trip", data.len());
    }
}

/// The plan of the alert window count: only the covering index, never the `reports` table.
#[test]
fn window_counts_reads_only_the_covering_index() {
    let (_dir, store) = open_with_samples();
    let plan: Vec<String> = store
        .conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT TOTAL(successful), TOTAL(failed) FROM policies
             WHERE policy_domain = ?2 AND end_time >= ?1",
        )
        .unwrap()
        .query_map(params![0, "example.com"], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        plan,
        vec![
            "SEARCH policies USING COVERING INDEX policies_domain_end \
             (policy_domain=? AND end_time>?)"
                .to_string()
        ],
        "{plan:?}"
    );
    // Inside the window only (as in the summary test above: one report, one failure).
    assert_eq!(
        store
            .window_counts("example.com", datetime!(2024-01-10 0:00 UTC))
            .unwrap(),
        WindowCounts {
            successful: 0,
            failed: 1
        }
    );
}

/// A version-1 file (no `policies.end_time`) is readable before and after its migration.
#[test]
fn version_1_database_is_migrated_and_keeps_its_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO reports VALUES (1, 'Org', 'old', NULL, 100, 200, 300, x'00');
             INSERT INTO reports VALUES (2, 'Org', 'new', NULL, 1000, 2000, 3000, x'00');
             INSERT INTO policies VALUES (1, 1, 0, 'sts', 'v1.example', '', '', 7, 1);
             INSERT INTO policies VALUES (2, 2, 0, 'sts', 'v1.example', '', '', 5, 20);
             INSERT INTO policies VALUES (3, 2, 1, 'sts', 'other.example', '', '', 9, 9);",
        )
        .unwrap();
    }
    let at = |secs| OffsetDateTime::from_unix_timestamp(secs).unwrap();
    let expect = |store: &ReportStore| {
        assert_eq!(
            store.window_counts("v1.example", at(0)).unwrap(),
            WindowCounts {
                successful: 12,
                failed: 21
            }
        );
        assert_eq!(
            store.window_counts("V1.example.", at(1000)).unwrap(),
            WindowCounts {
                successful: 5,
                failed: 20
            }
        );
        assert_eq!(
            store.window_counts("v1.example", at(2001)).unwrap(),
            WindowCounts::default()
        );
    };
    // A reader (the CLI) of a file no daemon has migrated yet.
    let ro = ReportStore::open_read_only(&path).unwrap();
    assert_eq!(ro.version, 1);
    expect(&ro);
    drop(ro);

    let mut store = ReportStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
    let ends: Vec<(i64, i64)> = store
        .conn
        .prepare("SELECT id, end_time FROM policies ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ends, vec![(1, 200), (2, 2000), (3, 2000)]);
    expect(&store);
    // New reports get their end date on each policy row too.
    let json = fixtures::synthetic("Org", "fresh", "v1.example", 1, 2);
    let stored = store.insert(&new_report(&json)).unwrap();
    let end: i64 = store
        .conn
        .query_row(
            "SELECT DISTINCT p.end_time FROM policies p WHERE p.report = ?1",
            params![stored.id()],
            |r| r.get(0),
        )
        .unwrap();
    let report_end: i64 = store
        .conn
        .query_row(
            "SELECT end_time FROM reports WHERE id = ?1",
            params![stored.id()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(end, report_end);
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn handle_batches_concurrent_inserts_and_acks_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let rt = runtime();
    let n = 5000;
    let elapsed = rt.block_on(async {
        let handle = ReportsHandle::open(&path).unwrap();
        // Parse and compress up front: this test measures the store.
        let reports: Vec<NewReport> = (0..n)
            .map(|i| {
                new_report(&fixtures::synthetic(
                    "Bulk",
                    &format!("r{i}"),
                    "bulk.example",
                    10,
                    i % 3,
                ))
            })
            .collect();
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for r in reports {
            let h = handle.clone();
            tasks.spawn(async move { h.insert(r).await });
        }
        while let Some(res) = tasks.join_next().await {
            assert!(matches!(res.unwrap().unwrap(), Stored::New { .. }));
        }
        let elapsed = start.elapsed();
        let s = handle
            .summary(Some("bulk.example".into()), datetime!(2000-01-01 0:00 UTC))
            .await
            .unwrap();
        assert_eq!(s.reports, n);
        assert_eq!(s.groups[0].successful_sessions, 10 * n);
        assert_eq!(
            s.groups[0].failed_sessions,
            (0..n).map(|i| i % 3).sum::<u64>()
        );
        let listed = handle
            .list(ListFilter {
                limit: Some(3),
                ..ListFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 3);
        let shown = handle.show(listed[0].id).await.unwrap().unwrap();
        assert_eq!(shown.listing, listed[0]);
        assert_eq!(handle.delete_older_than(1, NOW).await.unwrap(), n as usize);
        elapsed
    });
    let rate = n as f64 / elapsed.as_secs_f64();
    // Printed for the record (debug builds are slower); see the report for release numbers.
    eprintln!("stored {n} reports in {elapsed:?}: {rate:.0} reports/s");
    let store = ReportStore::open(&path).unwrap();
    assert_eq!(store.count().unwrap(), 0);
    assert_eq!(store.integrity_check().unwrap(), "ok");
}

#[tokio::test]
async fn retention_task_deletes_old_reports_until_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let handle = ReportsHandle::open(&dir.path().join(DB_FILE)).unwrap();
    for (_, json) in fixtures::ALL {
        handle.insert(new_report(json)).await.unwrap();
    }
    let old = fixtures::synthetic("Recent", "recent", "r.example", 1, 0);
    let recent = String::from_utf8(old)
        .unwrap()
        .replace("2024-06-01T00:00:00Z", "2999-01-01T00:00:00Z");
    handle.insert(new_report(recent.as_bytes())).await.unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(run_retention(
        handle.clone(),
        30,
        Duration::from_secs(3600),
        cancel.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while handle.read(|s| s.count()).await.unwrap() != 1 {
        assert!(Instant::now() < deadline, "retention did not run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        handle
            .read(|s| s.contains("Recent", "recent"))
            .await
            .unwrap()
    );
}

const DURABILITY_ENV: &str = "MXGUARD_TLSRPT_DURABILITY_DB";
const DURABILITY_CHILD: &str = "tlsrpt::store::tests::durability_child_role";

/// The child role of `acknowledged_reports_survive_sigkill`: ingests reports forever, 32 at a
/// time, printing `ACK <report-id>` after each acknowledgement. Does nothing when run normally.
#[test]
fn durability_child_role() {
    let Some(path) = std::env::var_os(DURABILITY_ENV) else {
        return;
    };
    let rt = runtime();
    rt.block_on(async move {
        let handle = ReportsHandle::open(Path::new(&path)).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let printer = tokio::task::spawn_blocking(move || {
            let mut out = std::io::stdout().lock();
            while let Some(id) = rx.blocking_recv() {
                writeln!(out, "ACK {id}").unwrap();
                out.flush().unwrap();
            }
        });
        let mut i = 0u64;
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            while tasks.len() < 32 {
                i += 1;
                let id = format!("durable-{i}");
                let json = fixtures::synthetic("Durable", &id, "durable.example", 1, 1);
                let (h, tx) = (handle.clone(), tx.clone());
                tasks.spawn(async move {
                    let r = NewReport::new(parse_report(&json).unwrap(), &json, NOW);
                    h.insert(r).await.unwrap();
                    // Acknowledged: only now may the id be announced.
                    let _ = tx.send(id);
                });
            }
            tasks.join_next().await.unwrap().unwrap();
            if printer.is_finished() {
                break;
            }
        }
    });
}

#[test]
fn acknowledged_reports_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            DURABILITY_CHILD,
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DURABILITY_ENV, &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Read until enough acknowledgements, then kill without warning mid-stream.
    while acked.len() < 2000 {
        assert!(
            Instant::now() < deadline,
            "child acknowledged only {} reports",
            acked.len()
        );
        match lines.next() {
            Some(line) => {
                if let Some(id) = line.unwrap().strip_prefix("ACK ") {
                    acked.push(id.to_string());
                }
            }
            None => panic!(
                "child exited early after {} acks: {:?}",
                acked.len(),
                child.wait()
            ),
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "child was killed: {status:?}");
    // Acks already in the pipe were also given before the kill.
    for line in lines {
        if let Some(id) = line.unwrap().strip_prefix("ACK ") {
            acked.push(id.to_string());
        }
    }
    let store = ReportStore::open(&path).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !store.contains("Durable", id).unwrap())
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged reports lost: {missing:?}",
        missing.len()
    );
    let stored = store.count().unwrap();
    assert!(stored >= acked.len() as u64, "{stored} < {}", acked.len());
    eprintln!(
        "{} acknowledged, {stored} stored after SIGKILL",
        acked.len()
    );
}
