//! `mxguard init`: a working config, policy and zone for one domain, then a second.

use crate::harness::mxguard;

#[test]
fn init_writes_a_config_that_checks_and_adds_a_second_domain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = mxguard(&[
        "init",
        "--dir",
        d,
        "--domain",
        "example.org",
        "--mx",
        "mx1.example.org",
        "--mx",
        "mx2.example.org",
        "--acme-directory",
        "local",
        "--rua",
        "mailto:tls@example.org",
        "--mode",
        "enforce",
    ]);
    assert!(out.status.success(), "{out:?}");
    let cfg = dir.path().join("mxguard.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("https = \"0.0.0.0:443\""), "{text}");
    assert!(text.contains("directory = \"local\""), "{text}");
    let out = mxguard(&["check-config", "-c", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    let out = mxguard(&["policy", "-c", cfg.to_str().unwrap(), "example.org"]);
    let policy = String::from_utf8(out.stdout).unwrap();
    assert!(
        policy.contains("mode: enforce\nmx: mx1.example.org\nmx: mx2.example.org\n"),
        "{policy}"
    );
    assert!(
        policy
            .contains("_smtp._tls.example.org. IN TXT \"v=TLSRPTv1; rua=mailto:tls@example.org\"")
    );

    // Same domain again: refused, nothing changed.
    let out = mxguard(&[
        "init",
        "--dir",
        d,
        "--domain",
        "example.org",
        "--mx",
        "mx1.example.org",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already configured"));
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), text);

    // Another domain is added to the same config.
    let out = mxguard(&[
        "init",
        "--dir",
        d,
        "--domain",
        "example.net",
        "--mx",
        "mail.example.net",
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = mxguard(&["check-config", "-c", cfg.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok (2 domains)"),
        "{out:?}"
    );
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/example.org.toml"), "mine").unwrap();
    let out = mxguard(&[
        "init",
        "--dir",
        d,
        "--domain",
        "example.org",
        "--mx",
        "mx.example.org",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("policies/example.org.toml")).unwrap(),
        "mine"
    );
    let out = mxguard(&[
        "init",
        "--dir",
        d,
        "--domain",
        "example.org",
        "--mx",
        "mx.example.org",
        "--force",
    ]);
    assert!(out.status.success(), "{out:?}");
}
