//! MTA-STS policy serving over HTTPS, as a sender fetches it.

use std::fs;
use std::process::Command;

use crate::harness::{DomainSpec, Project, mxguard};

const COM_POLICY: &str = "mode = \"enforce\"\nmax_age = 604800\n";
const NET_POLICY: &str = "mode = \"testing\"\nmax_age = 86400\nmx = [\"*.example.net\"]\n";
const COM_TEXT: &str = "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: mx2.example.com\r\nmax_age: 604800\r\n";
const NET_TEXT: &str = "version: STSv1\r\nmode: testing\r\nmx: *.example.net\r\nmax_age: 86400\r\n";

fn two_domains() -> Project {
    Project::new(&[
        DomainSpec {
            name: "example.com",
            mx: &["mx1.example.com", "mx2.example.com"],
            policy: COM_POLICY,
        },
        DomainSpec {
            name: "example.net",
            mx: &["mail.example.net"],
            policy: NET_POLICY,
        },
    ])
}

/// The id `mxguard policy` prints for a domain.
fn policy_id(p: &Project, domain: &str) -> String {
    let out = mxguard(&["policy", "-c", &p.config_str(), domain]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("_mta-sts.{domain}.")))
        .unwrap_or_else(|| panic!("no _mta-sts line in {text}"));
    line.split("id=")
        .nth(1)
        .unwrap()
        .trim_end_matches('"')
        .to_string()
}

#[test]
fn serves_each_domains_exact_policy_by_sni_on_one_listener() {
    let p = two_domains();
    let d = p.start();
    for (host, text) in [
        ("mta-sts.example.com", COM_TEXT),
        ("mta-sts.example.net", NET_TEXT),
    ] {
        for proto in ["--http1.1", "--http2"] {
            let r = d.curl(host, &[proto]);
            assert_eq!(r.status, 200, "{host} {proto}: {r:?}");
            assert_eq!(r.body, text, "{host} {proto}");
            assert!(
                r.headers
                    .to_ascii_lowercase()
                    .contains("content-type: text/plain"),
                "{}",
                r.headers
            );
        }
    }
}

#[test]
fn head_works_and_nothing_redirects() {
    let p = two_domains();
    let d = p.start();
    let r = d.curl("mta-sts.example.com", &["-I", "-o", "/dev/null"]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.is_empty(), "HEAD has no body: {r:?}");
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains(&format!("content-length: {}", COM_TEXT.len())),
        "{}",
        r.headers
    );
    for path in ["/", "/.well-known/mta-sts.txt/", "/.well-known/", "/x"] {
        let r = crate::harness::curl(&d.ca, "mta-sts.example.com", d.https, path, &[]);
        assert_eq!(r.status, 404, "{path}: {r:?}");
    }
}

#[test]
fn unknown_host_gets_no_policy() {
    let p = two_domains();
    let d = p.start();
    // No certificate for an unconfigured name: the handshake fails, no policy is sent.
    let r = d.curl("mta-sts.unknown.example", &[]);
    assert_ne!(r.exit, 0, "{r:?}");
    assert!(
        r.stderr.contains("SSL") || r.stderr.contains("TLS"),
        "{r:?}"
    );
    assert!(!r.body.contains("STSv1"));
    // The right SNI but another domain's Host header: 404, not the other policy.
    let r = d.curl(
        "mta-sts.example.com",
        &["--http1.1", "-H", "Host: mta-sts.example.net"],
    );
    assert_eq!(r.status, 404, "{r:?}");
    assert!(!r.body.contains("STSv1"));
}

#[test]
fn plain_http_listener_never_serves_the_policy() {
    let p = two_domains();
    let d = p.start();
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg("Host: mta-sts.example.com")
        .arg(format!(
            "http://127.0.0.1:{}/.well-known/mta-sts.txt",
            d.http
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!(
            "http://127.0.0.1:{}/.well-known/acme-challenge/unknown-token",
            d.http
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}

#[test]
fn sighup_reload_changes_text_and_id_only_when_policy_changes() {
    let p = two_domains();
    let d = p.start();
    let id0 = policy_id(&p, "example.com");

    // Unchanged reload: same text, same id, no change announced.
    d.reload();
    assert_eq!(d.curl("mta-sts.example.com", &[]).body, COM_TEXT);
    assert_eq!(policy_id(&p, "example.com"), id0);
    assert!(!d.log_text().contains("policy changed"), "{}", d.log_text());

    // Edited policy: new text served, new id announced.
    fs::write(
        p.path("policies/example.com.toml"),
        "mode = \"testing\"\nmax_age = 604800\n",
    )
    .unwrap();
    d.reload();
    let r = d.curl("mta-sts.example.com", &[]);
    assert!(r.body.contains("mode: testing\r\n"), "{r:?}");
    let id1 = policy_id(&p, "example.com");
    assert_ne!(id1, id0);
    assert!(
        d.log_text().contains(&format!("id={id1}")),
        "{}",
        d.log_text()
    );

    // Broken policy: refused, old policy still served, error logged.
    fs::write(
        p.path("policies/example.com.toml"),
        "mode = \"enforce\"\nmax_age = 0\n",
    )
    .unwrap();
    d.reload();
    let r = d.curl("mta-sts.example.com", &[]);
    assert!(r.body.contains("mode: testing\r\n"), "{r:?}");
    let log = d.log_text();
    assert!(log.contains("reload refused"), "{log}");
    assert!(log.contains("max_age: 0 is out of range"), "{log}");
    // The other domain was untouched throughout.
    assert_eq!(d.curl("mta-sts.example.net", &[]).body, NET_TEXT);
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let p = two_domains();
    let mut d = p.start();
    d.signal("TERM");
    let status =
        crate::harness::wait_for("daemon exit", std::time::Duration::from_secs(15), || {
            d.child.try_wait().unwrap()
        });
    assert!(status.success(), "{status:?}: {}", d.log_text());
}

#[test]
fn second_daemon_on_same_state_dir_is_refused() {
    let p = two_domains();
    let _d = p.start();
    // Same state dir, other ports.
    let cfg = fs::read_to_string(p.config())
        .unwrap()
        .replace(
            &p.https.to_string(),
            &crate::harness::free_port().to_string(),
        )
        .replace(
            &p.http.to_string(),
            &crate::harness::free_port().to_string(),
        );
    let other = p.path("other.toml");
    fs::write(&other, cfg).unwrap();
    let out = mxguard(&["run", "-c", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another mxguard process"), "{err}");
}

#[test]
fn an_http10_request_without_host_gets_the_policy_of_its_server_name() {
    let p = two_domains();
    let d = p.start();
    // curl drops the Host header when given an empty one.
    let r = d.curl("mta-sts.example.net", &["--http1.0", "-H", "Host:"]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, NET_TEXT);
}
