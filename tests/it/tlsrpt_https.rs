//! TLS-RPT reports posted over HTTPS to the running daemon, as a reporting MTA sends them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Daemon, DomainSpec, Project, mxguard, reports_json};

const SAMPLES: &[&str] = &[
    "google.com.from-eml.json",
    "mail.ru.json",
    "rfc8460.json",
    "smtp_tls.json",
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tlsrpt")
        .join(name)
}

fn project() -> Project {
    // Samples are years old: keep them (retention_days).
    Project::with_extra(
        &[DomainSpec {
            name: "example.com",
            mx: &["mx1.example.com"],
            policy: "mode = \"enforce\"\nmax_age = 604800\n",
        }],
        "",
    )
    .tap(|p| p.append_config("[tlsrpt]\nretention_days = 36500\n"))
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&Self)) -> Self {
        f(&self);
        self
    }
}
impl Tap for Project {}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// POSTs `body` with curl; returns the HTTP status.
fn post(d: &Daemon, body: &[u8], content_type: &str, extra: &[&str]) -> u16 {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("body");
    std::fs::write(&f, body).unwrap();
    let mut args = vec![
        "-X".to_string(),
        "POST".into(),
        "-H".into(),
        format!("Content-Type: {content_type}"),
        "--data-binary".into(),
        format!("@{}", f.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = crate::harness::curl(&d.ca, "mta-sts.example.com", d.https, "/tlsrpt", &refs);
    assert_eq!(r.exit, 0, "{r:?}");
    r.status
}

/// (successful, failed) sessions per policy domain, computed from the fixture files.
fn expected_totals() -> BTreeMap<String, (u64, u64)> {
    let mut m = BTreeMap::new();
    for s in SAMPLES {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture(s)).unwrap()).unwrap();
        for p in v["policies"].as_array().unwrap() {
            let domain = p["policy"]["policy-domain"]
                .as_str()
                .unwrap()
                .to_ascii_lowercase();
            let e = m.entry(domain).or_insert((0, 0));
            e.0 += p["summary"]["total-successful-session-count"]
                .as_u64()
                .unwrap();
            e.1 += p["summary"]["total-failure-session-count"]
                .as_u64()
                .unwrap();
        }
    }
    m
}

fn summary_totals(p: &Project) -> BTreeMap<String, (u64, u64)> {
    let v = reports_json(p);
    let mut m = BTreeMap::new();
    for g in v["groups"].as_array().unwrap() {
        let e = m
            .entry(g["domain"].as_str().unwrap_or("").to_string())
            .or_insert((0, 0));
        e.0 += g["successful_sessions"].as_u64().unwrap();
        e.1 += g["failed_sessions"].as_u64().unwrap();
    }
    m
}

#[test]
fn samples_ingest_as_gzip_and_json_and_summarize_correctly() {
    let p = project();
    let d = p.start();
    for s in SAMPLES {
        let json = std::fs::read(fixture(s)).unwrap();
        assert_eq!(
            post(&d, &gzip(&json), "application/tlsrpt+gzip", &[]),
            201,
            "{s}"
        );
        // The same report again, as JSON: acknowledged, stored once.
        assert_eq!(post(&d, &json, "application/tlsrpt+json", &[]), 200, "{s}");
    }
    assert_eq!(summary_totals(&p), expected_totals());
    let out = mxguard(&["reports", "-c", &p.config_str(), "--since", "5000d"]);
    let text = String::from_utf8_lossy(&out.stdout);
    // The text table names every policy domain, and who reported the failures.
    for domain in expected_totals().keys() {
        assert!(
            text.contains(domain.as_str()),
            "{domain} missing from:\n{text}"
        );
    }
    assert!(text.contains("Company-X"), "{text}");

    // One line per stored report, newest first, with the ids the log names.
    let out = mxguard(&["reports", "list", "-c", &p.config_str(), "--since", "5000d"]);
    assert!(out.status.success(), "{out:?}");
    let list = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = list.lines().collect();
    assert!(
        lines[0].starts_with("ID  ORGANIZATION") && lines[0].ends_with("SUCCESSFUL  FAILED"),
        "{list}"
    );
    assert_eq!(lines.len(), 1 + SAMPLES.len(), "{list}");
    assert!(list.contains("Company-X"), "{list}");
    let out = mxguard(&[
        "reports",
        "list",
        "-c",
        &p.config_str(),
        "--since",
        "5000d",
        "--json",
    ]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), SAMPLES.len());
    let first_id = listed[0]["id"].as_i64().unwrap();
    assert!(
        lines[1].trim_start().starts_with(&format!("{first_id}  ")),
        "{list}"
    );
    // Filtered by a policy domain that one report names.
    let dom = listed[0]["domains"][0].as_str().unwrap().to_string();
    let out = mxguard(&[
        "reports",
        "list",
        "-c",
        &p.config_str(),
        "--since",
        "5000d",
        "--domain",
        &dom,
        "--json",
    ]);
    let only: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let only = only.as_array().unwrap();
    assert!(!only.is_empty() && only.len() <= SAMPLES.len());
    assert!(only.iter().all(|r| {
        r["domains"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == dom.as_str())
    }));
    // Metrics on the admin listener.
    let m = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{}/metrics", p.admin)])
        .output()
        .unwrap();
    let m = String::from_utf8_lossy(&m.stdout);
    let n = SAMPLES.len();
    assert!(
        m.contains(&format!(
            "mxguard_tlsrpt_reports_received_total {}\n",
            2 * n
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!("mxguard_tlsrpt_reports_duplicate_total {n}\n")),
        "{m}"
    );
    assert!(m.contains("mxguard_tlsrpt_sessions_total{"), "{m}");
}

#[test]
fn bad_bodies_get_the_right_4xx_and_nothing_is_stored() {
    let p = project();
    let d = p.start();
    // A gzip bomb: ~100 MB of zeros in a small body.
    let bomb = gzip(&vec![0u8; 100 << 20]);
    assert!(bomb.len() < 1 << 20);
    let started = std::time::Instant::now();
    // HTTP/1.1: the 413 may come before the upload ends, which h2 clients see as a reset.
    assert_eq!(
        post(&d, &bomb, "application/tlsrpt+gzip", &["--http1.1"]),
        413
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let json = std::fs::read(fixture("rfc8460.json")).unwrap();
    let gz = gzip(&json);
    assert_eq!(
        post(&d, &gz[..gz.len() / 2], "application/tlsrpt+gzip", &[]),
        400
    );
    assert_eq!(post(&d, b"{not json", "application/tlsrpt+json", &[]), 400);
    assert_eq!(post(&d, &json, "text/plain", &[]), 415);
    // Oversize, announced by Content-Length: refused before the body is read. (Over h2 the
    // early answer ends the upload with a stream reset that curl reports as an error; the
    // report is refused either way.)
    assert_eq!(
        post(
            &d,
            &vec![b' '; 2 << 20],
            "application/tlsrpt+json",
            &["--http1.1"]
        ),
        413
    );
    let v = reports_json(&p);
    assert_eq!(v["reports"], 0, "{v}");
    // Still healthy.
    assert_eq!(post(&d, &json, "application/tlsrpt+json", &[]), 201);
}

/// A minimal HTTPS client: one POST per connection, returns the status code.
async fn https_post(
    connector: tokio_rustls::TlsConnector,
    port: u16,
    body: Vec<u8>,
) -> std::io::Result<u16> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("mta-sts.example.com").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    let head = format!(
        "POST /tlsrpt HTTP/1.1\r\nHost: mta-sts.example.com\r\nContent-Type: application/tlsrpt+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await?;
    tls.write_all(&body).await?;
    let mut resp = Vec::new();
    tls.read_to_end(&mut resp).await?;
    let text = String::from_utf8_lossy(&resp);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {text:?}")))
}

fn numbered_report(i: usize) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("rfc8460.json")).unwrap()).unwrap();
    v["report-id"] = serde_json::Value::String(format!("load-{i}"));
    serde_json::to_vec(&v).unwrap()
}

fn connector(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in mxguard::x509::parse_chain(&std::fs::read_to_string(ca).unwrap()) {
        roots.add(c).unwrap();
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// Sends `n` distinct reports with up to 1000 in flight; returns the ids acknowledged 2xx.
/// `on_ack` is called after each acknowledgement with the running count.
fn blast(d: &Daemon, n: usize, on_ack: impl Fn(usize) + Send + Sync + 'static) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let conn = connector(&d.ca);
    let port = d.https;
    let on_ack = Arc::new(on_ack);
    rt.block_on(async move {
        let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let (conn, acked, on_ack) = (conn.clone(), acked.clone(), on_ack.clone());
            set.spawn(async move {
                let r = tokio::time::timeout(
                    Duration::from_secs(60),
                    https_post(conn, port, numbered_report(i)),
                )
                .await;
                if let Ok(Ok(code)) = r
                    && (200..300).contains(&code)
                {
                    let count = {
                        let mut a = acked.lock().unwrap();
                        a.push(format!("load-{i}"));
                        a.len()
                    };
                    on_ack(count);
                }
            });
        }
        while set.join_next().await.is_some() {}
        acked.lock().unwrap().clone()
    })
}

fn stored_ids(p: &Project) -> std::collections::BTreeSet<String> {
    let store =
        mxguard::tlsrpt::store::ReportStore::open_read_only(&p.path("state/reports.sqlite"))
            .unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    let all = store
        .list(&mxguard::tlsrpt::store::ListFilter::default())
        .unwrap();
    all.into_iter().map(|l| l.report_id).collect()
}

#[test]
fn thousand_concurrent_posts_are_all_stored() {
    let p = project();
    let d = p.start();
    let acked = blast(&d, 1000, |_| {});
    assert_eq!(acked.len(), 1000, "every post should succeed");
    let stored = stored_ids(&p);
    for id in &acked {
        assert!(stored.contains(id), "{id} acknowledged but not stored");
    }
}

#[test]
fn sigkill_during_ingestion_loses_no_acknowledged_report() {
    let p = project();
    let d = p.start();
    let pid = d.pid();
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let k = killed.clone();
    let acked = blast(&d, 1000, move |count| {
        if count == 200 && !k.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
    assert!(killed.load(std::sync::atomic::Ordering::SeqCst));
    assert!(acked.len() >= 200 && acked.len() < 1000, "{}", acked.len());
    drop(d);
    let stored = stored_ids(&p);
    for id in &acked {
        assert!(
            stored.contains(id),
            "{id} acknowledged but lost after SIGKILL"
        );
    }
    // The daemon starts again on the same state and serves.
    let d = p.start();
    assert_eq!(d.curl("mta-sts.example.com", &[]).status, 200);
}

#[test]
fn report_fields_cannot_forge_or_flood_log_lines() {
    let p = project();
    let d = p.start();
    let mut report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("rfc8460.json")).unwrap()).unwrap();
    report["report-id"] = "r1\n2026-11-30T00:00:00.000000Z ERROR forged line\u{1b}[31m\u{0}".into();
    // Within the 1 KiB field limit, but still more than a log line should carry.
    report["organization-name"] = "o".repeat(1000).into();
    let body = serde_json::to_vec(&report).unwrap();
    assert_eq!(post(&d, &body, "application/tlsrpt+json", &[]), 201);
    crate::harness::wait_for(
        "the report in the log",
        std::time::Duration::from_secs(10),
        || d.log_text().contains("tlsrpt report stored").then_some(()),
    );
    let log = d.log_text();
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2026-11-30T00:00:00.000000Z ERROR")),
        "a forged line:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}') && !log.contains('\u{0}'),
        "raw control characters"
    );
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2_000, "a log line of {longest} bytes");
    assert!(
        log.contains("r1\\n2026-11-30"),
        "the report id is logged escaped"
    );
    assert!(
        log.contains("(800 more characters)"),
        "the organization is capped"
    );
}

#[test]
fn an_idle_http2_connection_is_closed_at_the_first_request_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let p = project();
    let d = p.start();
    let port = d.https;
    let ca = d.ca.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let closed_after = rt.block_on(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        for c in mxguard::x509::parse_chain(&std::fs::read_to_string(&ca).unwrap()) {
            roots.add(c).unwrap();
        }
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("mta-sts.example.com").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        // The HTTP/2 preface and an empty SETTINGS frame, then nothing.
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let start = std::time::Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(40), tls.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
                Ok(Ok(_)) => continue, // the server's SETTINGS, its ACK, GOAWAY
                Err(_) => return None,
            }
        }
    });
    let after = closed_after.expect("the idle connection was still open after 40 s");
    assert!(
        after <= Duration::from_secs(15),
        "closed only after {after:?}"
    );
    // The listener still serves policies.
    assert_eq!(d.curl("mta-sts.example.com", &[]).status, 200);
}
