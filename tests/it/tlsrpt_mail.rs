//! TLS-RPT by mail through the running daemon: its SMTP listener and `reports import`.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{DomainSpec, Project, free_port, mxguard, reports_json};

fn eml() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tlsrpt/google.com_smtp_tls_report.eml")
}

fn project(smtp_port: u16) -> Project {
    let p = Project::new(&[DomainSpec {
        name: "example.com",
        mx: &["mx1.example.com"],
        policy: "mode = \"enforce\"\nmax_age = 604800\n",
    }]);
    p.append_config(&format!(
        "[tlsrpt]\nretention_days = 36500\n\n[tlsrpt.smtp]\nlisten = \"127.0.0.1:{smtp_port}\"\naddresses = [\"tlsrpt@reports.example.net\"]\n"
    ));
    p
}

fn report_count(p: &Project) -> u64 {
    reports_json(p)["reports"].as_u64().unwrap()
}

fn swaks(port: u16, to: &str, tls: bool) -> (bool, String) {
    let mut cmd = Command::new("swaks");
    cmd.args([
        "--server",
        &format!("127.0.0.1:{port}"),
        "--to",
        to,
        "--from",
        "noreply-smtp-tls-reporting@google.com",
        "--data",
    ])
    .arg(eml());
    if tls {
        cmd.arg("--tls");
    }
    let out = cmd.output().expect("swaks is installed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn swaks_delivers_the_report_mail_with_and_without_starttls() {
    let port = free_port();
    let p = project(port);
    let _d = p.start();
    let (ok, text) = swaks(port, "tlsrpt@reports.example.net", false);
    assert!(ok, "{text}");
    assert!(text.contains("<-  250 2.0.0 report stored"), "{text}");
    assert_eq!(report_count(&p), 1);
    // Again over STARTTLS (the daemon's certificate): acknowledged, stored once.
    let (ok, text) = swaks(port, "tlsrpt@reports.example.net", true);
    assert!(ok, "{text}");
    assert!(
        text.contains("STARTTLS") && text.contains("TLS started"),
        "{text}"
    );
    assert_eq!(report_count(&p), 1);
    // Unknown recipient: 550, nothing stored.
    let (ok, text) = swaks(port, "someone@reports.example.net", false);
    assert!(!ok);
    assert!(text.contains("550"), "{text}");
    assert_eq!(report_count(&p), 1);
}

#[test]
fn reports_import_reads_a_maildir_and_is_idempotent() {
    let p = project(free_port());
    let md = p.path("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    std::fs::copy(eml(), md.join("new/1.report.eml")).unwrap();
    std::fs::copy(eml(), md.join("cur/2.duplicate.eml")).unwrap();
    std::fs::write(
        md.join("cur/3.plain"),
        "From: a@example.org\r\nTo: b@example.org\r\nSubject: hello\r\n\r\nno report here\r\n",
    )
    .unwrap();
    let out = mxguard(&[
        "reports",
        "-c",
        &p.config_str(),
        "import",
        md.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no TLS-RPT report"), "{text}");
    assert_eq!(report_count(&p), 1);
    let out = mxguard(&[
        "reports",
        "-c",
        &p.config_str(),
        "import",
        "--json",
        md.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outcomes: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["outcome"].to_string())
        .collect();
    assert!(
        !outcomes
            .iter()
            .any(|o| o.contains("imported") || o.contains("Imported")),
        "{outcomes:?}"
    );
    assert_eq!(report_count(&p), 1);
}
