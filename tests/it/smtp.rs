//! TLS-RPT by mail: the SMTP listener run in-process on a loopback port against a temporary
//! report store, talked to by swaks (plain and STARTTLS) and by a small SMTP client; and the
//! importer over a Maildir of report mails, duplicates and ordinary mail.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use mxguard::tlsrpt::import;
use mxguard::tlsrpt::intake::{Intake, IntakeSettings};
use mxguard::tlsrpt::smtp::{self, SmtpSettings};
use mxguard::tlsrpt::store::ReportsHandle;
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::sync::CancellationToken;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tlsrpt");
const SAMPLE_EML: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tlsrpt/google.com_smtp_tls_report.eml"
);
const RCPT: &str = "tlsrpt@example.org";
/// Every network wait in these tests ends by this deadline.
const DEADLINE: Duration = Duration::from_secs(30);

/// An SMTP listener on a loopback port with its own report store.
struct Server {
    addr: SocketAddr,
    intake: Arc<Intake>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(max_message_bytes: usize, tls: bool) -> Server {
        Server::start_with(max_message_bytes, tls, 100).await
    }

    async fn start_with(max_message_bytes: usize, tls: bool, max_connections: usize) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = ReportsHandle::open(&dir.path().join("tlsrpt.sqlite3")).unwrap();
        let intake = Arc::new(Intake::new(store, IntakeSettings::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut settings = SmtpSettings::new(addr, vec![RCPT.to_string()]);
        settings.max_message_bytes = max_message_bytes;
        settings.timeout_secs = 30;
        settings.max_connections = max_connections;
        assert_eq!(settings.validate("smtp"), Vec::<String>::new());
        let shutdown = CancellationToken::new();
        let tls = tls.then(tls_config);
        let task = tokio::spawn(smtp::serve(
            listener,
            settings,
            tls,
            Arc::clone(&intake),
            shutdown.clone(),
        ));
        Server {
            addr,
            intake,
            shutdown,
            task,
            _dir: dir,
        }
    }

    async fn stored(&self) -> u64 {
        self.intake.store().read(|s| s.count()).await.unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("smtp server stops")
            .unwrap();
    }
}

/// A self-signed certificate for `localhost` (swaks is told not to verify).
fn tls_config() -> Arc<rustls::ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    Arc::new(cfg)
}

/// A minimal SMTP client for exact control over what is sent.
struct Client {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .unwrap();
        let (r, w) = stream.into_split();
        let mut c = Client {
            r: BufReader::new(r),
            w,
        };
        let (code, text) = c.reply().await;
        assert_eq!(code, 220, "{text}");
        c
    }

    /// Reads one (possibly multi-line) reply: the code and all its text.
    async fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(DEADLINE, self.r.read_line(&mut line))
                .await
                .expect("reply in time")
                .unwrap();
            assert!(n > 0, "connection closed; so far: {text}");
            text.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return (line[..3].parse().unwrap(), text);
            }
        }
    }

    async fn send(&mut self, data: &[u8]) {
        tokio::time::timeout(DEADLINE, self.w.write_all(data))
            .await
            .expect("send in time")
            .unwrap();
    }

    async fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// MAIL, RCPT, DATA and the dot-stuffed message; the reply to the final dot.
    async fn deliver(&mut self, message: &[u8]) -> (u16, String) {
        let (code, text) = self.cmd("MAIL FROM:<reporter@sender.test>").await;
        assert_eq!(code, 250, "{text}");
        let (code, text) = self.cmd(&format!("RCPT TO:<{RCPT}>")).await;
        assert_eq!(code, 250, "{text}");
        let (code, text) = self.cmd("DATA").await;
        assert_eq!(code, 354, "{text}");
        self.send(&dot_stuff(message)).await;
        self.reply().await
    }
}

/// CRLF line ends, leading dots doubled, and the terminating `.` line.
fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(message).replace("\r\n", "\n");
    let mut out = Vec::with_capacity(text.len() + 64);
    for line in text.trim_end_matches('\n').split('\n') {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join(name)).unwrap()
}

/// A fixture report with its report-id replaced.
fn report_json(fixture_name: &str, report_id: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&fixture(fixture_name)).unwrap();
    v["report-id"] = serde_json::Value::String(report_id.to_string());
    serde_json::to_vec_pretty(&v).unwrap()
}

/// How a report is attached.
#[derive(Clone, Copy, Debug)]
enum Form {
    TlsrptGzip,
    TlsrptJson,
    OctetStream,
    NestedGzip,
}

/// A report mail in one of the forms senders use.
fn report_mail(json: &[u8], form: Form, n: usize) -> Vec<u8> {
    let b64 = |d: &[u8]| data_encoding::BASE64_MIME.encode(d);
    let head = format!(
        "From: reporter@sender.test\r\nTo: {RCPT}\r\nSubject: Report Domain: example.org Submitter: sender.test Report-ID: <{n}>\r\n\
         Message-ID: <{n}@sender.test>\r\nTLS-Report-Domain: example.org\r\nTLS-Report-Submitter: sender.test\r\nMIME-Version: 1.0\r\n"
    );
    let text = "--B\r\nContent-Type: text/plain\r\n\r\nThis is an aggregate TLS report.\r\n";
    let body = match form {
        Form::TlsrptGzip => format!(
            "Content-Type: multipart/report; report-type=tlsrpt; boundary=\"B\"\r\n\r\n{text}\
             --B\r\nContent-Type: application/tlsrpt+gzip\r\nContent-Disposition: attachment; filename=\"r{n}.json.gz\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--B--\r\n",
            b64(&gz(json))
        ),
        Form::TlsrptJson => format!(
            "Content-Type: multipart/report; report-type=tlsrpt; boundary=\"B\"\r\n\r\n{text}\
             --B\r\nContent-Type: application/tlsrpt+json\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--B--\r\n",
            b64(json)
        ),
        Form::OctetStream => format!(
            "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n{text}\
             --B\r\nContent-Type: application/octet-stream; name=\"r{n}.json.gz\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--B--\r\n",
            b64(&gz(json))
        ),
        Form::NestedGzip => format!(
            "Content-Type: multipart/mixed; boundary=\"O\"\r\n\r\n--O\r\nContent-Type: text/plain\r\n\r\nfwd\r\n\
             --O\r\nContent-Type: multipart/report; report-type=tlsrpt; boundary=\"B\"\r\n\r\n{text}\
             --B\r\nContent-Type: application/gzip\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--B--\r\n--O--\r\n",
            b64(&gz(json))
        ),
    };
    format!("{head}{body}").into_bytes()
}

/// Ordinary mail of a few shapes, none holding a report.
fn ordinary_mail(n: usize) -> (Vec<u8>, &'static str) {
    let head = format!(
        "From: friend@sender.test\r\nTo: {RCPT}\r\nSubject: hello {n}\r\nMIME-Version: 1.0\r\n"
    );
    let (body, found) = match n % 3 {
        0 => ("\r\nJust saying hi.\r\n".to_string(), "text/plain"),
        1 => (
            "Content-Type: multipart/alternative; boundary=\"A\"\r\n\r\n--A\r\nContent-Type: text/plain\r\n\r\nhi\r\n\
             --A\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--A--\r\n"
                .to_string(),
            "text/plain, text/html",
        ),
        _ => (
            "Content-Type: multipart/mixed; boundary=\"M\"\r\n\r\n--M\r\nContent-Type: text/plain\r\n\r\nphoto\r\n\
             --M\r\nContent-Type: image/png; name=\"a.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--M--\r\n"
                .to_string(),
            "text/plain, image/png",
        ),
    };
    (format!("{head}{body}").into_bytes(), found)
}

/// (policy domain, policy type) → (successful, failed), from the parsed report.
fn expected_groups(json: &[u8]) -> BTreeMap<(Option<String>, String), (u64, u64)> {
    let report = mxguard::tlsrpt::parse_report(json).unwrap();
    let mut groups = BTreeMap::new();
    for p in &report.policies {
        let key = (
            p.policy
                .policy_domain
                .as_deref()
                .map(mxguard::tlsrpt::normalize_domain),
            p.policy.policy_type.as_str().to_string(),
        );
        let e = groups.entry(key).or_insert((0, 0));
        e.0 += p.summary.total_successful_session_count;
        e.1 += p.summary.total_failure_session_count;
    }
    groups
}

async fn stored_groups(intake: &Intake) -> BTreeMap<(Option<String>, String), (u64, u64)> {
    let summary = intake
        .store()
        .summary(None, OffsetDateTime::UNIX_EPOCH)
        .await
        .unwrap();
    summary
        .groups
        .iter()
        .map(|g| {
            (
                (g.domain.clone(), g.policy_type.clone()),
                (g.successful_sessions, g.failed_sessions),
            )
        })
        .collect()
}

async fn swaks(addr: SocketAddr, data: &str, tls: bool) -> String {
    let mut cmd = tokio::process::Command::new("swaks");
    cmd.args([
        "--server",
        "127.0.0.1",
        "--port",
        &addr.port().to_string(),
        "--helo",
        "reporter.test",
        "--from",
        "noreply-smtp-tls-reporting@google.com",
        "--to",
        RCPT,
        "--timeout",
        "30",
        "--data",
        &format!("@{data}"),
    ]);
    if tls {
        // swaks does not verify the certificate unless told to (--tls-verify).
        cmd.arg("--tls");
    }
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("swaks finishes in time")
        .expect("run swaks");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "swaks failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_delivers_the_google_sample_plain_then_starttls_stored_once() {
    let server = Server::start(10 * 1024 * 1024, true).await;

    let plain = swaks(server.addr, SAMPLE_EML, false).await;
    assert!(plain.contains("<-  250 2.0.0 report stored as "), "{plain}");
    assert!(
        plain
            .lines()
            .any(|l| l.starts_with("<-  250") && l.ends_with("STARTTLS")),
        "STARTTLS is offered:\n{plain}"
    );
    assert!(!plain.contains("TLS started"), "{plain}");
    assert_eq!(server.stored().await, 1);

    let secured = swaks(server.addr, SAMPLE_EML, true).await;
    assert!(secured.contains("TLS started"), "{secured}");
    assert!(
        secured.contains("250 2.0.0 report already stored as "),
        "a second delivery is a duplicate, still 250:\n{secured}"
    );
    assert_eq!(server.stored().await, 1);

    let json = fixture("google.com.from-eml.json");
    let want = expected_groups(&json);
    assert_eq!(
        want.get(&(Some("cardinalhealth.ca".into()), "no-policy-found".into())),
        Some(&(48, 0)),
        "the sample's own numbers"
    );
    assert_eq!(stored_groups(&server.intake).await, want);
    let counters = server.intake.counters().snapshot();
    assert_eq!(counters.received, 2, "{counters:?}");
    assert_eq!(counters.duplicates, 1, "{counters:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_store_nothing_and_the_server_stays_healthy() {
    let limit = 64 * 1024;
    let server = Server::start(limit, false).await;
    let mut c = Client::connect(server.addr).await;
    let (code, ehlo) = c.cmd("EHLO client.test").await;
    assert_eq!(code, 250, "{ehlo}");
    assert!(ehlo.contains(&format!("250-SIZE {limit}")), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "no TLS configured:\n{ehlo}");

    // Declared size over the limit.
    let (code, text) = c
        .cmd(&format!("MAIL FROM:<a@sender.test> SIZE={}", limit + 1))
        .await;
    assert_eq!(code, 552, "{text}");
    assert!(text.starts_with("552 5.3.4 "), "{text}");

    // Unknown recipient; the report address with an upper-case domain is fine.
    assert_eq!(c.cmd("MAIL FROM:<a@sender.test>").await.0, 250);
    let (code, text) = c.cmd("RCPT TO:<postmaster@example.org>").await;
    assert!(text.starts_with("550 5.1.1 "), "{code} {text}");
    let (code, text) = c.cmd("RCPT TO:<tlsrpt@EXAMPLE.ORG>").await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(c.cmd("RSET").await.0, 250);

    let json = report_json("rfc8460.json", "good-1");
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed MIME",
            b"From: a@sender.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=tlsrpt\r\n\r\n--x\r\nbroken\r\n"
                .to_vec(),
            554,
            "554 5.6.0 malformed MIME: multipart/report without a boundary",
        ),
        (
            "bad gzip attachment",
            {
                let mut bad = gz(&json);
                bad.truncate(bad.len() / 2);
                let mail = String::from_utf8(report_mail(&json, Form::TlsrptGzip, 1)).unwrap();
                let good_b64 = data_encoding::BASE64_MIME.encode(&gz(&json));
                mail.replace(&good_b64, &data_encoding::BASE64_MIME.encode(&bad))
                    .into_bytes()
            },
            554,
            "554 5.6.0 invalid body: invalid gzip data",
        ),
        (
            "invalid report JSON",
            report_mail(br#"{"organization-name":"x","policies":[]}"#, Form::TlsrptJson, 2),
            554,
            "554 5.6.0 invalid report",
        ),
        (
            "ordinary mail",
            ordinary_mail(0).0,
            554,
            "554 5.6.0 no TLS-RPT report in message: found text/plain",
        ),
        (
            "oversized message without SIZE=",
            {
                let mut m = report_mail(&json, Form::TlsrptGzip, 3);
                m.extend(std::iter::repeat_n(b"x".repeat(70).into_iter().chain(*b"\r\n"), 1000).flatten());
                m
            },
            552,
            "552 5.3.4 message exceeds the limit",
        ),
    ];
    for (what, message, want_code, want_text) in &cases {
        let (code, text) = c.deliver(message).await;
        assert_eq!(code, *want_code, "{what}: {text}");
        assert!(text.starts_with(want_text), "{what}: {text}");
        assert_eq!(server.stored().await, 0, "{what} stored nothing");
    }

    // The same session, then a fresh one, still deliver good reports.
    let (code, text) = c.deliver(&report_mail(&json, Form::TlsrptGzip, 4)).await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(server.stored().await, 1);
    assert_eq!(c.cmd("QUIT").await.0, 221);
    let mut c2 = Client::connect(server.addr).await;
    assert_eq!(c2.cmd("HELO client.test").await.0, 250);
    let other = report_json("smtp_tls.json", "good-2");
    let (code, text) = c2.deliver(&report_mail(&other, Form::OctetStream, 5)).await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(server.stored().await, 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_sessions_all_stored() {
    let server = Server::start(10 * 1024 * 1024, false).await;
    let fixtures = [
        "rfc8460.json",
        "smtp_tls.json",
        "mail.ru.json",
        "google.com.from-eml.json",
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let addr = server.addr;
        let json = report_json(fixtures[i % fixtures.len()], &format!("concurrent-{i}"));
        tasks.spawn(async move {
            let mut c = Client::connect(addr).await;
            assert_eq!(c.cmd("EHLO c.test").await.0, 250);
            let reply = c.deliver(&report_mail(&json, Form::TlsrptGzip, i)).await;
            let _ = c.cmd("QUIT").await;
            reply
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        let (code, text) = r.unwrap();
        assert_eq!(code, 250, "{text}");
        assert!(text.starts_with("250 2.0.0 report stored as "), "{text}");
        ok += 1;
    }
    assert_eq!(ok, 50);
    // Every 250 came after the commit: all 50 are there now.
    assert_eq!(server.stored().await, 50);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maildir_of_100_messages_imports_each_distinct_report_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = ReportsHandle::open(&dir.path().join("tlsrpt.sqlite3")).unwrap();
    let intake = Intake::new(store, IntakeSettings::default());
    let maildir = dir.path().join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let fixtures = [
        "rfc8460.json",
        "smtp_tls.json",
        "mail.ru.json",
        "google.com.from-eml.json",
    ];
    let forms = [
        Form::TlsrptGzip,
        Form::TlsrptJson,
        Form::OctetStream,
        Form::NestedGzip,
    ];
    let mut messages: Vec<(Vec<u8>, Option<&str>)> = Vec::new();
    let mut want = BTreeMap::new();
    // 60 distinct reports, varied report-ids, fixtures and forms.
    for i in 0..60 {
        let json = report_json(fixtures[i % 4], &format!("import-{i}@sender.test"));
        for (k, v) in expected_groups(&json) {
            let e = want.entry(k).or_insert((0, 0));
            e.0 += v.0;
            e.1 += v.1;
        }
        messages.push((report_mail(&json, forms[(i / 4) % 4], i), None));
    }
    // 20 duplicates: the same reports again, in another form.
    for i in 0..20 {
        let json = report_json(
            fixtures[(i * 3) % 4],
            &format!("import-{}@sender.test", i * 3),
        );
        messages.push((report_mail(&json, forms[(i + 1) % 4], 1000 + i), None));
    }
    // 20 ordinary mails.
    for i in 0..20 {
        let (mail, found) = ordinary_mail(i);
        messages.push((mail, Some(found)));
    }
    assert_eq!(messages.len(), 100);
    let mut expected_skips = BTreeMap::new();
    for (i, (mail, found)) in messages.iter().enumerate() {
        // Interleave the kinds across cur/ and new/ as a mail client would leave them.
        let slot = (i * 37) % 100;
        let name = if slot % 2 == 0 {
            format!("cur/{slot:03}.M{i}P1.test:2,S")
        } else {
            format!("new/{slot:03}.M{i}P1.test")
        };
        let path = maildir.join(&name);
        std::fs::write(&path, mail).unwrap();
        if let Some(found) = found {
            expected_skips.insert(path.display().to_string(), *found);
        }
    }
    // In-delivery files are not read.
    std::fs::write(maildir.join("tmp/partial"), b"From: x\r\n").unwrap();

    let summary = import::import(&intake, std::slice::from_ref(&maildir)).await;
    let text = summary.render();
    assert_eq!(summary.items.len(), 100, "{text}");
    assert_eq!(summary.imported(), 60, "{text}");
    assert_eq!(summary.duplicates(), 20, "{text}");
    assert_eq!(summary.skipped(), 20, "{text}");
    assert_eq!(summary.failed(), 0, "{text}");
    assert!(
        text.ends_with("60 imported, 20 duplicates, 20 skipped, 0 failed\n"),
        "{text}"
    );
    for item in &summary.items {
        if let import::Outcome::Skipped { reason } = &item.outcome {
            let found = expected_skips
                .get(&item.source)
                .unwrap_or_else(|| panic!("unexpected skip {}: {reason}", item.source));
            assert_eq!(
                reason,
                &format!("no TLS-RPT report in message: found {found}")
            );
        }
    }
    assert_eq!(intake.store().read(|s| s.count()).await.unwrap(), 60);
    assert_eq!(stored_groups(&intake).await, want);

    // Idempotent: importing again stores nothing new.
    let again = import::import(&intake, &[maildir]).await;
    assert_eq!(
        (again.imported(), again.duplicates(), again.skipped()),
        (0, 80, 20),
        "{}",
        again.render()
    );
    assert_eq!(intake.store().read(|s| s.count()).await.unwrap(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_over_max_connections_are_told_421_and_a_freed_slot_is_reused() {
    let server = Server::start_with(10 * 1024 * 1024, false, 2).await;
    let mut first = Client::connect(server.addr).await;
    let _second = Client::connect(server.addr).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let mut third = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(DEADLINE, third.read_line(&mut line))
        .await
        .expect("refusal in time")
        .unwrap();
    assert!(line.starts_with("421 4.3.2 "), "{line}");
    // A session that ends frees its slot; wait for that with a deadline.
    assert_eq!(first.cmd("QUIT").await.0, 221);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let mut r = BufReader::new(stream);
        let mut line = String::new();
        tokio::time::timeout(DEADLINE, r.read_line(&mut line))
            .await
            .expect("greeting in time")
            .unwrap();
        if line.starts_with("220 ") {
            break;
        }
        assert!(line.starts_with("421 "), "{line}");
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::task::yield_now().await;
    }
    server.stop().await;
}
