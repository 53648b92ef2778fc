//! DNSSEC key rolls against a real parent: knotd serves (and signs) `test.` with the child's
//! DS, a strictly validating unbound is anchored at `test.`, and a "registrar" copies the
//! child's CDS into the parent by RFC 2136. An observer queries the child through unbound
//! every 100 ms during a CSK roll and an algorithm roll, with mxguard killed (SIGKILL) in
//! every phase of both, then during a roll that `dnssec.key_lifetime` starts: not one
//! SERVFAIL.

use std::fs;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::dns::{Proc, Unbound, dig, ksk_ds, run, tool};
use crate::harness::{Daemon, DomainSpec, Project, free_port, mxguard, wait_for};

const ZONE: &str = "example.test";
/// Where the parent's NS name points: port 53, as a resolver finds it (`parent_resolver`).
const PARENT_NS: &str = "127.0.0.2";

/// knotd serving `test.` (signed by knot) with the delegation to `example.test.` and
/// accepting updates from loopback (the registrar).
struct Parent {
    port: u16,
    dir: tempfile::TempDir,
    _proc: Proc,
}

impl Parent {
    fn start(child_ds: &str) -> Parent {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        fs::create_dir_all(dir.path().join("zones")).unwrap();
        fs::create_dir_all(dir.path().join("db")).unwrap();
        fs::write(
            dir.path().join("zones/test.zone"),
            format!(
                "$ORIGIN test.\n$TTL 2\n@ SOA ns hostmaster 1 7200 3600 1209600 2\n@ NS ns\nns A {PARENT_NS}\nexample NS ns1.example\nns1.example A 127.0.0.1\nexample DS {child_ds}\n"
            ),
        )
        .unwrap();
        let conf = format!(
            "server:\n    listen: [127.0.0.1@{port}, {PARENT_NS}@53]\n    rundir: \"{d}\"\nlog:\n  - target: stderr\n    any: info\ndatabase:\n    storage: \"{d}/db\"\nacl:\n  - id: registrar\n    address: 127.0.0.1\n    action: update\ntemplate:\n  - id: default\n    storage: \"{d}/zones\"\n    file: \"%s.zone\"\n    dnssec-signing: on\n    zonefile-sync: -1\n    journal-content: all\nzone:\n  - domain: test.\n    acl: registrar\n"
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
        let p = Parent {
            port,
            dir,
            _proc: Proc(child),
        };
        wait_for("knot to serve test.", Duration::from_secs(20), || {
            p.dig(&["+short", "test.", "DNSKEY"])
                .lines()
                .any(|l| l.starts_with("257 3 "))
                .then_some(())
        });
        p
    }

    fn dig(&self, args: &[&str]) -> String {
        run(Command::new(dig())
            .args([
                "@127.0.0.1",
                "-p",
                &self.port.to_string(),
                "+norec",
                "+time=2",
                "+tries=1",
            ])
            .args(args))
        .1
    }

    /// The DS of knot's KSK for `test.` (unbound's trust anchor).
    fn anchor(&self) -> String {
        ksk_ds(
            "test",
            &self.dig(&["+short", "test.", "DNSKEY"]),
            self.dir.path(),
        )
    }

    /// The child's DS as the parent serves it (`tag alg type HEX`, sorted).
    fn ds(&self) -> Vec<String> {
        Parent::ds_at(self.port)
    }

    fn ds_at(port: u16) -> Vec<String> {
        ds_lines(
            &run(Command::new(dig()).args([
                "@127.0.0.1",
                "-p",
                &port.to_string(),
                "+norec",
                "+short",
                "+time=2",
                "+tries=1",
                &format!("{ZONE}."),
                "DS",
            ]))
            .1,
        )
    }

    /// Replaces the child's DS set (as a registrar that reads CDS does).
    fn set_ds_at(port: u16, ds: &[String]) {
        let mut script = format!("server 127.0.0.1 {port}\nzone test.\nupdate delete {ZONE}. DS\n");
        for d in ds {
            script.push_str(&format!("update add {ZONE}. 2 DS {d}\n"));
        }
        script.push_str("send\n");
        let mut child = Command::new(tool("nsupdate", "bind9-dnsutils"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "nsupdate: {out:?}");
    }
}

/// DS or CDS records from `dig +short` as `tag alg type HEX` (dig splits long digests),
/// sorted.
fn ds_lines(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            (t.len() >= 4 && t[0].parse::<u16>().is_ok()).then(|| {
                format!(
                    "{} {} {} {}",
                    t[0],
                    t[1],
                    t[2],
                    t[3..].concat().to_uppercase()
                )
            })
        })
        .collect();
    v.sort();
    v
}

fn ask(port: u16, name: &str, rtype: &str) -> String {
    run(Command::new(dig())
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+dnssec",
            "+time=3",
            "+tries=1",
            name,
            rtype,
        ])
        .stdin(Stdio::null()))
    .1
}

/// The `phase` of the zone's key state ("" before there is one).
fn phase(p: &Project) -> String {
    fs::read_to_string(p.path(&format!("state/keys/{ZONE}.roll.json")))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["phase"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The key roll lines of every daemon log of the project.
fn roll_log(p: &Project) -> String {
    let mut logs: Vec<_> = fs::read_dir(p.path(""))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|f| f.to_string_lossy().ends_with(".log"))
        .collect();
    logs.sort_by_key(|f| fs::metadata(f).and_then(|m| m.modified()).ok());
    let mut out = String::new();
    for f in logs {
        for l in fs::read_to_string(&f).unwrap_or_default().lines() {
            if l.contains("dnssec") || l.contains("mxguard running") {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// Kills mxguard once in each phase of a roll (waiting for each), restarting it at once;
/// returns when the roll is back to stable with one key of `alg` (its DNSKEY algorithm).
fn roll_with_kills(p: &Project, d: &mut Daemon, alg: &str, registrar: &AtomicBool) {
    let mut killed = Vec::new();
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "roll did not end; killed in {killed:?}; log:\n{}",
            roll_log(p)
        );
        let ph = phase(p);
        let state =
            fs::read_to_string(p.path(&format!("state/keys/{ZONE}.roll.json"))).unwrap_or_default();
        if ph == "stable" && killed.len() == 5 {
            let v: serde_json::Value = serde_json::from_str(&state).unwrap();
            let keys = v["keys"].as_array().unwrap();
            assert_eq!(keys.len(), 1, "{state}\n{}", roll_log(p));
            assert_eq!(keys[0]["algorithm"], alg, "{state}\n{}", roll_log(p));
            return;
        }
        if ph == "swap-ds" && !registrar.load(Ordering::SeqCst) {
            // The registrar does not act yet: the roll waits, and `status` says what to do.
            wait_for("status to ask for the DS", Duration::from_secs(30), || {
                let out = mxguard(&["status", "-c", &p.config_str()]);
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                (text.contains("give the registrar this DS (unless it reads CDS); waiting since")
                    && text.contains("key roll phase swap-ds")
                    && text.contains("waiting: waiting for the parent to serve the new key's DS")
                    && out.status.code() == Some(1))
                .then_some(text)
            });
            std::thread::sleep(Duration::from_secs(3));
            assert_eq!(phase(p), "swap-ds", "moved on without the parent's DS");
            registrar.store(true, Ordering::SeqCst);
        }
        if ["pre-sign", "publish", "swap-ds", "withdraw", "unsign"].contains(&ph.as_str())
            && !killed.contains(&ph)
        {
            d.signal("KILL");
            let _ = d.child.wait();
            eprintln!("killed mxguard in phase {ph}");
            *d = Daemon::start(p);
            killed.push(ph);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn csk_and_algorithm_rolls_wait_for_the_parent_and_never_servfail() {
    let p = Project::new(&[DomainSpec {
        name: ZONE,
        mx: &["mx1.example.test"],
        policy: "mode = \"testing\"\nmax_age = 86400\n",
    }]);
    // Short TTLs so that every wait of the roll takes seconds.
    fs::write(
        p.path(&format!("zones/{ZONE}.zone")),
        format!(
            "$ORIGIN {ZONE}.\n$TTL 2\n@ SOA ns1 hostmaster 1 7200 3600 1209600 2\n@ NS ns1\nns1 A 127.0.0.1\nmta-sts A 127.0.0.1\n@ MX 10 mx1\nmx1 A 127.0.0.1\nwww A 192.0.2.80\n"
        ),
    )
    .unwrap();
    let out = mxguard(&["ds", "-c", &p.config_str()]);
    assert!(out.status.success(), "{out:?}");
    let ds_text = String::from_utf8_lossy(&out.stdout).into_owned();
    let first_ds = ds_text
        .lines()
        .find(|l| l.contains(" IN DS "))
        .unwrap()
        .split(" IN DS ")
        .nth(1)
        .unwrap()
        .to_string();
    let parent = Parent::start(&first_ds);
    // Without the parent configured, a roll is refused and says why.
    let out = mxguard(&["dnssec-roll", "-c", &p.config_str(), ZONE]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dnssec.parent_nameservers"),
        "{out:?}"
    );
    p.append_config(&format!(
        "[dnssec]\ndnskey_ttl = 2\npropagation_delay = \"1s\"\nparent_nameservers = [\"127.0.0.1:{}\"]\n\n[records]\nttl = 1\n\n[rollover]\npoll = \"1s\"\n",
        parent.port
    ));
    let mut d = p.start();
    // unbound validating strictly from `test.` down, stubbed to knot and mxguard.
    let unbound = Unbound::lab(
        &parent.anchor(),
        &[("test.", parent.port), (&format!("{ZONE}."), p.dns)],
        true,
    );
    let uport = unbound.port;
    wait_for(
        "unbound to validate the child",
        Duration::from_secs(30),
        || {
            let a = ask(uport, &format!("www.{ZONE}"), "A");
            (a.contains("status: NOERROR") && a.contains(" ad")).then_some(())
        },
    );
    let out = mxguard(&["status", "-c", &p.config_str()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("(published,signing,ds)"), "{text}");
    assert!(
        text.contains(&format!("parent DS: {}", first_ds.to_uppercase())),
        "{text}"
    );

    // The observer: a name, a non-existent name (denial proofs) and the DNSKEY, every 100 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let observer = {
        let (stop, total, failures) = (stop.clone(), total.clone(), failures.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let (name, rtype) = match i % 3 {
                    0 => (format!("www.{ZONE}"), "A"),
                    1 => (format!("nx{i}.{ZONE}"), "A"),
                    _ => (ZONE.to_string(), "DNSKEY"),
                };
                let a = ask(uport, &name, rtype);
                total.fetch_add(1, Ordering::SeqCst);
                if !a.contains("status: NOERROR") && !a.contains("status: NXDOMAIN") {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{name} {rtype}: {a}"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // The registrar: copies the child's CDS into the parent while allowed to.
    let registrar = Arc::new(AtomicBool::new(false));
    let registrar_thread = {
        let (stop, registrar, dns) = (stop.clone(), registrar.clone(), p.dns);
        let pport = parent.port;
        std::thread::spawn(move || {
            let parent = ParentHandle { port: pport };
            while !stop.load(Ordering::SeqCst) {
                if registrar.load(Ordering::SeqCst) {
                    let cds = cds_of(dns);
                    if !cds.is_empty() && cds != parent.ds() {
                        parent.set_ds(&cds);
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };

    // 1. A CSK roll (same algorithm), asked for by the operator.
    let out = mxguard(&["dnssec-roll", "-c", &p.config_str(), ZONE]);
    assert!(out.status.success(), "{out:?}");
    roll_with_kills(&p, &mut d, "ecdsap256sha256", &registrar);
    // 2. An algorithm roll to Ed25519 (the registrar acts at once this time), with the
    // parent's servers found through unbound (`test. NS` → ns.test → 127.0.0.2, port 53).
    let cfg = fs::read_to_string(p.config()).unwrap().replace(
        &format!("parent_nameservers = [\"127.0.0.1:{}\"]", parent.port),
        &format!("parent_resolver = \"127.0.0.1:{uport}\""),
    );
    assert!(cfg.contains("parent_resolver"));
    fs::write(p.config(), cfg).unwrap();
    d.reload();
    let out = mxguard(&["status", "-c", &p.config_str()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("parent DS: "), "{text}");
    assert!(!text.contains("parent DS: unknown"), "{text}");
    let out = mxguard(&[
        "dnssec-roll",
        "-c",
        &p.config_str(),
        ZONE,
        "--algorithm",
        "ed25519",
    ]);
    assert!(out.status.success(), "{out:?}");
    roll_with_kills(&p, &mut d, "ed25519", &registrar);
    // 3. A roll by `dnssec.key_lifetime`: mxguard stops, the key in use is made 8 days old
    // (as if that time had passed), and with key_lifetime = "7d" the restarted daemon rolls
    // it by itself, keeping its algorithm, while the observer goes on asking.
    d.signal("TERM");
    let _ = d.child.wait();
    let state_file = p.path(&format!("state/keys/{ZONE}.roll.json"));
    let mut v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&state_file).unwrap()).unwrap();
    let old_key = v["keys"][0]["file"].as_str().unwrap().to_string();
    let created = v["keys"][0]["created"].as_u64().unwrap();
    v["keys"][0]["created"] = (created - 8 * 86_400).into();
    fs::write(&state_file, serde_json::to_vec(&v).unwrap()).unwrap();
    let cfg = fs::read_to_string(p.config())
        .unwrap()
        .replace("[dnssec]\n", "[dnssec]\nkey_lifetime = \"7d\"\n");
    assert!(cfg.contains("key_lifetime"));
    fs::write(p.config(), cfg).unwrap();
    d = Daemon::start(&p);
    wait_for(
        "the lifetime roll to start",
        Duration::from_secs(30),
        || (phase(&p) != "stable").then_some(()),
    );
    let new_key = wait_for(
        "the lifetime roll to end with a new key",
        Duration::from_secs(240),
        || {
            let v: serde_json::Value =
                serde_json::from_str(&fs::read_to_string(&state_file).ok()?).ok()?;
            let keys = v["keys"].as_array()?;
            (v["phase"] == "stable" && keys.len() == 1 && keys[0]["file"] != old_key.as_str())
                .then(|| keys[0].clone())
        },
    );
    assert_eq!(new_key["algorithm"], "ed25519", "{new_key}");
    // This daemon started the roll by itself (no request file, no `dnssec-roll`).
    assert!(
        d.log_text()
            .contains("dnssec key roll starts with a new key"),
        "{}",
        d.log_text()
    );
    // Let caches run through the last change, then stop observing.
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::SeqCst);
    observer.join().unwrap();
    registrar_thread.join().unwrap();

    let failures = failures.lock().unwrap();
    let total = total.load(Ordering::SeqCst);
    assert!(total > 100, "only {total} queries");
    assert!(
        failures.is_empty(),
        "{} of {total} answers were not NOERROR/NXDOMAIN:\n{}",
        failures.len(),
        failures.join("\n---\n")
    );
    // The end state: one Ed25519 key (algorithm 15) published, in CDS and at the parent;
    // the old key files are gone; unbound validates.
    let dnskeys = ask(p.dns, ZONE, "DNSKEY");
    let keys: Vec<&str> = dnskeys
        .lines()
        .filter(|l| l.contains("\tDNSKEY\t"))
        .collect();
    assert_eq!(keys.len(), 1, "{dnskeys}");
    assert!(keys[0].contains("DNSKEY\t257 3 15 "), "{dnskeys}");
    let parent_ds = parent.ds();
    assert_eq!(parent_ds.len(), 1);
    assert!(
        parent_ds[0].split(' ').nth(1) == Some("15"),
        "{parent_ds:?}"
    );
    let key_files: Vec<String> = fs::read_dir(p.path("state/keys"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pk8"))
        .collect();
    assert_eq!(key_files.len(), 1, "{key_files:?}");
    assert!(key_files[0].contains(".ed25519."), "{key_files:?}");
    let a = ask(uport, &format!("www.{ZONE}"), "A");
    assert!(a.contains("status: NOERROR") && a.contains(" ad"), "{a}");
    let ds_now =
        String::from_utf8_lossy(&mxguard(&["ds", "-c", &p.config_str()]).stdout).into_owned();
    assert!(
        ds_now.contains(&format!("IN DS {}", parent_ds[0])),
        "{ds_now}\n{parent_ds:?}"
    );
    drop(d);
}

/// The parent's DS and updates, from the registrar thread.
struct ParentHandle {
    port: u16,
}

impl ParentHandle {
    fn ds(&self) -> Vec<String> {
        Parent::ds_at(self.port)
    }

    fn set_ds(&self, ds: &[String]) {
        Parent::set_ds_at(self.port, ds)
    }
}

/// The CDS mxguard serves (`tag alg type HEX`, sorted).
fn cds_of(port: u16) -> Vec<String> {
    ds_lines(
        &run(Command::new(dig()).args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+norec",
            "+short",
            "+time=2",
            "+tries=1",
            &format!("{ZONE}."),
            "CDS",
        ]))
        .1,
    )
}
