//! Certificates from a real ACME CA (Pebble): http-01 and tls-alpn-01 answered by the running
//! daemon, chains checked with openssl against Pebble's root, policies fetched with curl
//! trusting only that root, the CA stopped and restarted, MX deployment with a reload command,
//! the account kept across restarts, and `mxguard certs` as a user reads it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::harness::{Daemon, DomainSpec, Project, curl, mxguard, wait_for};
use crate::pebble::{ChallDns, Pebble, PebbleOptions};

const POLICY: &str = "mode = \"enforce\"\nmax_age = 604800\n";
const POLICY_TEXT: &str =
    "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmax_age: 604800\r\n";
const HOST: &str = "mta-sts.example.com";
const MX: &str = "mx1.example.com";

/// A project for example.com (MX mx1.example.com) whose DNS for Pebble is challtestsrv.
fn project() -> Project {
    Project::new(&[DomainSpec {
        name: "example.com",
        mx: &[MX],
        policy: POLICY,
    }])
}

/// Points the project's `[acme]` at `pebble`, with `challenge` and retry delays; `tail` is
/// appended to the config (e.g. `[[mx]]` tables).
fn use_pebble(p: &Project, pebble: &Pebble, challenge: &str, retry: (u64, u64), tail: &str) {
    let cfg = fs::read_to_string(p.config()).unwrap();
    let acme = format!(
        "[acme]\ndirectory = \"{}\"\nca_file = \"{}\"\nemail = \"hostmaster@example.com\"\nchallenge = \"{challenge}\"\nretry_initial = {}\nretry_max = {}\n",
        pebble.directory(),
        pebble.api_ca().display(),
        retry.0,
        retry.1
    );
    let replaced = cfg.replace("[acme]\ndirectory = \"local\"\n", &acme);
    assert_ne!(replaced, cfg, "harness config layout changed");
    fs::write(p.config(), format!("{replaced}\n{tail}")).unwrap();
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn cert_dir(p: &Project, name: &str) -> PathBuf {
    p.path(&format!("state/certs/{name}"))
}

/// The persisted state of a certificate (`Null` before the first write).
fn cert_state(p: &Project, name: &str) -> Value {
    fs::read(cert_dir(p, name).join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// Waits until `name` was issued by the ACME CA after `since` (unix seconds); returns the state.
fn wait_issued(p: &Project, d: &Daemon, name: &str, since: u64, timeout: Duration) -> Value {
    let what = format!("{name} to be issued by the ACME CA");
    wait_for(&what, timeout, || {
        let st = cert_state(p, name);
        let ok = st["issuer"]
            .as_str()
            .is_some_and(|i| i.starts_with("acme:"))
            && st["last_success"].as_u64().is_some_and(|t| t >= since);
        ok.then_some(st)
    });
    let st = cert_state(p, name);
    assert!(st["last_error"].is_null(), "{st}\n{}", d.log_text());
    st
}

/// `mxguard certs -c CONFIG --json`.
fn certs_json(p: &Project) -> Vec<Value> {
    let out = mxguard(&["certs", "-c", &p.config_str(), "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn cert_report(p: &Project, name: &str) -> Value {
    certs_json(p)
        .into_iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in mxguard certs"))
}

/// `mxguard certs -c CONFIG` (text).
fn certs_text(p: &Project) -> String {
    let out = mxguard(&["certs", "-c", &p.config_str()]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `openssl verify -CAfile root -untrusted chain chain`: the leaf (first in `chain`) chains to
/// `root` through the intermediates in `chain`.
fn assert_chain_verifies(root: &Path, chain: &Path) {
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root)
        .arg("-untrusted")
        .arg(chain)
        .arg(chain)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl verify {}: {}{}",
        chain.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl(args: &[&str], file: &Path) -> String {
    let out = Command::new("openssl")
        .args(args)
        .arg("-in")
        .arg(file)
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The DNS SANs of the first certificate in a PEM file.
fn sans(cert: &Path) -> String {
    openssl(&["x509", "-noout", "-ext", "subjectAltName"], cert)
}

/// curl trusting only `root` fetches the exact policy from the daemon.
fn assert_policy_served(d: &Daemon, root: &Path) {
    let r = curl(root, HOST, d.https, "/.well-known/mta-sts.txt", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, POLICY_TEXT);
}

/// One domain, one challenge type: issued, verified, served right away, reported.
fn issue_and_serve(challenge: &str) {
    let p = project();
    let dns = ChallDns::start();
    let pebble = Pebble::start(PebbleOptions::for_project(&p, dns.addr));
    use_pebble(&p, &pebble, challenge, (1, 5), "");
    let started = now();
    let d = p.start();
    let st = wait_issued(&p, &d, HOST, started, Duration::from_secs(60));
    let root = pebble.root_pem();
    let chain = cert_dir(&p, HOST).join("chain.pem");
    assert_chain_verifies(&root, &chain);
    assert!(
        sans(&chain).contains(&format!("DNS:{HOST}")),
        "{}",
        sans(&chain)
    );
    // Served by the running daemon at once: no restart, no reload.
    assert_policy_served(&d, &root);
    // The challenge was answered the way it was configured (Pebble logs only HTTP attempts).
    let validations = pebble.log_text();
    assert!(
        validations.contains("Starting 3 validations"),
        "{validations}"
    );
    assert_eq!(
        validations.contains("Attempting to validate w/ HTTP"),
        challenge == "http-01",
        "{validations}"
    );
    assert!(
        d.log_text().contains(&format!("challenge=\"{challenge}\"")),
        "{}",
        d.log_text()
    );

    // `mxguard certs`: key, SANs, not-after, next renewal, no error.
    let r = cert_report(&p, HOST);
    assert_eq!(r["sans"], serde_json::json!([HOST]));
    assert_eq!(r["challenge"], challenge);
    let key = r["key"].as_str().unwrap();
    assert!(key.starts_with("ECDSA P-256, SPKI sha256 "), "{r}");
    // The SPKI hash is the served leaf's.
    let spki_hex = spki_sha256_of_cert(&chain);
    assert!(key.ends_with(&spki_hex), "{key} vs {spki_hex}");
    assert!(
        r["issuer"]
            .as_str()
            .unwrap()
            .starts_with("acme:https://127.0.0.1:")
    );
    assert!(r["last_error"].is_null(), "{r}");
    assert_eq!(r["attempts"], 0);
    let not_after = openssl(&["x509", "-noout", "-enddate"], &chain);
    assert_eq!(
        Some(st["not_after"].as_u64().unwrap()),
        parse_openssl_date(&not_after),
        "{not_after}"
    );
    let text = certs_text(&p);
    for needle in [
        &format!("{HOST}\n"),
        &format!("sans:         {HOST}"),
        &format!("challenge:    {challenge}"),
        &format!("key:          ECDSA P-256, SPKI sha256 {spki_hex}"),
        &format!("issuer:       acme:{}", pebble.directory()),
        &format!("not after:    {}", r["not_after"].as_str().unwrap()),
        &format!("next renewal: {}", r["next_renewal"].as_str().unwrap()),
    ] {
        assert!(text.contains(needle.as_str()), "{needle:?} not in\n{text}");
    }
    assert!(!text.contains("last error"), "{text}");
    // Renewal of a 1-hour certificate at about two thirds of its life (jitter: up to 5% earlier).
    let nb = st["not_before"].as_u64().unwrap();
    let na = st["not_after"].as_u64().unwrap();
    let next = st["next_attempt"].as_u64().unwrap();
    let life = na - nb;
    assert!(
        next <= nb + life * 2 / 3 + 1 && next >= nb + life * 2 / 3 - life / 20 - 1,
        "{st}"
    );
}

fn spki_sha256_of_cert(chain: &Path) -> String {
    let pem = fs::read_to_string(chain).unwrap();
    let der = mxguard::x509::parse_chain(&pem).remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    ring::digest::digest(&ring::digest::SHA256, cert.tbs_certificate.subject_pki.raw)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `notAfter=Nov 28 18:26:34 2026 GMT` → unix seconds.
fn parse_openssl_date(line: &str) -> Option<u64> {
    let s = line.trim().split_once('=')?.1;
    let fmt = time::macros::format_description!(
        "[month repr:short] [day padding:space] [hour]:[minute]:[second] [year] GMT"
    );
    let t = time::PrimitiveDateTime::parse(s, &fmt).ok()?;
    Some(t.assume_utc().unix_timestamp() as u64)
}

#[test]
fn http01_certificate_is_issued_verified_and_served_without_restart() {
    issue_and_serve("http-01");
}

#[test]
fn tls_alpn01_certificate_is_issued_verified_and_served_without_restart() {
    issue_and_serve("tls-alpn-01");
}

#[test]
fn issuance_succeeds_despite_pebble_chaos() {
    let p = project();
    let dns = ChallDns::start();
    let mut opts = PebbleOptions::for_project(&p, dns.addr);
    opts.chaos = true;
    let pebble = Pebble::start(opts);
    let mx_dir = tempfile::tempdir().unwrap();
    let mx = format!(
        "[[mx]]\nhost = \"{MX}\"\nchallenge = \"tls-alpn-01\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        mx_dir.path().join("mx.crt").display(),
        mx_dir.path().join("mx.key").display()
    );
    use_pebble(&p, &pebble, "http-01", (1, 4), &mx);
    let started = now();
    let d = p.start();
    // Pebble sleeps up to 15 s before each validation and rejects 5% of nonces.
    wait_issued(&p, &d, HOST, started, Duration::from_secs(300));
    wait_issued(&p, &d, MX, started, Duration::from_secs(300));
    let root = pebble.root_pem();
    assert_chain_verifies(&root, &cert_dir(&p, HOST).join("chain.pem"));
    assert_chain_verifies(&root, &mx_dir.path().join("mx.crt"));
    assert_policy_served(&d, &root);
    let log = pebble.log_text();
    assert!(
        log.contains("Configured to reject 5% of good nonces"),
        "{log}"
    );
    assert!(!log.contains("Disabling random VA sleeps"), "{log}");
    assert!(log.contains("seconds before validating"), "{log}");
}

#[test]
fn external_account_binding_registers_with_the_configured_key() {
    let p = project();
    let dns = ChallDns::start();
    let mut opts = PebbleOptions::for_project(&p, dns.addr);
    // A 32-byte HMAC key, base64url as CAs hand it out.
    let key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    opts.eab = Some(("kid-mxguard".into(), key.into()));
    let pebble = Pebble::start(opts);
    fs::write(p.path("eab.key"), format!("{key}\n")).unwrap();
    fs::set_permissions(p.path("eab.key"), fs::Permissions::from_mode(0o600)).unwrap();

    // Without the binding the CA refuses the account: the user reads why.
    use_pebble(&p, &pebble, "http-01", (1, 4), "");
    let d = p.start();
    let r = wait_for("the refused registration", Duration::from_secs(30), || {
        let r = cert_report(&p, HOST);
        r["last_error"].is_string().then_some(r)
    });
    let err = r["last_error"].as_str().unwrap();
    assert!(err.contains("externalAccountRequired"), "{err}");
    d.signal("TERM");
    let mut d = d;
    wait_for("daemon exit", Duration::from_secs(15), || {
        d.child.try_wait().unwrap()
    });
    drop(d);

    let cfg = fs::read_to_string(p.config()).unwrap();
    fs::write(
        p.config(),
        cfg.replace(
            "retry_initial",
            "eab_kid = \"kid-mxguard\"\neab_hmac_key_file = \"eab.key\"\nretry_initial",
        ),
    )
    .unwrap();
    let started = now();
    let d = p.start();
    wait_issued(&p, &d, HOST, started, Duration::from_secs(60));
    assert!(
        pebble
            .log_text()
            .contains("Successful newAccount Binding with CA using kid \"kid-mxguard\""),
        "{}",
        pebble.log_text()
    );
    assert_policy_served(&d, &pebble.root_pem());
}

#[test]
fn ca_outage_keeps_old_certificate_and_recovers_after_ca_restart() {
    let p = project();
    let dns = ChallDns::start();
    let mut opts = PebbleOptions::for_project(&p, dns.addr);
    // Renewal at about 38 s after issuance; expiry at 60 s. Retries 1, 2, 4 s.
    opts.validity = 60;
    let mut pebble = Pebble::start(opts);
    use_pebble(&p, &pebble, "http-01", (1, 16), "");
    let started = now();
    let d = p.start();
    let first = wait_issued(&p, &d, HOST, started, Duration::from_secs(60));
    let first_root = pebble.root_pem();
    let first_chain = fs::read_to_string(cert_dir(&p, HOST).join("chain.pem")).unwrap();
    let account_before = fs::read_to_string(p.path("state/acme/account.json")).unwrap();
    pebble.stop();

    // The renewal fails; retries back off; the old certificate is still served.
    let mut seen: Vec<(u64, String, String)> = Vec::new(); // (attempts, next_renewal, error)
    let na = first["not_after"].as_u64().unwrap();
    wait_for("three failed renewals", Duration::from_secs(90), || {
        let r = cert_report(&p, HOST);
        let attempts = r["attempts"].as_u64().unwrap();
        if attempts > 0 && seen.last().is_none_or(|s| s.0 != attempts) {
            seen.push((
                attempts,
                r["next_renewal"].as_str().unwrap().to_string(),
                r["last_error"].as_str().unwrap_or_default().to_string(),
            ));
            if seen.len() == 1 && now() + 2 < na {
                // Still valid: the daemon keeps serving the certificate it has.
                assert_policy_served(&d, &first_root);
            }
        }
        (attempts >= 3).then_some(())
    });
    assert!(seen.len() >= 2, "{seen:?}");
    for (attempts, _, err) in &seen {
        // The user learns what failed and why, not just "client error".
        assert!(
            err.contains("Connection refused") || err.contains("connection refused"),
            "attempt {attempts}: {err}"
        );
    }
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    };
    let nexts: Vec<i64> = seen.iter().map(|s| parse(&s.1)).collect();
    let gaps: Vec<i64> = nexts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.windows(2).all(|g| g[1] > g[0]),
        "retry delays must grow: {seen:?}"
    );
    assert!(gaps.iter().all(|g| *g > 0), "{seen:?}");
    // The chain on disk is untouched.
    assert_eq!(
        fs::read_to_string(cert_dir(&p, HOST).join("chain.pem")).unwrap(),
        first_chain
    );
    let text = certs_text(&p);
    assert!(text.contains("last error:   "), "{text}");
    assert!(text.contains("onnection refused"), "{text}");

    // The CA comes back with a new root and without our account: the daemon recovers alone.
    pebble.restart();
    let second = wait_issued(
        &p,
        &d,
        HOST,
        first["last_success"].as_u64().unwrap() + 1,
        Duration::from_secs(60),
    );
    assert_eq!(second["attempts"], 0);
    let new_root = pebble.root_pem();
    assert_ne!(
        fs::read_to_string(&new_root).unwrap(),
        fs::read_to_string(&first_root).unwrap()
    );
    assert_chain_verifies(&new_root, &cert_dir(&p, HOST).join("chain.pem"));
    assert_policy_served(&d, &new_root);
    // A new account was registered (the CA forgot the old one) and stored for next time.
    assert_eq!(pebble.accounts_created(), 1, "{}", pebble.log_text());
    let account_after = fs::read_to_string(p.path("state/acme/account.json")).unwrap();
    assert_ne!(account_after, account_before);
    let log = d.log_text();
    assert!(log.contains("no longer knows account"), "{log}");
    let r = cert_report(&p, HOST);
    assert!(r["last_error"].is_null(), "{r}");
    assert!(!certs_text(&p).contains("last error"));
}

#[test]
fn mx_certificate_is_deployed_and_failing_reload_is_retried() {
    let p = project();
    let dns = ChallDns::start();
    let pebble = Pebble::start(PebbleOptions::for_project(&p, dns.addr));
    let mta = tempfile::tempdir().unwrap();
    let tls = mta.path().join("tls");
    fs::create_dir(&tls).unwrap();
    let cert_file = tls.join("mx1.crt");
    let key_file = tls.join("mx1.key");
    // An old certificate that the deployment replaces.
    fs::write(&cert_file, "OLD CHAIN\n").unwrap();
    fs::set_permissions(&cert_file, fs::Permissions::from_mode(0o600)).unwrap();
    // The reload command records each run (with the files it saw) and fails twice.
    let script = mta.path().join("reload.sh");
    let runs = mta.path().join("runs");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nn=$(( $(cat '{count}' 2>/dev/null || echo 0) + 1 ))\necho $n > '{count}'\necho \"$n $(sha256sum < '{crt}' | cut -d' ' -f1) $(sha256sum < '{key}' | cut -d' ' -f1)\" >> '{runs}'\nif [ $n -le 2 ]; then echo \"postfix: fatal: reload failure $n\" >&2; exit 1; fi\n",
            count = mta.path().join("count").display(),
            crt = cert_file.display(),
            key = key_file.display(),
            runs = runs.display(),
        ),
    )
    .unwrap();
    let mx = format!(
        "[[mx]]\nhost = \"{MX}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\ncert_mode = \"0644\"\nkey_mode = \"0640\"\nreload = [\"sh\", \"{}\"]\nreload_timeout = 10\n",
        cert_file.display(),
        key_file.display(),
        script.display()
    );
    use_pebble(&p, &pebble, "http-01", (1, 4), &mx);
    let started = now();
    let d = p.start();
    wait_issued(&p, &d, MX, started, Duration::from_secs(60));

    // The first reload fails: reported by `mxguard certs`.
    let r = wait_for(
        "the failed reload to be reported",
        Duration::from_secs(30),
        || {
            let r = cert_report(&p, MX);
            r["deploy_error"].is_string().then_some(r)
        },
    );
    let err = r["deploy_error"].as_str().unwrap();
    assert!(
        err.contains("reload failure") && err.contains("exit status: 1"),
        "{err}"
    );
    let text = certs_text(&p);
    assert!(text.contains("deploy error: reload command"), "{text}");
    assert!(text.contains("fatal: reload failure"), "{text}");

    // Retried until it succeeds.
    wait_for("the reload to succeed", Duration::from_secs(60), || {
        let st = cert_state(&p, MX);
        (st["deployed"].is_string() && st["deploy_error"].is_null()).then_some(())
    });
    assert!(cert_report(&p, MX)["deploy_error"].is_null());
    assert!(!certs_text(&p).contains("deploy error"));

    // Files: the chain mxguard holds, the key that matches it, the modes asked for.
    let chain = fs::read_to_string(cert_dir(&p, MX).join("chain.pem")).unwrap();
    assert_eq!(fs::read_to_string(&cert_file).unwrap(), chain);
    let mode = |f: &Path| fs::metadata(f).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cert_file), 0o644);
    assert_eq!(mode(&key_file), 0o640);
    assert_eq!(
        openssl(&["x509", "-noout", "-pubkey"], &cert_file),
        openssl(&["pkey", "-pubout"], &key_file),
        "the deployed key does not match the deployed certificate"
    );
    assert_chain_verifies(&pebble.root_pem(), &cert_file);
    assert!(sans(&cert_file).contains(&format!("DNS:{MX}")));
    // Replaced by rename: no temporary files left beside them.
    let mut names: Vec<String> = fs::read_dir(&tls)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["mx1.crt", "mx1.key"]);
    // Every run saw the complete new files; three runs (two failures, one success).
    let sha = |f: &Path| {
        ring::digest::digest(&ring::digest::SHA256, &fs::read(f).unwrap())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let expected = format!("{} {}", sha(&cert_file), sha(&key_file));
    let runs = fs::read_to_string(&runs).unwrap();
    let lines: Vec<&str> = runs.lines().collect();
    assert_eq!(lines.len(), 3, "{runs}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("{} {expected}", i + 1));
    }
    // Deployed once: a later pass does not run the command again.
    std::thread::sleep(Duration::from_secs(2)); // no condition to wait for: proving absence
    assert_eq!(fs::read_to_string(mta.path().join("runs")).unwrap(), runs);

    // The MTA's certificate moves: after SIGHUP the chain is written there at once (not at
    // the next renewal) and the MTA reloaded again.
    let moved = tls.join("mx1-new.crt");
    let cfg = fs::read_to_string(p.config()).unwrap();
    fs::write(
        p.config(),
        cfg.replace(
            &format!("cert_file = \"{}\"", cert_file.display()),
            &format!("cert_file = \"{}\"", moved.display()),
        ),
    )
    .unwrap();
    d.reload();
    wait_for(
        "the moved certificate to be deployed",
        Duration::from_secs(20),
        || {
            let runs = fs::read_to_string(mta.path().join("runs")).unwrap();
            (fs::read_to_string(&moved).ok()? == chain && runs.lines().count() == 4).then_some(())
        },
    );
    assert_eq!(mode(&moved), 0o644);
    assert!(cert_state(&p, MX)["deploy_error"].is_null());
}

#[test]
fn switching_from_the_local_ca_to_acme_orders_at_once() {
    let p = project();
    let dns = ChallDns::start();
    let pebble = Pebble::start(PebbleOptions::for_project(&p, dns.addr));
    // First with mxguard's local CA: a 90-day certificate, renewal in two months.
    let mut d = p.start();
    let local = wait_for("the local certificate", Duration::from_secs(30), || {
        let st = cert_state(&p, HOST);
        (st["issuer"] == "local").then_some(st)
    });
    assert!(local["next_attempt"].as_u64().unwrap() > now() + 30 * 86_400);
    d.signal("TERM");
    wait_for("daemon exit", Duration::from_secs(15), || {
        d.child.try_wait().unwrap()
    });
    drop(d);
    // Then with a real CA: ordered right after the restart, not in two months.
    use_pebble(&p, &pebble, "http-01", (1, 4), "");
    let started = now();
    let d = p.start();
    wait_issued(&p, &d, HOST, started, Duration::from_secs(60));
    let root = pebble.root_pem();
    assert_chain_verifies(&root, &cert_dir(&p, HOST).join("chain.pem"));
    assert_policy_served(&d, &root);
}

#[test]
fn restart_reuses_the_stored_account() {
    let p = project();
    let dns = ChallDns::start();
    let mut opts = PebbleOptions::for_project(&p, dns.addr);
    // Short enough that the certificate renews after the restart.
    opts.validity = 24;
    let pebble = Pebble::start(opts);
    use_pebble(&p, &pebble, "tls-alpn-01", (1, 4), "");
    let started = now();
    let mut d = p.start();
    let first = wait_issued(&p, &d, HOST, started, Duration::from_secs(60));
    let account_path = p.path("state/acme/account.json");
    let account = fs::read(&account_path).unwrap();
    let mode = fs::metadata(&account_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "account credentials are a secret");
    assert_eq!(pebble.accounts_created(), 1);
    let account_url = serde_json::from_slice::<Value>(&account).unwrap()["credentials"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    d.signal("TERM");
    wait_for("daemon exit", Duration::from_secs(15), || {
        d.child.try_wait().unwrap()
    });
    drop(d);
    let d = p.start();
    // The schedule survives the restart: no new order before the stored renewal time.
    let second = wait_issued(
        &p,
        &d,
        HOST,
        first["last_success"].as_u64().unwrap() + 1,
        Duration::from_secs(60),
    );
    assert!(
        second["not_before"].as_u64().unwrap() + 1 >= first["next_attempt"].as_u64().unwrap(),
        "renewed before it was due: {first} {second}"
    );
    assert_eq!(
        fs::read(&account_path).unwrap(),
        account,
        "account.json changed"
    );
    assert_eq!(
        pebble.accounts_created(),
        1,
        "a second account was created:\n{}",
        pebble.log_text()
    );
    assert!(
        !d.log_text().contains("acme account created"),
        "{}",
        d.log_text()
    );
    assert_chain_verifies(&pebble.root_pem(), &cert_dir(&p, HOST).join("chain.pem"));
    // The order was placed by the stored account.
    assert!(account_url.contains("/my-account/"), "{account_url}");
    assert_policy_served(&d, &pebble.root_pem());
}

#[test]
fn dns01_certificates_are_issued_through_the_daemons_own_zone() {
    let p = project();
    // Pebble resolves every name (A and the _acme-challenge TXT) through the daemon's DNS.
    let pebble = Pebble::start(PebbleOptions::for_project(
        &p,
        format!("127.0.0.1:{}", p.dns).parse().unwrap(),
    ));
    let mta = tempfile::tempdir().unwrap();
    let mx = format!(
        "[[mx]]\nhost = \"{MX}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        mta.path().join("mx1.crt").display(),
        mta.path().join("mx1.key").display()
    );
    use_pebble(&p, &pebble, "dns-01", (1, 4), &mx);
    let started = now();
    let d = p.start();
    wait_issued(&p, &d, HOST, started, Duration::from_secs(90));
    wait_issued(&p, &d, MX, started, Duration::from_secs(90));
    let root = pebble.root_pem();
    assert_chain_verifies(&root, &cert_dir(&p, HOST).join("chain.pem"));
    assert_chain_verifies(&root, &mta.path().join("mx1.crt"));
    assert_policy_served(&d, &root);
    assert!(
        !pebble.log_text().contains("Attempting to validate w/ HTTP"),
        "{}",
        pebble.log_text()
    );
    // The challenge records are withdrawn once the orders are done.
    for name in [HOST, MX] {
        let qname = format!("_acme-challenge.{name}.");
        wait_for(
            &format!("{qname} to be withdrawn"),
            Duration::from_secs(10),
            || {
                let out = Command::new("dig")
                    // +nocookie: identical polls, which the response cache may answer: it
                    // must follow the withdrawal.
                    .args(["@127.0.0.1", "-p", &p.dns.to_string(), "+short", "+norec"])
                    .args(["+nocookie", &qname, "TXT"])
                    .output()
                    .expect("dig is installed (bind9-dnsutils)");
                (out.status.success() && out.stdout.is_empty()).then_some(())
            },
        );
    }
}

#[test]
fn sigterm_during_an_order_exits_promptly() {
    let p = project();
    let dns = ChallDns::start();
    let mut opts = PebbleOptions::for_project(&p, dns.addr);
    // tls-alpn-01 validation goes to a port that accepts connections and never answers:
    // the order hangs in validation.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    opts.tls_port = silent.local_addr().unwrap().port();
    let pebble = Pebble::start(opts);
    use_pebble(&p, &pebble, "tls-alpn-01", (1, 4), "");
    let mut d = p.start();
    wait_for("validation to start", Duration::from_secs(30), || {
        pebble
            .log_text()
            .contains("Pulled a task from the Tasks queue")
            .then_some(())
    });
    let t0 = std::time::Instant::now();
    d.signal("TERM");
    let status = wait_for("daemon exit", Duration::from_secs(15), || {
        d.child.try_wait().unwrap()
    });
    let took = t0.elapsed();
    assert!(status.success(), "{status:?}: {}", d.log_text());
    assert!(
        took < Duration::from_secs(3),
        "shutdown took {took:?}: {}",
        d.log_text()
    );
    let log = d.log_text();
    assert!(
        log.contains("certificate work abandoned at shutdown"),
        "{log}"
    );
    assert!(!log.contains("did not stop in time"), "{log}");
    drop(silent);
}

#[test]
fn a_profile_the_ca_does_not_offer_falls_back_to_its_default_with_a_warning() {
    // Pebble 2.4.0 lists no profiles: the order must still succeed, and say why.
    let p = project();
    let dns = ChallDns::start();
    let pebble = Pebble::start(PebbleOptions::for_project(&p, dns.addr));
    use_pebble(&p, &pebble, "http-01", (1, 4), "");
    let cfg = fs::read_to_string(p.config()).unwrap();
    let with_profile = cfg.replace(
        "challenge = \"http-01\"\n",
        "challenge = \"http-01\"\nprofile = \"shortlived\"\n",
    );
    assert_ne!(with_profile, cfg);
    fs::write(p.config(), with_profile).unwrap();
    let started = now();
    let d = p.start();
    wait_issued(&p, &d, HOST, started, Duration::from_secs(90));
    assert_chain_verifies(&pebble.root_pem(), &cert_dir(&p, HOST).join("chain.pem"));
    assert!(
        d.log_text()
            .contains("the CA does not offer this certificate profile"),
        "{}",
        d.log_text()
    );
}

#[test]
fn caa_names_the_account_once_it_exists() {
    let p = project();
    let dns = ChallDns::start();
    let pebble = Pebble::start(PebbleOptions::for_project(&p, dns.addr));
    use_pebble(&p, &pebble, "http-01", (1, 4), "");
    let cfg = fs::read_to_string(p.config()).unwrap();
    let with_caa = cfg.replace(
        "challenge = \"http-01\"\n",
        "challenge = \"http-01\"\ncaa = true\ncaa_issuer = \"pebble.test\"\n",
    );
    fs::write(p.config(), with_caa).unwrap();
    let started = now();
    let d = p.start();
    wait_issued(&p, &d, HOST, started, Duration::from_secs(90));
    let account: Value =
        serde_json::from_slice(&fs::read(p.path("state/acme/account.json")).unwrap()).unwrap();
    let url = account["credentials"]["id"].as_str().unwrap().to_string();
    // The full answer of mxguard to `example.com. CAA` (header and sections).
    let caa = || {
        let out = Command::new("dig")
            .args(["@127.0.0.1", "-p", &p.dns.to_string(), "+norec"])
            .args(["+nocookie", "example.com.", "CAA"])
            .output()
            .expect("dig is installed (bind9-dnsutils)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_for("CAA with accounturi", Duration::from_secs(10), || {
        let text = caa();
        (text.contains("pebble.test")
            && text.contains("validationmethods=http-01")
            && text.contains(&format!("accounturi={url}")))
        .then_some(())
    });
    // Turned off by a reload: the records are withdrawn.
    fs::write(p.config(), cfg).unwrap();
    d.reload();
    wait_for("CAA withdrawn", Duration::from_secs(10), || {
        let text = caa();
        (text.contains("status: NOERROR")
            && text.contains("ANSWER: 0,")
            && !text.contains("pebble.test"))
        .then_some(())
    });
}

/// dns-01 while a secondary is down: each order times out waiting for it, and every failed
/// attempt withdraws its challenge record (they never pile up); with the secondary back, the
/// order succeeds and no challenge is left in the zone.
#[test]
fn a_stopped_secondary_fails_dns01_without_leaving_challenges() {
    let p = project();
    let kport = crate::harness::free_port();
    let pebble = Pebble::start(PebbleOptions::for_project(
        &p,
        format!("127.0.0.1:{}", p.dns).parse().unwrap(),
    ));
    use_pebble(
        &p,
        &pebble,
        "dns-01",
        (1, 2),
        &format!("[[secondary]]\nname = \"knot\"\naddress = \"127.0.0.1:{kport}\"\n"),
    );
    let cfg = fs::read_to_string(p.config()).unwrap();
    fs::write(
        p.config(),
        cfg.replace("retry_max = 2\n", "retry_max = 2\ndns01_timeout = \"2s\"\n"),
    )
    .unwrap();
    let started = now();
    let d = p.start();
    let challenges = || {
        let out = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &p.dns.to_string(),
                "+short",
                "+norec",
                "+nocookie",
            ])
            .args([&format!("_acme-challenge.{HOST}."), "TXT"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .count()
    };
    // Several failed attempts: at most the current attempt's record at any time.
    let mut most = 0;
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(12) {
        most = most.max(challenges());
        std::thread::sleep(Duration::from_millis(200));
    }
    // (One at a time: each attempt publishes its record and withdraws it when it fails.)
    assert_eq!(most, 1, "challenge records at once");
    let log = d.log_text();
    assert!(
        log.contains("does not serve example.com."),
        "the failure names the secondary:\n{log}"
    );
    // The secondary comes: the next attempt succeeds, and nothing is left behind.
    let _knot = crate::dns::Knot::start(kport, d.dns, &["example.com."]);
    wait_issued(&p, &d, HOST, started, Duration::from_secs(90));
    wait_for("no challenge left", Duration::from_secs(15), || {
        (challenges() == 0).then_some(())
    });
}
