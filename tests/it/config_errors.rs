//! Bad configurations: each gives one line naming the file, the key and the problem, and
//! exit status 2.

use std::net::TcpListener;
use std::path::PathBuf;

use crate::harness::{DomainSpec, Project, mxguard};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bad-config")
        .join(name)
}

/// Runs `check-config` on a fixture; asserts exit 2 and exactly one error line, returned.
fn check(name: &str) -> String {
    let path = fixture(name);
    let out = mxguard(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{name}: one line expected, got {err}");
    lines[0].to_string()
}

fn assert_parts(line: &str, parts: &[&str]) {
    for p in parts {
        assert!(line.contains(p), "{line:?} lacks {p:?}");
    }
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let l = check("unknown-key.toml");
    assert_parts(
        &l,
        &["unknown-key.toml:12:1: domain[0].mx_hosts: unknown field `mx_hosts`"],
    );
}

#[test]
fn bad_mode_names_policy_file_and_key() {
    let l = check("bad-mode.toml");
    assert_parts(
        &l,
        &["policies/bad-mode.toml:1:8: mode: unknown variant `strict`"],
    );
}

#[test]
fn max_age_zero_is_rejected() {
    let l = check("max-age-zero.toml");
    assert_parts(
        &l,
        &[
            "policies/max-age-zero.toml: max_age: 0 is out of range",
            "domain[0]",
            "max-age-zero.toml)",
        ],
    );
}

#[test]
fn two_wildcard_mx_is_rejected() {
    let l = check("two-wildcards.toml");
    assert_parts(
        &l,
        &["policies/two-wildcards.toml: mx[0]:", "only one wildcard"],
    );
}

#[test]
fn mx_not_covered_by_policy_is_rejected() {
    let l = check("mx-not-covered.toml");
    assert_parts(
        &l,
        &[
            "policies/good.toml: mx: MX host backup.example.org is not matched",
            "mx-not-covered.toml",
        ],
    );
}

#[test]
fn duplicate_domain_is_rejected() {
    let l = check("duplicate-domain.toml");
    assert_parts(
        &l,
        &[
            "duplicate-domain.toml: domain[1].name: duplicate domain example.com",
            "domain[0]",
        ],
    );
}

#[test]
fn missing_policy_file_names_config_key_and_path() {
    let l = check("missing-policy-file.toml");
    assert_parts(
        &l,
        &[
            "missing-policy-file.toml: domain[0].policy: cannot read policy file",
            "does-not-exist.toml",
        ],
    );
}

#[test]
fn bad_acme_directory_is_rejected() {
    let l = check("bad-acme-directory.toml");
    assert_parts(
        &l,
        &[
            "bad-acme-directory.toml: acme.directory:",
            "http://acme.example/dir",
        ],
    );
}

#[test]
fn syntax_error_names_line_and_column() {
    let l = check("syntax-error.toml");
    assert_parts(&l, &["syntax-error.toml:9:20: invalid basic string"]);
}

#[test]
fn bad_mx_hostname_names_index() {
    let l = check("bad-mx-host.toml");
    assert_parts(
        &l,
        &["bad-mx-host.toml: domain[0].mx[1]:", "mx_2.example.com"],
    );
}

#[test]
fn bad_listen_address_names_key_and_position() {
    let l = check("bad-listen-address.toml");
    assert_parts(&l, &["bad-listen-address.toml:3:9: listen.https:"]);
}

#[test]
fn port_already_in_use_names_listen_key() {
    let p = Project::new(&[DomainSpec {
        name: "example.com",
        mx: &["mx1.example.com"],
        policy: "mode = \"enforce\"\nmax_age = 86400\n",
    }]);
    let _taken = TcpListener::bind(("127.0.0.1", p.https)).unwrap();
    let out = mxguard(&["run", "-c", &p.config_str()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert_parts(
        line,
        &[
            "mxguard.toml: listen.https: cannot listen on",
            &format!("127.0.0.1:{}", p.https),
            "in use",
        ],
    );
}

#[test]
fn good_config_checks_ok() {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/demo.toml");
    let out = mxguard(&["check-config", "-c", demo.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (2 domains)"));
}

/// `[domain.push]`: each problem names the key; the secret file must be private and base64;
/// provider APIs are named as not supported.
#[test]
fn push_settings_are_checked_with_named_keys() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new(&[DomainSpec {
        name: "example.com",
        mx: &["mx1.example.com"],
        policy: "mode = \"testing\"\nmax_age = 86400\n",
    }]);
    let base = std::fs::read_to_string(p.config()).unwrap();
    let secret = p.path("push.tsig");
    std::fs::write(
        &secret,
        format!("{}\n", data_encoding::BASE64.encode(&[9u8; 32])),
    )
    .unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = |push: &str| {
        std::fs::write(p.config(), format!("{base}\n[domain.push]\n{push}")).unwrap();
        let out = mxguard(&["check-config", "-c", &p.config_str()]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&format!(
        "provider = \"rfc2136\"\nserver = \"127.0.0.1:53\"\ntsig_key_name = \"k\"\ntsig_secret_file = \"{}\"\n",
        secret.display()
    ));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("domain[0].push.tsig_secret_file") && err.contains("readable by every user"),
        "{err}"
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, err) = run(&format!(
        "provider = \"rfc2136\"\nserver = \"127.0.0.1:53\"\ntsig_key_name = \"k\"\ntsig_secret_file = \"{}\"\n",
        secret.display()
    ));
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = run("provider = \"rfc2136\"\ntsig_key_name = \"k\"\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("domain[0].push.server"), "{err}");
    // resolver: provider APIs only, and not together with nameservers.
    let (code, err) = run(&format!(
        "provider = \"rfc2136\"\nserver = \"127.0.0.1:53\"\ntsig_key_name = \"k\"\ntsig_secret_file = \"{}\"\nresolver = \"127.0.0.1:5353\"\n",
        secret.display()
    ));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("domain[0].push.resolver") && err.contains("provider APIs"),
        "{err}"
    );
    if cfg!(feature = "providers") {
        let token = p.path("pdns.token");
        std::fs::write(&token, "k\n").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        let api = format!(
            "provider = \"powerdns\"\napi_url = \"http://127.0.0.1:8081\"\ntoken_file = \"{}\"\n",
            token.display()
        );
        let (code, err) = run(&api);
        assert_eq!(
            code,
            Some(0),
            "no nameservers: found through a resolver: {err}"
        );
        let (code, err) = run(&format!(
            "{api}resolver = \"127.0.0.1:5353\"\nnameservers = [\"127.0.0.1:53\"]\n"
        ));
        assert_eq!(code, Some(2));
        assert!(err.contains("domain[0].push.resolver"), "{err}");
        // Route 53: an AWS shared-credentials file, checked for both keys.
        let aws = p.path("aws.credentials");
        std::fs::write(&aws, "[default]\naws_access_key_id = AKIAEXAMPLE\n").unwrap();
        std::fs::set_permissions(&aws, std::fs::Permissions::from_mode(0o600)).unwrap();
        let r53 = format!(
            "provider = \"route53\"\ntoken_file = \"{}\"\n",
            aws.display()
        );
        let (code, err) = run(&r53);
        assert_eq!(code, Some(2));
        assert!(
            err.contains("domain[0].push.token_file") && err.contains("aws_secret_access_key"),
            "{err}"
        );
        std::fs::write(
            &aws,
            "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = c2VjcmV0\n",
        )
        .unwrap();
        let (code, err) = run(&r53);
        assert_eq!(code, Some(0), "{err}");
    }
    // dns-update's APIs whose credentials are no `key = value` lines are refused with why.
    let (code, err) = run("provider = \"transip\"\ntoken_file = \"transip.key\"\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("domain[0].push.provider")
            && err.contains("the transip API is not supported yet"),
        "{err}"
    );
    // A supported provider API in a build without them says how to get them.
    if !cfg!(feature = "providers") {
        let (code, err) = run("provider = \"cloudflare\"\ntoken_file = \"cf.token\"\n");
        assert_eq!(code, Some(2));
        assert!(err.contains("built without provider APIs"), "{err}");
    }
    std::fs::write(&secret, "short").unwrap();
    let (code, err) = run(&format!(
        "provider = \"rfc2136\"\nserver = \"127.0.0.1:53\"\ntsig_key_name = \"k\"\ntsig_secret_file = \"{}\"\ntsig_algorithm = \"hmac-md5\"\n",
        secret.display()
    ));
    assert_eq!(code, Some(2));
    assert!(err.contains("domain[0].push.tsig_algorithm"), "{err}");
}

/// `[limits]`: the DNS-over-TCP caps as configured (per address and idle time), and a zero
/// limit refused with its key.
#[test]
fn configured_tcp_limits_apply_and_zero_is_refused() {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let p = Project::new(&[DomainSpec {
        name: "example.com",
        mx: &["mx1.example.com"],
        policy: "mode = \"testing\"\nmax_age = 86400\n",
    }]);
    let base = std::fs::read_to_string(p.config()).unwrap();
    std::fs::write(
        p.config(),
        format!("{base}\n[limits]\ndns_tcp_connections = 0\n"),
    )
    .unwrap();
    let out = mxguard(&["check-config", "-c", &p.config_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("limits.dns_tcp_connections: must be at least 1"),
        "{out:?}"
    );
    std::fs::write(
        p.config(),
        format!("{base}\n[limits]\ndns_tcp_per_address = 2\ndns_tcp_idle = \"2s\"\n"),
    )
    .unwrap();
    let d = p.start();
    let connect = || std::net::TcpStream::connect(("127.0.0.1", d.dns)).unwrap();
    let (a, b, mut c) = (connect(), connect(), connect());
    // The third connection from this address is closed at once.
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        c.read(&mut buf).unwrap_or(0),
        0,
        "third connection not closed"
    );
    // An idle one is closed after the configured 2 s (the default is 10 s).
    let mut a = a;
    a.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let t = Instant::now();
    assert_eq!(a.read(&mut buf).unwrap_or(0), 0);
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "idle for {:?}",
        t.elapsed()
    );
    drop((b, d));
}

#[test]
fn key_roll_settings_are_checked_with_named_keys() {
    let p = Project::new(&[DomainSpec {
        name: "example.com",
        mx: &["mx1.example.com"],
        policy: "mode = \"testing\"\nmax_age = 86400\n",
    }]);
    let base = std::fs::read_to_string(p.config()).unwrap();
    let run = |dnssec: &str| {
        std::fs::write(p.config(), format!("{base}\n[dnssec]\n{dnssec}")).unwrap();
        let out = mxguard(&["check-config", "-c", &p.config_str()]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A scheduled roll cannot see the parent: refused, naming what to set.
    let (code, err) = run("key_lifetime = \"365d\"\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("dnssec.key_lifetime: scheduled rolls wait for the parent's DS: set dnssec.parent_nameservers or dnssec.parent_resolver"),
        "{err}"
    );
    let (code, err) = run("key_lifetime = \"1d\"\nparent_nameservers = [\"192.0.2.53:53\"]\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("dnssec.key_lifetime: must be 0"), "{err}");
    let (code, err) = run("parent_nameservers = [\"not an address\"]\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("parent_nameservers"), "{err}");
    let (code, err) = run(
        "key_lifetime = \"365d\"\npropagation_delay = \"10m\"\nparent_resolver = \"127.0.0.1:53\"\n",
    );
    assert_eq!(code, Some(0), "{err}");
}
