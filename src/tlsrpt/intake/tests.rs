//! Router tests, in-process through `tower::ServiceExt::oneshot`.

use super::*;
use crate::tlsrpt::store::ReportStore;
use crate::tlsrpt::tests::fixtures;
use axum::body::Body;
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;
use std::time::Instant;
use time::macros::datetime;
use tower::ServiceExt;

struct App {
    _dir: tempfile::TempDir,
    intake: Arc<Intake>,
    router: Router,
}

fn app_with(settings: IntakeSettings) -> App {
    let dir = tempfile::tempdir().unwrap();
    let store = ReportsHandle::open(&dir.path().join("tlsrpt.sqlite3")).unwrap();
    let intake = Arc::new(Intake::new(store, settings));
    App {
        _dir: dir,
        router: router(intake.clone()),
        intake,
    }
}

fn app() -> App {
    app_with(IntakeSettings::default())
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

const GZIP: &str = "application/tlsrpt+gzip";
const JSON: &str = "application/tlsrpt+json";

/// A POST of `body` to the default intake path, for posts made from spawned tasks or with a
/// body of their own making.
fn report_request(content_type: &str, body: Body) -> axum::http::Request<Body> {
    axum::http::Request::post("/tlsrpt")
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .unwrap()
}

impl App {
    async fn post_with(
        &self,
        content_type: &str,
        encoding: Option<&str>,
        body: Vec<u8>,
        content_length: bool,
    ) -> (StatusCode, String) {
        let mut req = axum::http::Request::post(&self.intake.settings().path)
            .header(header::CONTENT_TYPE, content_type);
        if let Some(e) = encoding {
            req = req.header(header::CONTENT_ENCODING, e);
        }
        if content_length {
            req = req.header(header::CONTENT_LENGTH, body.len());
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn post(&self, content_type: &str, body: Vec<u8>) -> (StatusCode, String) {
        self.post_with(content_type, None, body, true).await
    }

    async fn count(&self) -> u64 {
        self.intake.store().read(|s| s.count()).await.unwrap()
    }
}

#[tokio::test]
async fn every_sample_ingests_as_gzip_and_as_json_with_the_right_summary() {
    let since = datetime!(2000-01-01 0:00 UTC);
    for as_gzip in [true, false] {
        let app = app();
        for (name, json) in fixtures::ALL {
            let (ct, body) = if as_gzip {
                (GZIP, gz(json))
            } else {
                (JSON, json.to_vec())
            };
            let (status, text) = app.post(ct, body).await;
            assert_eq!(status, StatusCode::CREATED, "{name} gzip={as_gzip}: {text}");
        }
        let summary = app.intake.store().summary(None, since).await.unwrap();
        assert_eq!(summary.reports, 4);
        assert_eq!(
            summary.groups,
            crate::tlsrpt::store::tests::expected_groups(),
            "gzip={as_gzip}"
        );
        // A retransmission, in the other encoding, is acknowledged and stored once.
        for (name, json) in fixtures::ALL {
            let (ct, body) = if as_gzip {
                (JSON, json.to_vec())
            } else {
                (GZIP, gz(json))
            };
            let (status, text) = app.post(ct, body).await;
            assert_eq!(status, StatusCode::OK, "{name}: {text}");
            assert_eq!(text, "report already stored\n");
        }
        assert_eq!(app.count().await, 4);
        let snap = app.intake.counters().snapshot();
        assert_eq!((snap.received, snap.duplicates), (8, 4));
    }
}

/// A valid report with a fresh id, to check the intake still works after a refusal.
fn fresh(n: usize) -> Vec<u8> {
    fixtures::synthetic("After", &format!("after-{n}"), "after.example", 1, 0)
}

#[tokio::test]
async fn refusals_store_nothing_and_the_next_valid_post_succeeds() {
    let app = app();
    let valid = fixtures::SMTP_TLS;
    let truncated = {
        let z = gz(valid);
        z[..z.len() - 10].to_vec()
    };
    let bad_count = String::from_utf8(valid.to_vec())
        .unwrap()
        .replace(
            r#""total-failure-session-count":3"#,
            r#""total-failure-session-count":"3""#,
        )
        .into_bytes();
    let no_policies = fixtures::synthetic("O", "x", "d.example", 1, 0);
    let no_policies = String::from_utf8(no_policies).unwrap();
    let start = no_policies.find(r#""policies":["#).unwrap() + r#""policies":["#.len();
    let no_policies = format!("{}]}}", &no_policies[..start]).into_bytes();
    let oversize = {
        let mut v = b"{\"x\":\"".to_vec();
        v.resize(1024 * 1024 + 10, b'a');
        v
    };
    type Case = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Vec<u8>,
        bool,
        StatusCode,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "truncated gzip",
            GZIP,
            None,
            truncated,
            true,
            StatusCode::BAD_REQUEST,
            "invalid body: invalid gzip data",
        ),
        (
            "not gzip at all",
            GZIP,
            None,
            b"\x00\x01garbage".to_vec(),
            true,
            StatusCode::BAD_REQUEST,
            "invalid body: body is neither gzip nor JSON",
        ),
        (
            "count as a string",
            JSON,
            None,
            bad_count,
            true,
            StatusCode::BAD_REQUEST,
            "invalid report: policies[0].summary.total-failure-session-count: invalid type: string \"3\", expected a number",
        ),
        (
            "syntax error",
            JSON,
            None,
            b"{\"organization-name\": }".to_vec(),
            true,
            StatusCode::BAD_REQUEST,
            "invalid report: not valid JSON at line 1, column 23",
        ),
        (
            "no policies",
            JSON,
            None,
            no_policies,
            true,
            StatusCode::BAD_REQUEST,
            "invalid report: policies: at least one policy is required",
        ),
        (
            "empty body",
            JSON,
            None,
            Vec::new(),
            true,
            StatusCode::BAD_REQUEST,
            "invalid body: empty body",
        ),
        (
            "text/plain",
            "text/plain",
            None,
            valid.to_vec(),
            true,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported media type",
        ),
        (
            "octet-stream",
            "application/octet-stream",
            None,
            gz(valid),
            true,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported media type",
        ),
        (
            "brotli",
            JSON,
            Some("br"),
            valid.to_vec(),
            true,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported media type",
        ),
        (
            "oversize, declared",
            JSON,
            None,
            oversize.clone(),
            true,
            StatusCode::PAYLOAD_TOO_LARGE,
            "report too large",
        ),
        (
            "oversize, streamed",
            JSON,
            None,
            oversize,
            false,
            StatusCode::PAYLOAD_TOO_LARGE,
            "report too large",
        ),
    ];
    for (i, (name, ct, ce, body, declared, want, text_start)) in cases.into_iter().enumerate() {
        let (status, text) = app.post_with(ct, ce, body, declared).await;
        assert_eq!(status, want, "{name}: {text}");
        assert!(text.starts_with(text_start), "{name}: {text:?}");
        assert!(text.len() <= 202, "{name}: client text is short: {text:?}");
        assert_eq!(app.count().await, i as u64, "{name}: nothing stored");
        let (status, text) = app.post(JSON, fresh(i)).await;
        assert_eq!(status, StatusCode::CREATED, "after {name}: {text}");
    }
    let snap = app.intake.counters().snapshot();
    let rejected: u64 = snap.rejected.iter().map(|(_, n)| n).sum();
    assert_eq!(rejected, 11);
    let metrics = app.intake.render_metrics().await.unwrap();
    assert!(
        metrics.contains(
            "mxguard_tlsrpt_reports_rejected_total{reason=\"unsupported_media_type\"} 3\n"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("mxguard_tlsrpt_reports_rejected_total{reason=\"too_large\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mxguard_tlsrpt_reports_rejected_total{reason=\"invalid_report\"} 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mxguard_tlsrpt_reports_received_total 11\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mxguard_tlsrpt_sessions_total{domain=\"after.example\",policy_type=\"sts\",result=\"successful\"} 11\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mxguard_tlsrpt_last_report_timestamp_seconds{domain=\"after.example\"} "),
        "{metrics}"
    );
}

/// `copies` gzip members of 1 MiB of zeros each: about 1 KiB per MiB on the wire.
fn multi_member_bomb(copies: usize) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::best());
    e.write_all(&vec![0u8; 1024 * 1024]).unwrap();
    let member = e.finish().unwrap();
    member.repeat(copies)
}

#[tokio::test]
async fn gzip_bombs_are_413_quickly() {
    // 10 MB of zeros (about 10 KB gzipped) against a 4 MiB decompression cap.
    let small_cap = app_with(IntakeSettings {
        max_decompressed: 4 * 1024 * 1024,
        ..IntakeSettings::default()
    });
    let bomb = gz(&vec![0u8; 10_000_000]);
    assert!(bomb.len() < 20_000, "{}", bomb.len());
    let (status, text) = small_cap.post(GZIP, bomb).await;
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "report too large\n")
    );

    // 900 MiB in under 1 MiB, with the default limits (1 MiB in, 16 MiB out), also as a
    // second gzip layer under Content-Encoding.
    let app = app();
    let big = multi_member_bomb(900);
    assert!(big.len() < 1024 * 1024, "{}", big.len());
    for (ce, body) in [(None, big.clone()), (Some("gzip"), gz(&big))] {
        let start = Instant::now();
        let (status, text) = app.post_with(GZIP, ce, body, true).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
        // Inflating 16 MiB takes milliseconds; all 900 MiB would take many seconds.
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }
    assert_eq!(app.count().await, 0);
    let (status, _) = app.post(GZIP, gz(fixtures::GOOGLE)).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn storage_failure_is_503_and_recovers() {
    let app = app();
    let db = app.intake.store().path().to_path_buf();
    let side = ReportStore::open(&db).unwrap();
    let raw = |sql: &str| {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(sql).unwrap();
    };
    raw(
        "CREATE TRIGGER fail BEFORE INSERT ON reports BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;",
    );
    let resp = app
        .router
        .clone()
        .oneshot(report_request(JSON, Body::from(fixtures::RFC8460)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()[header::RETRY_AFTER], "60");
    let text = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
    // The client is not told about paths or SQL.
    assert_eq!(&text[..], b"storage unavailable, retry later\n");
    assert_eq!(side.count().unwrap(), 0);
    let health = app.intake.health().expect("unhealthy while storing fails");
    assert!(health.contains("disk on fire"), "{health}");
    raw("DROP TRIGGER fail;");
    let (status, _) = app.post(JSON, fixtures::RFC8460.to_vec()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(app.intake.health(), None);
}

#[tokio::test]
async fn only_post_on_the_configured_path() {
    let app = app_with(IntakeSettings {
        path: "/.well-known/tlsrpt".into(),
        ..IntakeSettings::default()
    });
    let (status, _) = app.post(JSON, fixtures::GOOGLE.to_vec()).await;
    assert_eq!(status, StatusCode::CREATED);
    let get = axum::http::Request::get("/.well-known/tlsrpt")
        .body(Body::empty())
        .unwrap();
    let resp = app.router.clone().oneshot(get).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let other = report_request(JSON, Body::from(fixtures::GOOGLE));
    let resp = app.router.clone().oneshot(other).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[test]
fn settings_are_strict_and_validated() {
    let s: IntakeSettings = toml::from_str("path = \"/reports\"").unwrap();
    assert_eq!(s.max_compressed, 1024 * 1024);
    assert_eq!(s.max_decompressed, 16 * 1024 * 1024);
    assert!(s.validate("tlsrpt.http").is_empty());
    assert!(toml::from_str::<IntakeSettings>("max_size = 3").is_err());
    let bad = IntakeSettings {
        path: "tlsrpt".into(),
        max_compressed: 10,
        max_decompressed: 5,
        read_timeout_secs: 0,
    };
    let problems = bad.validate("tlsrpt.http");
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with("tlsrpt.http.path: "));
}

#[test]
fn a_thousand_concurrent_posts_are_all_stored() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let app = app();
        // MXGUARD_TLSRPT_CONCURRENT_N raises the count for benchmarking (release builds).
        let n: u64 = std::env::var("MXGUARD_TLSRPT_CONCURRENT_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        // Bodies are built first so the timing covers the intake only. Half gzip, half JSON.
        let bodies: Vec<(String, &str, Vec<u8>)> = (0..n)
            .map(|i| {
                let id = format!("concurrent-{i}");
                let json = fixtures::synthetic("Many", &id, "many.example", 3, i % 2);
                if i % 2 == 0 {
                    (id, GZIP, gz(&json))
                } else {
                    (id, JSON, json)
                }
            })
            .collect();
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (id, ct, body) in bodies {
            let router = app.router.clone();
            tasks.spawn(async move {
                let req = report_request(ct, Body::from(body));
                let status = router.oneshot(req).await.unwrap().status();
                (id, status)
            });
        }
        let mut acked = Vec::new();
        while let Some(r) = tasks.join_next().await {
            let (id, status) = r.unwrap();
            assert!(status.is_success(), "{id}: {status}");
            acked.push(id);
        }
        let elapsed = start.elapsed();
        eprintln!(
            "{n} concurrent posts in {elapsed:?} ({:.0}/s)",
            n as f64 / elapsed.as_secs_f64()
        );
        assert_eq!(acked.len(), n as usize);
        let missing = app
            .intake
            .store()
            .read(move |s| {
                let mut missing = Vec::new();
                for id in &acked {
                    if !s.contains("Many", id)? {
                        missing.push(id.clone());
                    }
                }
                Ok(missing)
            })
            .await
            .unwrap();
        assert!(
            missing.is_empty(),
            "acknowledged but not stored: {missing:?}"
        );
        assert_eq!(app.count().await, n);
        let s = app
            .intake
            .store()
            .summary(Some("many.example".into()), datetime!(2000-01-01 0:00 UTC))
            .await
            .unwrap();
        assert_eq!(
            (s.groups[0].successful_sessions, s.groups[0].failed_sessions),
            (3 * n, n / 2)
        );
    });
}

/// A body that sends `first` and then never finishes.
struct Stalled {
    first: Option<Bytes>,
}

impl hyper::body::Body for Stalled {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        match self.first.take() {
            Some(b) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(b)))),
            None => std::task::Poll::Pending,
        }
    }
}

#[tokio::test]
async fn a_body_that_stalls_is_408_after_the_read_timeout() {
    let app = app_with(IntakeSettings {
        read_timeout_secs: 1,
        ..IntakeSettings::default()
    });
    let start = Instant::now();
    let req = report_request(
        JSON,
        Body::new(Stalled {
            first: Some(Bytes::from_static(&fixtures::GOOGLE[..100])),
        }),
    );
    let resp = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert_eq!(app.count().await, 0);
    let snap = app.intake.counters().snapshot();
    assert!(
        snap.rejected.contains(&(RejectReason::ReadTimeout, 1)),
        "{snap:?}"
    );
    let (status, _) = app.post(JSON, fixtures::GOOGLE.to_vec()).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn oversized_fields_are_400_naming_the_field() {
    let app = app();
    let report = |field: &str, value: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_slice(fixtures::RFC8460).unwrap();
        v[field] = value;
        serde_json::to_vec(&v).unwrap()
    };
    // A 15 MB organization name compresses to a few KB: refused, naming the field.
    let body = gz(&report("organization-name", "o".repeat(15_000_000).into()));
    assert!(body.len() < 64 * 1024, "{}", body.len());
    let (status, text) = app.post(GZIP, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(
        text.contains("organization-name") && text.contains("at most 1024"),
        "{text}"
    );
    let (status, text) = app
        .post(JSON, report("report-id", "r".repeat(1025).into()))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("report-id"), "{text}");
    let mut v: serde_json::Value = serde_json::from_slice(fixtures::RFC8460).unwrap();
    v["policies"][0]["policy"]["mx-host"] = serde_json::Value::Array(
        (0..1001)
            .map(|i| format!("mx{i}.example.com").into())
            .collect(),
    );
    let (status, text) = app.post(JSON, serde_json::to_vec(&v).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("policies[0].policy.mx-host"), "{text}");
    assert_eq!(app.count().await, 0);
}

#[tokio::test]
async fn reports_wait_for_a_decode_slot_then_get_503() {
    let dir = tempfile::tempdir().unwrap();
    let store = ReportsHandle::open(&dir.path().join("tlsrpt.sqlite3")).unwrap();
    let mut intake = Intake::new(store, IntakeSettings::default());
    intake.decode_wait = Duration::from_millis(200);
    let intake = Arc::new(intake);
    let router = router(intake.clone());
    // Every slot taken (as by slow decodes of big reports).
    let _held = intake
        .decode_slots
        .acquire_many(DECODE_SLOTS as u32)
        .await
        .unwrap();
    let resp = router
        .clone()
        .oneshot(report_request(JSON, Body::from(fixtures::RFC8460)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()[header::RETRY_AFTER], "60");
    drop(_held);
    let resp = router
        .oneshot(report_request(JSON, Body::from(fixtures::RFC8460)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_report_older_than_the_retention_is_answered_200_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = ReportsHandle::open(&dir.path().join("tlsrpt.sqlite3")).unwrap();
    // The RFC 8460 sample ended in 2016.
    let intake = Arc::new(Intake::new(store, IntakeSettings::default()).with_retention(30));
    let router = router(intake.clone());
    for _ in 0..2 {
        let resp = router
            .clone()
            .oneshot(report_request(JSON, Body::from(fixtures::RFC8460)))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let text = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(
            &text[..],
            b"report older than the retention period: expired, not stored\n"
        );
    }
    assert_eq!(intake.store().read(|s| s.count()).await.unwrap(), 0);
    let counters = intake.counters().snapshot();
    assert_eq!(counters.received, 0, "{counters:?}");
}

/// A decoded report frees its decode slot before its commit: while the writer waits for the
/// database, more reports than there are slots are decoded and wait to be committed together
/// (with the slot held through the commit, two reports at a time reached the writer and each
/// commit held one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_waiting_for_their_commit_hold_no_decode_slot() {
    let app = app();
    let n = DECODE_SLOTS + 3;
    // Another connection holds the write lock: the writer waits (its busy timeout is 10 s).
    let db = app._dir.path().join("tlsrpt.sqlite3");
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut posts = tokio::task::JoinSet::new();
    let mut least = usize::MAX;
    for i in 0..n {
        let body = fresh(i);
        least = least.min(body.len());
        let router = app.router.clone();
        posts.spawn(async move {
            let req = report_request(JSON, Body::from(body));
            router.oneshot(req).await.unwrap().status()
        });
    }
    let budget = app.intake.commit_budget_total as usize;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let waiting = budget - app.intake.commit_budget.available_permits();
        let free = app.intake.decode_slots.available_permits();
        if free == DECODE_SLOTS && waiting >= n * least {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 5 s: {free} of {DECODE_SLOTS} decode slots free, {waiting} bytes waiting for the commit"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        posts.try_join_next().is_none(),
        "a report was answered before its commit"
    );
    lock.execute_batch("ROLLBACK").unwrap();
    while let Some(status) = posts.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::CREATED);
    }
    assert_eq!(app.count().await, n as u64);
    assert_eq!(app.intake.commit_budget.available_permits(), budget);
}
