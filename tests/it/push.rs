//! Push mode against a real primary: knotd serving and signing example.com, configured with
//! exactly the ACL `mxguard dns-policy` prints. mxguard serves no zone for the domain; it
//! pushes `_mta-sts`, `_smtp._tls` and the MX's TLSA records by TSIG-signed UPDATE, rolls the
//! MX key with the hold measured at knot, and reports a refused update by server, record and
//! code while the old records stay.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::dns::{Knot, Proc, Unbound, dig, flags, ksk_ds, run, tool};
use crate::harness::{DomainSpec, Project, StandInMx, free_port, mxguard, wait_for};
use crate::pebble::{Pebble, PebbleOptions};

const MX: &str = "mx1.example.com";

/// knotd as the domain's own, signing primary.
struct KnotPrimary {
    port: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl KnotPrimary {
    /// `secondary`: a port on 127.0.0.1 that gets NOTIFY and may transfer the zone.
    fn start(port: u16, policy_snippet: &str, secondary: u16) -> KnotPrimary {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        fs::create_dir_all(dir.path().join("zones")).unwrap();
        fs::create_dir_all(dir.path().join("db")).unwrap();
        fs::write(
            dir.path().join("zones/example.com.zone"),
            "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ NS ns1\nns1 A 127.0.0.1\n@ MX 10 mx1\nmx1 A 127.0.0.1\nmta-sts A 127.0.0.1\nwww A 192.0.2.80\n",
        )
        .unwrap();
        let conf = format!(
            "server:\n    listen: 127.0.0.1@{port}\n    rundir: \"{d}\"\nlog:\n  - target: stderr\n    any: info\ndatabase:\n    storage: \"{d}/db\"\nremote:\n  - id: secondary\n    address: 127.0.0.1@{secondary}\ntemplate:\n  - id: default\n    storage: \"{d}/zones\"\n    file: \"%s.zone\"\n    dnssec-signing: on\n    zonefile-sync: -1\n    journal-content: all\n{}",
            // The secondary may transfer and is notified, beside the ACLs dns-policy printed.
            policy_snippet
                .replacen(
                    "acl:\n",
                    "acl:\n  - id: xfr\n    address: 127.0.0.1\n    action: transfer\n",
                    1
                )
                .replacen("    acl: [", "    notify: secondary\n    acl: [xfr, ", 1)
        );
        let path = dir.path().join("knot.conf");
        fs::write(&path, &conf).unwrap();
        let (ok, out) = run(Command::new(tool("knotc", "knot"))
            .arg("-c")
            .arg(&path)
            .arg("conf-check"));
        assert!(ok, "knotc conf-check: {out}\n{conf}");
        let child = Command::new(tool("knotd", "knot"))
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("knot.log")).unwrap())
            .spawn()
            .unwrap();
        let k = KnotPrimary {
            port,
            _proc: Proc(child),
            _dir: dir,
        };
        wait_for(
            "knot to serve a signed zone",
            Duration::from_secs(20),
            || {
                k.dig(&["+short", "example.com", "DNSKEY"])
                    .lines()
                    .any(|l| l.starts_with("257 3 "))
                    .then_some(())
            },
        );
        k
    }

    /// The DS of the zone's KSK (for a validating resolver's trust anchor).
    fn ds(&self, dir: &std::path::Path) -> String {
        ksk_ds(
            "example.com",
            &self.dig(&["+short", "example.com", "DNSKEY"]),
            dir,
        )
    }

    fn dig(&self, args: &[&str]) -> String {
        run(Command::new(dig())
            .args([
                "@127.0.0.1",
                "-p",
                &self.port.to_string(),
                "+dnssec",
                "+norec",
                "+time=2",
                "+tries=1",
            ])
            .args(args))
        .1
    }

    /// The data of the `3 1 1` records knot serves for the MX.
    fn tlsa(&self) -> Vec<String> {
        self.dig(&["+short", &format!("_25._tcp.{MX}"), "TLSA"])
            .lines()
            .filter(|l| l.starts_with("3 1 1 "))
            .map(|l| l[6..].replace(' ', "").to_lowercase())
            .collect()
    }
}

/// The key (`3 1 1` data) the MX presents.
fn presented(addr: std::net::SocketAddr) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(mxguard::dane::probe::presented_key(
        addr,
        MX,
        Duration::from_secs(5),
    ))
    .ok()
}

fn phase(p: &Project) -> String {
    fs::read(p.path(&format!("state/rollover/{MX}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["phase"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn current_key(p: &Project) -> String {
    fs::read(p.path(&format!("state/rollover/{MX}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["current"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[test]
fn pushed_records_reach_a_signing_knot_primary_and_a_key_rolls_through_it() {
    let kport = free_port();
    let sport = free_port();
    let probe = free_port();
    let p = Project::new(&[DomainSpec {
        name: "example.com",
        mx: &[MX],
        policy: "mode = \"enforce\"\nmax_age = 604800\n",
    }]);
    let secret = p.path("secrets/mxguard.tsig");
    fs::create_dir_all(p.path("secrets")).unwrap();
    let out = mxguard(&["tsig-keygen", "mxguard", "--out", secret.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let mta = p.path("mta");
    p.append_config(&format!(
        "[records]\ntlsa_ttl = 1\nttl = 1\n\n[rollover]\nkey_age = \"30d\"\nmin_hold = \"3s\"\npoll = \"1s\"\n\n\
         [[mx]]\nhost = \"{MX}\"\ncert_file = \"{m}/mx1.crt\"\nkey_file = \"{m}/mx1.key\"\nverify = \"127.0.0.1:{probe}\"\nreload = [\"sleep\", \"1\"]\n\n\
         [domain.push]\nprovider = \"rfc2136\"\nserver = \"127.0.0.1:{kport}\"\ntsig_key_name = \"mxguard\"\ntsig_secret_file = \"{s}\"\nnameservers = [\"127.0.0.1:{kport}\", \"127.0.0.1:{sport}\"]\n",
        m = mta.display(),
        s = secret.display()
    ));
    let out = mxguard(&["check-config", "-c", &p.config_str()]);
    assert!(out.status.success(), "{out:?}");

    // knot is configured with exactly what dns-policy prints for it.
    let out = mxguard(&["dns-policy", "-c", &p.config_str()]);
    let policy = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{policy}");
    for line in [
        "#   _mta-sts.example.com. TXT".to_string(),
        "#   _smtp._tls.example.com. TXT".to_string(),
        format!("#   _25._tcp.{MX}. TLSA"),
        format!("        grant mxguard. name _25._tcp.{MX}. TLSA;"),
    ] {
        assert!(policy.contains(&line), "{line}: {policy}");
    }
    let knot_part = policy
        .split("# Knot DNS (knot.conf)")
        .nth(1)
        .and_then(|s| s.split("# BIND (named.conf)").next())
        .unwrap();
    let knot_snippet: String = knot_part.lines().skip(1).collect::<Vec<_>>().join("\n");
    let knot = KnotPrimary::start(kport, &knot_snippet, sport);
    let mut secondary = Some(Knot::start(sport, kport, &["example.com."]));
    // Certificates from Pebble by dns-01: the challenge records go to knot by UPDATE, and
    // Pebble resolves them there.
    let pebble = Pebble::start(PebbleOptions::for_project(
        &p,
        format!("127.0.0.1:{kport}").parse().unwrap(),
    ));
    let cfg = fs::read_to_string(p.config()).unwrap();
    let acme = format!(
        "[acme]\ndirectory = \"{}\"\nca_file = \"{}\"\nchallenge = \"dns-01\"\nretry_initial = 1\nretry_max = 4\n",
        pebble.directory(),
        pebble.api_ca().display()
    );
    let replaced = cfg.replace("[acme]\ndirectory = \"local\"\n", &acme);
    assert_ne!(replaced, cfg, "harness config layout changed");
    fs::write(p.config(), replaced).unwrap();

    let d = p.start();
    // mxguard serves no zone for the pushed domain.
    let own = run(Command::new(dig()).args([
        "@127.0.0.1",
        "-p",
        &d.dns.to_string(),
        "+norec",
        "_mta-sts.example.com",
        "TXT",
    ]))
    .1;
    assert!(own.contains("status: REFUSED"), "{own}");
    // The policy id, signed by knot.
    wait_for("the policy id at knot", Duration::from_secs(30), || {
        let out = knot.dig(&["_mta-sts.example.com", "TXT"]);
        (out.contains("v=STSv1; id=") && out.contains("RRSIG")).then_some(())
    });
    assert!(
        knot.dig(&["_smtp._tls.example.com", "TXT"])
            .contains("v=TLSRPTv1; rua=mailto:tlsrpt@example.com")
    );
    // The MX certificate is deployed; the stand-in MTA serves it.
    let (cert, key) = (p.path("mta/mx1.crt"), p.path("mta/mx1.key"));
    wait_for("first MX deployment", Duration::from_secs(90), || {
        (cert.exists() && key.exists()).then_some(())
    });
    let chain = fs::read_to_string(&cert).unwrap();
    let issuer = Command::new("openssl")
        .args(["x509", "-noout", "-issuer"])
        .stdin(fs::File::open(&cert).unwrap())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&issuer.stdout).contains("Pebble"),
        "{chain}"
    );
    // The challenge records were withdrawn from knot after the orders.
    wait_for("no challenge left at knot", Duration::from_secs(30), || {
        (!knot
            .dig(&[&format!("_acme-challenge.{MX}"), "TXT"])
            .contains("TXT\t\""))
        .then_some(())
    });
    // A slow STARTTLS (and the slow reload command above) make the verifying and deploying
    // phases long enough to be caught.
    let mx = StandInMx::start(cert, key, Duration::from_millis(1500));
    let cfg = fs::read_to_string(p.config())
        .unwrap()
        .replace(&format!("127.0.0.1:{probe}"), &mx.addr().to_string());
    fs::write(p.config(), cfg).unwrap();
    d.reload();
    wait_for(
        "current and next TLSA at knot",
        Duration::from_secs(60),
        || (phase(&p) == "stable" && knot.tlsa().len() == 2).then_some(()),
    );
    let first = current_key(&p);
    assert!(knot.tlsa().contains(&first), "{:?}", knot.tlsa());
    assert!(
        knot.dig(&[&format!("_25._tcp.{MX}"), "TLSA"])
            .contains("RRSIG")
    );

    // A strict unbound, anchored at the zone's DS, asking the secondary: the pushed records
    // validate.
    let unbound = Unbound::start(sport, &knot.ds(p.dir.path()));
    wait_for(
        "validated TLSA through the secondary",
        Duration::from_secs(30),
        || {
            let out = unbound.dig(&[&format!("_25._tcp.{MX}"), "TLSA"]);
            (out.contains("status: NOERROR")
                && flags(&out).contains(" ad")
                && out.contains(&first.to_uppercase()[..16]))
            .then_some(())
        },
    );
    let out = unbound.dig(&["_mta-sts.example.com", "TXT"]);
    assert!(
        flags(&out).contains(" ad") && out.contains("v=STSv1"),
        "{out}"
    );

    // Rolls, the hold measured at both nameservers: one undisturbed, then one for each phase
    // in which mxguard is SIGKILLed (and restarted; "stable": right after `rotate`, before
    // the roll started); each completes.
    // The DANE invariant, sampled throughout (each sample waits for the slow STARTTLS): the
    // key the MX presents has its record at the secondary and validated by unbound.
    let observer = crate::rollover::Observer::start(mx.addr(), sport, unbound.port);
    let mut d = d;
    let mut keys = vec![first.clone()];
    for kill_in in [
        None,
        Some("stable"),
        Some("issuing"),
        Some("deploying"),
        Some("verifying"),
        Some("propagating"),
    ] {
        let before = keys.last().unwrap().clone();
        let out = mxguard(&["rotate", "-c", &p.config_str(), MX]);
        assert!(out.status.success(), "{out:?}");
        if let Some(target) = kill_in {
            let start = std::time::Instant::now();
            while phase(&p) != target {
                assert!(
                    start.elapsed() < Duration::from_secs(90),
                    "phase {target} not seen (now {})",
                    phase(&p)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            d.signal("KILL");
            let _ = d.child.wait();
            d = p.start();
            eprintln!("killed in {target}, restarted");
        }
        wait_for(
            &format!("roll (killed in {kill_in:?}) to complete"),
            Duration::from_secs(120),
            || {
                let k = current_key(&p);
                (k != before && !k.is_empty() && phase(&p) == "stable").then_some(k)
            },
        );
        let now = current_key(&p);
        assert_eq!(presented(mx.addr()).as_deref(), Some(now.as_str()));
        wait_for(
            "the old key's record withdrawn at knot",
            Duration::from_secs(30),
            || {
                let set = knot.tlsa();
                (set.contains(&now) && !set.contains(&before)).then_some(())
            },
        );
        keys.push(now);
    }
    let samples = observer.finish();
    assert!(samples >= 20, "only {samples} samples");

    // The secondary stops: the next roll holds, naming it; back, the roll completes.
    drop(secondary.take());
    let before = current_key(&p);
    let out = mxguard(&["rotate", "-c", &p.config_str(), MX]);
    assert!(out.status.success(), "{out:?}");
    wait_for(
        "the roll held by the stopped secondary",
        Duration::from_secs(60),
        || {
            let out = mxguard(&["tlsa", "-c", &p.config_str()]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (text.contains("held: ") && text.contains(&format!("nameserver 127.0.0.1:{sport}")))
                .then_some(())
        },
    );
    assert_eq!(
        current_key(&p),
        before,
        "no switch while a nameserver is down"
    );
    secondary = Some(Knot::start(sport, kport, &["example.com."]));
    wait_for(
        "the held roll to complete",
        Duration::from_secs(120),
        || {
            let k = current_key(&p);
            (k != before && phase(&p) == "stable").then_some(())
        },
    );
    // A record mxguard does not manage was never touched.
    assert!(
        knot.dig(&["+short", "www.example.com", "A"])
            .contains("192.0.2.80")
    );

    // `status` shows the mode, the serials and the managed RRsets as knot serves them.
    // (The secondary may be a serial behind for a moment: status then exits 1.)
    let text = wait_for(
        "status with every nameserver in sync",
        Duration::from_secs(30),
        || {
            let out = mxguard(&["status", "-c", &p.config_str()]);
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    );
    for part in [
        format!("zone example.com (pushed by RFC 2136 to 127.0.0.1:{kport})"),
        format!("  primary 127.0.0.1:{kport}: serial "),
        format!("  nameserver 127.0.0.1:{kport}: serial "),
        "  _mta-sts.example.com. TXT: 1 record(s), signed".to_string(),
        format!("  _25._tcp.{MX}. TLSA: 2 record(s), signed"),
    ] {
        assert!(text.contains(&part), "{part}: {text}");
    }

    // The key can write nothing else: an A record is denied by knot.
    let secret_b64 = fs::read_to_string(&secret).unwrap().trim().to_string();
    let mut nsupdate = Command::new(tool("nsupdate", "bind9-dnsutils"))
        .args(["-y", &format!("hmac-sha256:mxguard.:{secret_b64}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = nsupdate.stdin.take().unwrap();
        writeln!(stdin, "server 127.0.0.1 {kport}\nzone example.com\nupdate add evil.example.com. 300 A 192.0.2.66\nsend").unwrap();
    }
    let out = nsupdate.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Knot answers an update its ACLs deny with NOTAUTH (BIND: REFUSED).
    assert!(
        text.contains("NOTAUTH") || text.contains("REFUSED"),
        "{text}"
    );
    assert!(!knot.dig(&["evil.example.com", "A"]).contains("192.0.2.66"));

    // A wrong key: the update is refused; the log names server, records and code; the old
    // records stay and the policy is still served.
    let id_before = knot.dig(&["+short", "_mta-sts.example.com", "TXT"]);
    let out = mxguard(&["tsig-keygen", "other"]);
    fs::write(&secret, &out.stdout).unwrap();
    fs::write(
        p.path("policies/example.com.toml"),
        "mode = \"enforce\"\nmax_age = 86400\n",
    )
    .unwrap();
    d.reload();
    wait_for(
        "the refused push in the log",
        Duration::from_secs(20),
        || {
            d.log_text()
                .lines()
                .any(|l| {
                    l.contains(&format!("push to 127.0.0.1:{kport} for zone example.com."))
                        && l.contains("_mta-sts.example.com. TXT")
                        && l.contains("UPDATE answered NOTAUTH")
                })
                .then_some(())
        },
    );
    assert_eq!(
        knot.dig(&["+short", "_mta-sts.example.com", "TXT"]),
        id_before
    );
    // `tlsa` and `status` say that the pushes fail, naming server, records and code.
    wait_for(
        "tlsa to name the refused push",
        Duration::from_secs(30),
        || {
            let out = mxguard(&["tlsa", "-c", &p.config_str()]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (text.contains("push to example.com failing: push to 127.0.0.1:")
                && text.contains("NOTAUTH"))
            .then_some(())
        },
    );
    let out = mxguard(&["status", "-c", &p.config_str()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("  push failing: push to 127.0.0.1:"),
        "{out:?}"
    );
    // The policy is still served (with Pebble's certificate: curl trusts Pebble's root).
    let r = crate::harness::curl(
        &pebble.root_pem(),
        "mta-sts.example.com",
        d.https,
        "/.well-known/mta-sts.txt",
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
    // The right key again: the pending change goes through.
    fs::write(&secret, format!("{secret_b64}\n")).unwrap();
    d.reload();
    wait_for("the new policy id at knot", Duration::from_secs(40), || {
        (knot.dig(&["+short", "_mta-sts.example.com", "TXT"]) != id_before).then_some(())
    });
    // ... and `tlsa` no longer reports a failing push.
    wait_for("tlsa without the failure", Duration::from_secs(20), || {
        let out = mxguard(&["tlsa", "-c", &p.config_str()]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && !text.contains("failing") && !text.contains("cannot publish"))
            .then_some(())
    });
    drop((mx, unbound, secondary, knot, d, pebble));
}

/// BIND `named` as the domain's own primary, signing with `dnssec-policy default`, and
/// allowing updates exactly as the `update-policy` that `mxguard dns-policy` prints.
#[test]
fn pushed_records_reach_a_bind_primary_under_the_printed_update_policy() {
    let port = free_port();
    let p = Project::new(&[DomainSpec {
        name: "example.com",
        mx: &[MX],
        policy: "mode = \"testing\"\nmax_age = 86400\n",
    }]);
    let secret = p.path("secrets/mxguard.tsig");
    fs::create_dir_all(p.path("secrets")).unwrap();
    assert!(
        mxguard(&["tsig-keygen", "mxguard", "--out", secret.to_str().unwrap()])
            .status
            .success()
    );
    let probe = free_port();
    p.append_config(&format!(
        "[records]\nttl = 1\ntlsa_ttl = 1\n\n[rollover]\nkey_age = \"30d\"\nmin_hold = \"3s\"\npoll = \"1s\"\n\n\
         [[mx]]\nhost = \"{MX}\"\ncert_file = \"{m}/mx1.crt\"\nkey_file = \"{m}/mx1.key\"\nverify = \"127.0.0.1:{probe}\"\n\n\
         [domain.push]\nprovider = \"rfc2136\"\nserver = \"127.0.0.1:{port}\"\ntsig_key_name = \"mxguard\"\ntsig_secret_file = \"{}\"\nnameservers = [\"127.0.0.1:{port}\"]\n",
        secret.display(),
        m = p.path("mta").display()
    ));
    let out = mxguard(&["dns-policy", "-c", &p.config_str(), "example.com"]);
    let policy = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{policy}");
    let bind = policy.split("# BIND (named.conf)\n").nth(1).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    fs::write(
        dir.path().join("example.com.zone"),
        "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ NS ns1\nns1 A 127.0.0.1\n@ MX 10 mx1\nmx1 A 127.0.0.1\n",
    )
    .unwrap();
    let zone_lines = format!(
        "    type primary;\n    file \"{d}/example.com.zone\";\n    dnssec-policy default;\n    key-directory \"{d}\";\n"
    );
    let conf = format!(
        "options {{\n    directory \"{d}\";\n    pid-file \"{d}/named.pid\";\n    listen-on port {port} {{ 127.0.0.1; }};\n    listen-on-v6 {{ none; }};\n    recursion no;\n    dnssec-validation no;\n}};\n{}",
        bind.replace("    // type primary; file …;\n", &zone_lines)
    );
    let conf_path = dir.path().join("named.conf");
    fs::write(&conf_path, &conf).unwrap();
    let (ok, out) = run(Command::new(tool("named-checkconf", "bind9-utils")).arg(&conf_path));
    assert!(ok, "named-checkconf: {out}\n{conf}");
    let named = Proc(
        Command::new(tool("named", "bind9"))
            .args(["-g", "-c"])
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("named.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let q = |args: &[&str]| {
        run(Command::new(dig())
            .args([
                "@127.0.0.1",
                "-p",
                &port.to_string(),
                "+dnssec",
                "+norec",
                "+time=2",
                "+tries=1",
            ])
            .args(args))
        .1
    };
    wait_for("named to sign the zone", Duration::from_secs(30), || {
        q(&["+short", "example.com", "DNSKEY"])
            .contains(" 3 13 ")
            .then_some(())
    });
    let dmn = p.start();
    wait_for(
        "the policy id at named, signed",
        Duration::from_secs(30),
        || {
            let out = q(&["_mta-sts.example.com", "TXT"]);
            (out.contains("v=STSv1; id=") && out.contains("RRSIG")).then_some(())
        },
    );
    assert!(q(&["_smtp._tls.example.com", "TXT"]).contains("v=TLSRPTv1"));
    // One key roll through named.
    let (cert, key) = (p.path("mta/mx1.crt"), p.path("mta/mx1.key"));
    wait_for("first MX deployment", Duration::from_secs(60), || {
        (cert.exists() && key.exists()).then_some(())
    });
    let mx = StandInMx::start(cert, key, Duration::ZERO);
    let cfg = fs::read_to_string(p.config())
        .unwrap()
        .replace(&format!("127.0.0.1:{probe}"), &mx.addr().to_string());
    fs::write(p.config(), cfg).unwrap();
    dmn.reload();
    wait_for(
        "stable with the TLSA at named",
        Duration::from_secs(60),
        || {
            let out = q(&[&format!("_25._tcp.{MX}"), "TLSA"]);
            (phase(&p) == "stable" && out.contains("RRSIG")).then_some(())
        },
    );
    let first = current_key(&p);
    assert!(
        mxguard(&["rotate", "-c", &p.config_str(), MX])
            .status
            .success()
    );
    wait_for("the roll through named", Duration::from_secs(90), || {
        let k = current_key(&p);
        (k != first && !k.is_empty() && phase(&p) == "stable").then_some(())
    });
    assert_eq!(presented(mx.addr()), Some(current_key(&p)));
    // The key may write nothing else.
    let secret_b64 = fs::read_to_string(&secret).unwrap().trim().to_string();
    let mut nsupdate = Command::new(tool("nsupdate", "bind9-dnsutils"))
        .args(["-y", &format!("hmac-sha256:mxguard.:{secret_b64}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = nsupdate.stdin.take().unwrap();
        writeln!(stdin, "server 127.0.0.1 {port}\nzone example.com\nupdate add evil.example.com. 300 A 192.0.2.66\nsend").unwrap();
    }
    let out = nsupdate.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("REFUSED"), "{text}");
    drop((mx, dmn, named));
}

/// A provider HTTP API (built with `--features providers`), tested against the one such API
/// at hand: pebble-challtestsrv's. The policy and TLS-RPT records go in through the API, the
/// change counts as served when the provider's nameserver answers it, and Pebble validates
/// dns-01 against the challenge the API received.
#[cfg(feature = "providers")]
#[test]
fn a_provider_api_takes_the_managed_records_and_dns01_challenges() {
    use crate::pebble::ChallDns;
    let chall = ChallDns::start();
    let p = Project::new(&[DomainSpec {
        name: "example.com",
        mx: &[MX],
        policy: "mode = \"testing\"\nmax_age = 86400\n",
    }]);
    p.append_config(&format!(
        "[domain.push]\nprovider = \"pebble-challtestsrv\"\napi_url = \"{}\"\nnameservers = [\"{}\"]\n",
        chall.mgmt, chall.addr
    ));
    let pebble = Pebble::start(PebbleOptions::for_project(&p, chall.addr));
    let cfg = fs::read_to_string(p.config()).unwrap();
    let acme = format!(
        "[acme]\ndirectory = \"{}\"\nca_file = \"{}\"\nchallenge = \"dns-01\"\nretry_initial = 1\nretry_max = 4\n",
        pebble.directory(),
        pebble.api_ca().display()
    );
    fs::write(
        p.config(),
        cfg.replace("[acme]\ndirectory = \"local\"\n", &acme),
    )
    .unwrap();
    let out = mxguard(&["check-config", "-c", &p.config_str()]);
    assert!(out.status.success(), "{out:?}");
    let d = p.start();
    let txt = |name: &str| {
        run(Command::new(dig()).args([
            "@127.0.0.1",
            "-p",
            &chall.addr.port().to_string(),
            "+short",
            name,
            "TXT",
        ]))
        .1
    };
    wait_for(
        "the policy id at the provider",
        Duration::from_secs(30),
        || {
            txt("_mta-sts.example.com")
                .contains("v=STSv1; id=")
                .then_some(())
        },
    );
    assert!(txt("_smtp._tls.example.com").contains("v=TLSRPTv1"));
    // The policy host's certificate by dns-01 through the provider.
    let cert = p.path("state/certs/mta-sts.example.com/chain.pem");
    wait_for(
        "a certificate by dns-01 through the API",
        Duration::from_secs(90),
        || cert.exists().then_some(()),
    );
    let issuer = Command::new("openssl")
        .args(["x509", "-noout", "-issuer", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&issuer.stdout).contains("Pebble"));
    let out = mxguard(&["status", "-c", &p.config_str()]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("zone example.com (pushed through the pebble-challtestsrv API)"),
        "{out:?}"
    );
    drop((d, pebble, chall));
}

/// PowerDNS Authoritative (Debian's pdns-server with the SQLite backend), signing its zone
/// itself, with its HTTP API on. It also answers on 127.0.0.3:53, the address of the zone's
/// NS name (`ns1.example.com.`).
/// Where PowerDNS answers as the zone's NS name (port 53: what NS addresses are asked at).
#[cfg(feature = "providers")]
const NS_ADDR: &str = "127.0.0.3";

#[cfg(feature = "providers")]
struct PowerDns {
    dns: u16,
    api: u16,
    dir: tempfile::TempDir,
    _proc: Proc,
}

#[cfg(feature = "providers")]
impl PowerDns {
    const KEY: &'static str = "mxguard-test-api-key";

    fn start() -> PowerDns {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let schema =
            fs::read_to_string("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")
                .expect("install the Debian package pdns-backend-sqlite3");
        rusqlite::Connection::open(dir.path().join("pdns.db"))
            .unwrap()
            .execute_batch(&schema)
            .unwrap();
        let (dns, api) = (free_port(), free_port());
        fs::write(
            dir.path().join("pdns.conf"),
            format!(
                "launch=gsqlite3\ngsqlite3-database={d}/pdns.db\ngsqlite3-dnssec=yes\nlocal-address=127.0.0.1:{dns},{NS_ADDR}:53\napi=yes\napi-key={}\nwebserver=yes\nwebserver-address=127.0.0.1\nwebserver-port={api}\nwebserver-allow-from=127.0.0.0/8\nsocket-dir={d}\nguardian=no\ndaemon=no\ndisable-syslog=yes\nloglevel=4\n",
                Self::KEY
            ),
        )
        .unwrap();
        let child = Command::new(tool("pdns_server", "pdns-server"))
            .arg(format!("--config-dir={d}"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("pdns.log")).unwrap())
            .spawn()
            .unwrap();
        let p = PowerDns {
            dns,
            api,
            dir,
            _proc: Proc(child),
        };
        // The zone, signed by PowerDNS, with records mxguard does not manage.
        let body = r#"{"name":"example.com.","kind":"Native","dnssec":true,"nameservers":["ns1.example.com."],"rrsets":[
            {"name":"ns1.example.com.","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"127.0.0.3","disabled":false}]},
            {"name":"mx1.example.com.","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"127.0.0.1","disabled":false}]},
            {"name":"mta-sts.example.com.","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"127.0.0.1","disabled":false}]},
            {"name":"www.example.com.","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"192.0.2.80","disabled":false}]},
            {"name":"example.com.","type":"MX","ttl":300,"changetype":"REPLACE","records":[{"content":"10 mx1.example.com.","disabled":false}]}]}"#;
        wait_for("the PowerDNS API", Duration::from_secs(20), || {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
                .args(["-H", &format!("X-API-Key: {}", Self::KEY)])
                .args(["-H", "Content-Type: application/json", "--data", body])
                .arg(format!(
                    "http://127.0.0.1:{}/api/v1/servers/localhost/zones",
                    p.api
                ))
                .output()
                .unwrap();
            (String::from_utf8_lossy(&out.stdout) == "201").then_some(())
        });
        p
    }

    fn dig(&self, args: &[&str]) -> String {
        run(Command::new(dig())
            .args([
                "@127.0.0.1",
                "-p",
                &self.dns.to_string(),
                "+dnssec",
                "+norec",
                "+time=2",
                "+tries=1",
            ])
            .args(args))
        .1
    }

    /// The DS of the zone's KSK (unbound's trust anchor).
    fn ds(&self) -> String {
        ksk_ds(
            "example.com",
            &self.dig(&["+short", "example.com", "DNSKEY"]),
            self.dir.path(),
        )
    }
}

/// PowerDNS as the domain's DNS, through its own HTTP API: the policy, TLS-RPT and TLSA records
/// go in, PowerDNS signs them, a strict unbound validates them, nothing else changes; a wrong
/// API key is refused and shown, and the right one again delivers the pending change.
#[cfg(feature = "providers")]
#[test]
fn a_powerdns_server_takes_the_managed_records_through_its_api() {
    use std::os::unix::fs::PermissionsExt;
    let pdns = PowerDns::start();
    // No nameservers configured: mxguard finds them (the zone's NS RRset, ns1 → 127.0.0.3)
    // through this resolver.
    let unbound = Unbound::start(pdns.dns, &pdns.ds());
    let p = Project::new(&[DomainSpec {
        name: "example.com",
        mx: &[MX],
        policy: "mode = \"testing\"\nmax_age = 86400\n",
    }]);
    let token = p.path("pdns.key");
    fs::write(&token, format!("{}\n", PowerDns::KEY)).unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let mta = p.path("mta");
    p.append_config(&format!(
        "[records]\ntlsa_ttl = 1\nttl = 1\n\n[rollover]\nmin_hold = \"3s\"\npoll = \"1s\"\n\n\
         [[mx]]\nhost = \"{MX}\"\ncert_file = \"{m}/mx1.crt\"\nkey_file = \"{m}/mx1.key\"\nverify = \"127.0.0.1:{v}\"\n\n\
         [domain.push]\nprovider = \"powerdns\"\napi_url = \"http://127.0.0.1:{a}\"\ntoken_file = \"{t}\"\nresolver = \"127.0.0.1:{r}\"\n",
        m = mta.display(),
        v = free_port(),
        a = pdns.api,
        t = token.display(),
        r = unbound.port
    ));
    let out = mxguard(&["check-config", "-c", &p.config_str()]);
    assert!(out.status.success(), "{out:?}");
    let d = p.start();
    wait_for(
        "the policy id and TLSA records at PowerDNS, signed",
        Duration::from_secs(40),
        || {
            let id = pdns.dig(&["_mta-sts.example.com", "TXT"]);
            let tlsa = pdns.dig(&[&format!("_25._tcp.{MX}"), "TLSA"]);
            (id.contains("v=STSv1; id=")
                && id.contains("RRSIG")
                && tlsa.matches("\tTLSA\t3 1 1 ").count() == 2
                && tlsa.contains("RRSIG"))
            .then_some(())
        },
    );
    assert!(
        pdns.dig(&["_smtp._tls.example.com", "TXT"])
            .contains("v=TLSRPTv1; rua=mailto:tlsrpt@example.com")
    );
    assert!(
        pdns.dig(&["+short", "www.example.com", "A"])
            .contains("192.0.2.80")
    );
    let out = unbound.dig(&[&format!("_25._tcp.{MX}"), "TLSA"]);
    assert!(
        out.contains("status: NOERROR") && flags(&out).contains(" ad"),
        "{out}"
    );
    let out = unbound.dig(&["_mta-sts.example.com", "TXT"]);
    assert!(
        flags(&out).contains(" ad") && out.contains("v=STSv1"),
        "{out}"
    );
    let text = wait_for("status in sync", Duration::from_secs(30), || {
        let out = mxguard(&["status", "-c", &p.config_str()]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    let ns_line = format!("  nameserver {NS_ADDR}:53: serial ");
    for part in [
        "zone example.com (pushed through the powerdns API)",
        ns_line.as_str(),
        "  _mta-sts.example.com. TXT: 1 record(s), signed",
        "  _25._tcp.mx1.example.com. TLSA: 2 record(s), signed",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }

    // A wrong API key: refused, shown by status; the records stay as they were.
    let id_before = pdns.dig(&["+short", "_mta-sts.example.com", "TXT"]);
    fs::write(&token, "wrong-key\n").unwrap();
    fs::write(
        p.path("policies/example.com.toml"),
        "mode = \"enforce\"\nmax_age = 86400\n",
    )
    .unwrap();
    d.reload();
    let text = wait_for(
        "status to show the refusal",
        Duration::from_secs(30),
        || {
            let out = mxguard(&["status", "-c", &p.config_str()]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (out.status.code() == Some(1) && text.contains("  push failing: ")).then_some(text)
        },
    );
    assert!(text.contains("powerdns API: "), "{text}");
    assert_eq!(
        pdns.dig(&["+short", "_mta-sts.example.com", "TXT"]),
        id_before
    );
    // The right key again: the pending change goes through.
    fs::write(&token, format!("{}\n", PowerDns::KEY)).unwrap();
    d.reload();
    wait_for(
        "the new policy id at PowerDNS",
        Duration::from_secs(40),
        || (pdns.dig(&["+short", "_mta-sts.example.com", "TXT"]) != id_before).then_some(()),
    );
    drop((d, unbound, pdns));
}
