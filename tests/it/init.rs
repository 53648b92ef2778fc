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
    assert!(text.contains("admin = \"127.0.0.1:9425\""), "{text}");
    // Every MX gets its certificate, key and DANE rollover; the defaults are shown.
    for m in ["mx1.example.org", "mx2.example.org"] {
        assert!(
            text.contains(&format!(
                "[[mx]]\nhost = \"{m}\"\ncert_file = \"mx-certs/{m}.crt\"\nkey_file = \"mx-certs/{m}.key\"\n"
            )),
            "{text}"
        );
    }
    for section in ["[records]", "[rollover]", "[check]", "# interval = \"15m\""] {
        assert!(text.contains(section), "{section}: {text}");
    }
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

/// What init writes runs: on loopback ports with the local CA, the daemon deploys the MX
/// certificate and publishes its TLSA record (DANE from the first start).
#[test]
fn an_init_config_runs_with_dane_for_its_mx() {
    use crate::harness::{free_port, wait_for};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (https, http, dns, admin) = (free_port(), free_port(), free_port(), free_port());
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let out = mxguard(&[
        "init",
        "--dir",
        d,
        "--domain",
        "example.org",
        "--mx",
        "mx1.example.org",
        "--mx",
        "mx.provider.example",
        "--acme-directory",
        "local",
        "--https",
        &addr(https),
        "--http",
        &addr(http),
        "--dns",
        &addr(dns),
        "--admin",
        &addr(admin),
    ]);
    assert!(out.status.success(), "{out:?}");
    let cfg = dir.path().join("mxguard.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.contains("# mx.provider.example is outside example.org: DANE for it needs TLSA records in its own zone."),
        "{text}"
    );
    // The posture checks would ask the system's resolvers about example.org: off here.
    let text = text.replace("# interval = \"15m\"", "interval = 0");
    std::fs::write(&cfg, text).unwrap();
    let log = dir.path().join("daemon.log");
    let mut child = crate::dns::Proc(
        std::process::Command::new(crate::harness::BIN)
            .args(["run", "-c", cfg.to_str().unwrap()])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let cert = dir.path().join("mx-certs/mx1.example.org.crt");
    wait_for(
        "the MX certificate",
        std::time::Duration::from_secs(30),
        || {
            if let Ok(Some(s)) = child.0.try_wait() {
                panic!(
                    "daemon exited {s}: {}",
                    std::fs::read_to_string(&log).unwrap()
                );
            }
            cert.exists().then_some(())
        },
    );
    let tlsa = wait_for(
        "the TLSA record",
        std::time::Duration::from_secs(30),
        || {
            let (_, out) = crate::dns::run(
                std::process::Command::new(crate::dns::dig())
                    .arg("@127.0.0.1")
                    .args([
                        "-p",
                        &dns.to_string(),
                        "+short",
                        "_25._tcp.mx1.example.org",
                        "TLSA",
                    ]),
            );
            out.trim().starts_with("3 1 1 ").then_some(out)
        },
    );
    assert!(!tlsa.is_empty());
}

/// Output piped into `head`: the command ends quietly (no panic, no "Broken pipe" error).
#[test]
fn piped_output_closed_early_ends_quietly() {
    use crate::harness::{BIN, DomainSpec, Project};
    let names: Vec<String> = (0..400).map(|i| format!("d{i}.example")).collect();
    let mx: Vec<String> = names.iter().map(|n| format!("mx.{n}")).collect();
    let mx_refs: Vec<[&str; 1]> = mx.iter().map(|m| [m.as_str()]).collect();
    let specs: Vec<DomainSpec> = names
        .iter()
        .zip(&mx_refs)
        .map(|(n, m)| DomainSpec {
            name: n,
            mx: m,
            policy: "mode = \"testing\"\nmax_age = 86400\n",
        })
        .collect();
    let p = Project::new(&specs);
    // More than a pipe buffer of output (about 100 KB of DS and DNSKEY records).
    let full = mxguard(&["ds", "-c", &p.config_str()]);
    assert!(full.status.success());
    assert!(full.stdout.len() > 80_000, "{}", full.stdout.len());
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{BIN}' ds -c '{}' | head -c 100 >/dev/null",
            p.config_str()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
}
