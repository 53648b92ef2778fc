//! The status page on the admin listener, in a real headless Chromium: it loads with no
//! console message, shows each domain's verdicts, and its charts have data. With
//! `MXGUARD_SCREENSHOT=FILE` the screenshot is kept there (benches/status_page.sh).

use std::process::Command;
use std::time::SystemTime;

use crate::check::{MX, lab_with};
use crate::harness::curl;

/// A TLS-RPT report for example.com covering the day `days_ago` days back.
fn report(org: &str, days_ago: u64, policy_type: &str, ok: u64, failed: u64) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let day = (now / 86_400 - days_ago) * 86_400;
    let fmt = |t: u64| {
        time::OffsetDateTime::from_unix_timestamp(t as i64)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let failures = if failed > 0 {
        serde_json::json!([{
            "result-type": if policy_type == "tlsa" { "tlsa-invalid" } else { "validation-failure" },
            "sending-mta-ip": "198.51.100.7",
            "receiving-mx-hostname": MX,
            "failed-session-count": failed
        }])
    } else {
        serde_json::json!([])
    };
    serde_json::json!({
        "organization-name": org,
        "date-range": {"start-datetime": fmt(day), "end-datetime": fmt(day + 86_399)},
        "contact-info": "tlsrpt@reporter.example",
        "report-id": format!("{org}-{days_ago}-{policy_type}"),
        "policies": [{
            "policy": {
                "policy-type": policy_type,
                "policy-string": ["version: STSv1", "mode: enforce", "mx: mx1.example.com", "max_age: 604800"],
                "policy-domain": "example.com",
                "mx-host": MX
            },
            "summary": {"total-successful-session-count": ok, "total-failure-session-count": failed},
            "failure-details": failures
        }]
    })
    .to_string()
}

#[test]
fn the_status_page_renders_in_chromium_with_verdicts_and_charts() {
    let lab = lab_with("mode = \"enforce\"\nmax_age = 604800\n", "");
    lab.checks_on();
    // Reports from three organizations over the last 12 days, a few with failures.
    let dir = lab.p.path("reports");
    std::fs::create_dir_all(&dir).unwrap();
    for days_ago in 1..=12u64 {
        for (org, ty, ok, failed) in [
            (
                "Google Inc.",
                "sts",
                400 + 20 * days_ago,
                if days_ago == 4 { 35 } else { 0 },
            ),
            (
                "Microsoft Corporation",
                "sts",
                150 + 5 * days_ago,
                if days_ago == 4 { 12 } else { 1 },
            ),
            (
                "Mail.Ru",
                "tlsa",
                60 + days_ago,
                if days_ago % 5 == 0 { 8 } else { 0 },
            ),
        ] {
            let f = dir.join(format!("{org}-{days_ago}.json"));
            std::fs::write(&f, report(org, days_ago, ty, ok, failed)).unwrap();
            let body = format!("@{}", f.display());
            let r = curl(
                &lab.d.ca,
                "mta-sts.example.com",
                lab.d.https,
                "/tlsrpt",
                &[
                    "-X",
                    "POST",
                    "-H",
                    "Content-Type: application/tlsrpt+json",
                    "--data-binary",
                    &body,
                ],
            );
            assert_eq!(r.status, 201, "{r:?}");
        }
    }
    // Today's report names failures at mx1, whose certificate mxguard deployed today: the
    // summary sets them against that change.
    let f = dir.join("today.json");
    std::fs::write(&f, report("Google Inc.", 0, "sts", 300, 17)).unwrap();
    let body = format!("@{}", f.display());
    let r = curl(
        &lab.d.ca,
        "mta-sts.example.com",
        lab.d.https,
        "/tlsrpt",
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/tlsrpt+json",
            "--data-binary",
            &body,
        ],
    );
    assert_eq!(r.status, 201, "{r:?}");
    let out = crate::harness::mxguard(&["reports", "-c", &lab.p.config_str(), "--since", "30d"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("failures around mxguard's own changes:"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "example.com: validation-failure for {MX} from 1 organization (17 sessions), in reports covering mxguard's certificate of {MX} at "
        )),
        "{text}"
    );
    let url = format!("http://127.0.0.1:{}/", lab.p.admin);
    let chromium = crate::dns::tool("chromium", "chromium");
    let profile = tempfile::tempdir().unwrap();
    let base = |cmd: &mut Command| {
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    };
    let mut dump = Command::new(&chromium);
    base(&mut dump);
    let out = dump.arg("--dump-dom").arg(&url).output().unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("CONSOLE"), "console messages: {log}");
    assert!(dom.contains("<h2>example.com</h2>"), "{dom}");
    for v in [
        "DANE\">DANE ok",
        "MTA-STS\">MTA-STS ok",
        "TLS-RPT\">TLS-RPT ok",
    ] {
        assert!(dom.contains(v), "{v}: {dom}");
    }
    // Charts with data: 12 days of sts and of tlsa, the result types and the organizations.
    assert!(
        dom.contains("data-chart=\"daily-sts\" data-points=\"13\""),
        "{dom}"
    );
    assert!(
        dom.contains("data-chart=\"daily-tlsa\" data-points=\"12\""),
        "{dom}"
    );
    assert!(
        dom.contains("data-chart=\"organizations\" data-points=\"3\""),
        "{dom}"
    );
    assert!(dom.contains("validation-failure"), "{dom}");
    assert!(dom.contains("<rect class=\"failed\""), "{dom}");
    // The certificates and the rollover of the MX, and the changes that led here.
    assert!(
        dom.contains("mx1.example.com") && dom.contains("DANE key rollover"),
        "{dom}"
    );
    assert!(dom.contains("installed; valid until"), "{dom}");

    let shot = profile.path().join("status.png");
    let mut cmd = Command::new(&chromium);
    base(&mut cmd);
    let out = cmd
        .arg("--window-size=1280,1700")
        .arg("--hide-scrollbars")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    if let Ok(keep) = std::env::var("MXGUARD_SCREENSHOT") {
        std::fs::write(&keep, &png).unwrap();
    }
}
