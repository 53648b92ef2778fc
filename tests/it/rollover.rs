//! DANE TLSA rollover end to end: the daemon, a stand-in MX that serves STARTTLS from the
//! deployed files, a knotd secondary, a strict unbound validator, and an observer that checks
//! at every sample that the key the MX presents is in the validated TLSA RRset.

use std::fs;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::dns::{Knot, Unbound, dig, run};
use crate::harness::{Daemon, DomainSpec, Project, StandInMx, free_port, mxguard, wait_for};
use crate::pebble::{Pebble, PebbleOptions};

const MX: &str = "mx1.example.com";

fn project(mx_port: u16, secondary_port: Option<u16>, reload: &str) -> Project {
    let p = Project::new(&[DomainSpec {
        name: "example.com",
        mx: &[MX],
        policy: "mode = \"enforce\"\nmax_age = 604800\n",
    }]);
    let mta = p.path("mta");
    let mut extra = format!(
        "[records]\ntlsa_ttl = 1\n\n[rollover]\nkey_age = \"30d\"\nmin_hold = \"3s\"\npoll = \"1s\"\n\n\
         [[mx]]\nhost = \"{MX}\"\ncert_file = \"{m}/mx1.crt\"\nkey_file = \"{m}/mx1.key\"\nverify = \"127.0.0.1:{mx_port}\"\nreload = {reload}\n",
        m = mta.display()
    );
    if let Some(port) = secondary_port {
        extra.push_str(&format!(
            "\n[[secondary]]\nname = \"knot\"\naddress = \"127.0.0.1:{port}\"\n"
        ));
    }
    p.append_config(&extra);
    p
}

fn roll_state(p: &Project) -> Option<serde_json::Value> {
    let b = fs::read(p.path(&format!("state/rollover/{MX}.json"))).ok()?;
    serde_json::from_slice(&b).ok()
}

fn phase(p: &Project) -> String {
    roll_state(p)
        .and_then(|v| v["phase"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn current_key(p: &Project) -> String {
    roll_state(p)
        .and_then(|v| v["current"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// TLSA `3 1 1` digests (lowercase hex) in a dig answer.
fn tlsa_set(answer: &str) -> Vec<String> {
    answer
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains("TLSA") && !l.contains("RRSIG"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let i = f.iter().position(|x| *x == "TLSA")?;
            (f.get(i + 1..i + 4)? == ["3", "1", "1"])
                .then(|| f[i + 4..].concat().to_ascii_lowercase())
        })
        .collect()
}

fn dig_tlsa(port: u16) -> Vec<String> {
    let mut cmd = Command::new(dig());
    cmd.args([
        "@127.0.0.1",
        "-p",
        &port.to_string(),
        "+norec",
        "+time=1",
        "+tries=1",
        // Same bytes but for the ID on every poll, so they may be served from mxguard's
        // response cache, which must follow each TLSA change.
        "+nocookie",
        &format!("_25._tcp.{MX}."),
        "TLSA",
    ]);
    tlsa_set(&run(&mut cmd).1)
}

/// What the MX presents right now (3 1 1 hex), via the library's STARTTLS check.
fn presented(addr: SocketAddr) -> Option<String> {
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

/// openssl as a DANE-validating sender: verifies the MX against the given `3 1 1` records.
fn openssl_dane_ok(addr: SocketAddr, records: &[String]) -> bool {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-brief",
        "-starttls",
        "smtp",
        "-connect",
        &addr.to_string(),
        "-dane_tlsa_domain",
        MX,
        "-verify_return_error",
    ]);
    for r in records {
        cmd.args(["-dane_tlsa_rrdata", &format!("3 1 1 {r}")]);
    }
    cmd.stdin(std::process::Stdio::null());
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.contains("Verification: OK") && text.contains("Verified peername")
}

/// Samples every ~100 ms until stopped; panics (in `check`) if the invariant breaks.
pub(crate) struct Observer {
    stop: Arc<AtomicBool>,
    samples: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Observer {
    pub(crate) fn start(mx: SocketAddr, secondary: u16, unbound: u16) -> Observer {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(AtomicUsize::new(0));
        let (stop2, samples2) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop2.load(Ordering::Relaxed) {
                // Records first, then the key: a record must already be public when its key
                // is presented.
                let via_secondary = dig_tlsa(secondary);
                let validated = {
                    let mut cmd = Command::new(dig());
                    cmd.args([
                        "@127.0.0.1",
                        "-p",
                        &unbound.to_string(),
                        "+dnssec",
                        "+time=2",
                        "+tries=1",
                        &format!("_25._tcp.{MX}."),
                        "TLSA",
                    ]);
                    let out = run(&mut cmd).1;
                    if !out.contains("status: NOERROR") || !out.contains(" ad") {
                        return Err(format!("sample {n}: TLSA not validated:\n{out}"));
                    }
                    tlsa_set(&out)
                };
                let Some(key) = presented(mx) else {
                    // The MX restarting its listener is not a DANE failure.
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                if !via_secondary.contains(&key) {
                    return Err(format!(
                        "sample {n}: live key {key} not in the secondary's TLSA {via_secondary:?}"
                    ));
                }
                if !validated.contains(&key) {
                    return Err(format!(
                        "sample {n}: live key {key} not in the validated TLSA {validated:?}"
                    ));
                }
                // openssl connects again: a deployment in between may present a newer key
                // than the one just checked (its record is checked at the next sample).
                if n.is_multiple_of(10)
                    && !openssl_dane_ok(mx, &validated)
                    && presented(mx).as_deref() == Some(key.as_str())
                {
                    return Err(format!(
                        "sample {n}: openssl DANE verification failed with {validated:?}"
                    ));
                }
                n += 1;
                samples2.store(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        });
        Observer {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// Stops the observer and returns how many samples it took; panics on a broken invariant.
    pub(crate) fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let r = self.thread.take().unwrap().join().unwrap();
        if let Err(e) = r {
            panic!("DANE invariant broken: {e}");
        }
        self.samples.load(Ordering::Relaxed)
    }

    fn alive(&self) -> bool {
        !self.thread.as_ref().unwrap().is_finished()
    }
}

fn ds_line(p: &Project) -> String {
    let out = mxguard(&["ds", "-c", &p.config_str(), "example.com"]);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find(|l| l.contains(" IN DS "))
        .unwrap()
        .to_string()
}

struct Setup {
    p: Project,
    mx: StandInMx,
    kport: u16,
    _knot: Knot,
    unbound: Unbound,
    _pebble: Option<Pebble>,
}

/// With `pebble`, certificates come from a real Pebble by dns-01 through the daemon's own
/// zone (each challenge waits until the knot secondary serves it); else from the local CA.
fn setup(reload: &str, starttls_delay: Duration, pebble: bool) -> (Setup, Daemon) {
    let kport = free_port();
    // The MX port must be known before the config is written.
    let mx_port_probe = free_port();
    let p = project(mx_port_probe, Some(kport), reload);
    let pebble = pebble.then(|| {
        let pb = Pebble::start(PebbleOptions::for_project(
            &p,
            format!("127.0.0.1:{}", p.dns).parse().unwrap(),
        ));
        let cfg = fs::read_to_string(p.config()).unwrap();
        let acme = format!(
            "[acme]\ndirectory = \"{}\"\nca_file = \"{}\"\nchallenge = \"dns-01\"\nretry_initial = 1\nretry_max = 4\n",
            pb.directory(),
            pb.api_ca().display()
        );
        let replaced = cfg.replace("[acme]\ndirectory = \"local\"\n", &acme);
        assert_ne!(replaced, cfg, "harness config layout changed");
        fs::write(p.config(), replaced).unwrap();
        pb
    });
    let d = p.start();
    let knot = Knot::start(kport, d.dns, &["example.com."]);
    // The first MX certificate is issued and deployed by the daemon.
    let cert = p.path("mta/mx1.crt");
    let key = p.path("mta/mx1.key");
    wait_for("first MX deployment", Duration::from_secs(90), || {
        (cert.exists() && key.exists()).then_some(())
    });
    let mx = StandInMx::start(cert, key, starttls_delay);
    // Point the daemon's live check at the stand-in.
    let cfg = fs::read_to_string(p.config()).unwrap().replace(
        &format!("127.0.0.1:{mx_port_probe}"),
        &mx.addr().to_string(),
    );
    fs::write(p.config(), cfg).unwrap();
    d.reload();
    let unbound = Unbound::start(kport, &ds_line(&p));
    (
        Setup {
            p,
            mx,
            kport,
            _knot: knot,
            unbound,
            _pebble: pebble,
        },
        d,
    )
}

fn wait_phase(p: &Project, want: &str, timeout: Duration) {
    wait_for(&format!("rollover phase {want}"), timeout, || {
        (phase(p) == want).then_some(())
    });
}

#[test]
fn two_full_rolls_never_leave_the_live_key_unpublished() {
    two_full_rolls(false);
}

#[test]
fn two_full_rolls_with_pebble_dns01_never_leave_the_live_key_unpublished() {
    two_full_rolls(true);
}

fn two_full_rolls(pebble: bool) {
    let (s, d) = setup("[]", Duration::ZERO, pebble);
    let obs = Observer::start(s.mx.addr(), s.kport, s.unbound.port);
    wait_phase(&s.p, "stable", Duration::from_secs(60));
    let first = current_key(&s.p);
    let mut keys = vec![first.clone()];
    for round in 0..2 {
        let out = mxguard(&["rotate", "-c", &s.p.config_str(), MX]);
        assert!(out.status.success(), "{out:?}");
        let before = keys.last().unwrap().clone();
        wait_for(
            &format!("roll {round} to complete"),
            Duration::from_secs(90),
            || {
                let k = current_key(&s.p);
                (k != before && !k.is_empty() && phase(&s.p) == "stable").then_some(k)
            },
        );
        let now = current_key(&s.p);
        assert_eq!(presented(s.mx.addr()).as_deref(), Some(now.as_str()));
        keys.push(now);
        assert!(obs.alive(), "observer stopped early");
    }
    let samples = obs.finish();
    assert!(samples >= 20, "only {samples} observer samples");
    assert_eq!(keys.len(), 3);
    assert_ne!(keys[0], keys[1]);
    assert_ne!(keys[1], keys[2]);
    // `mxguard tlsa` shows the current key and a pre-published next one.
    let out = mxguard(&["tlsa", "-c", &s.p.config_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("3 1 1 {}   ; current", keys[2])),
        "{text}"
    );
    assert!(text.contains("; next"), "{text}");
    // Retired keys do not pile up: the first key is gone, the one retired last is kept for a
    // rollback, beside the current and the next key.
    let dir = s.p.path(&format!("state/mx-keys/{MX}"));
    let files: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!files.contains(&format!("{}.pem", keys[0])), "{files:?}");
    assert!(files.contains(&format!("{}.pem", keys[1])), "{files:?}");
    assert!(files.contains(&format!("{}.pem", keys[2])), "{files:?}");
    assert_eq!(files.len(), 3, "{files:?}");
    if let Some(pebble) = &s._pebble {
        // With Pebble's certificates, the posture a sender sees after two rolls is good:
        // `mxguard check` through the validating unbound, with Pebble's root for WebPKI.
        let anchor = s.p.path("anchor.ds");
        fs::write(&anchor, format!("{}\n", ds_line(&s.p))).unwrap();
        let resolver = format!("127.0.0.1:{}", s.unbound.port);
        let out = mxguard(&[
            "check",
            "-c",
            &s.p.config_str(),
            "--resolver",
            &resolver,
            "--trust-anchor",
            anchor.to_str().unwrap(),
            "--ca-file",
            pebble.root_pem().to_str().unwrap(),
            "--json",
        ]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "{doc:#}");
        let dom = &doc["domains"][0];
        assert_eq!(
            (dom["dane"].as_str(), dom["mta_sts"].as_str()),
            (Some("ok"), Some("ok")),
            "{doc:#}"
        );
        assert!(
            dom["mx"][0]["certificate"]["issuer"]
                .as_str()
                .unwrap()
                .contains("Pebble"),
            "{doc:#}"
        );
    }
    drop(d);
}

#[test]
fn sigkill_in_every_phase_still_completes_the_roll() {
    // A slow reload command and a slow STARTTLS make the deploying and verifying phases
    // long enough to be caught.
    // Certificates from Pebble (dns-01 through the own zone) make the issuing phase last long
    // enough to be caught too.
    let (s, mut d) = setup("[\"sleep\", \"1\"]", Duration::from_millis(1500), true);
    let obs = Observer::start(s.mx.addr(), s.kport, s.unbound.port);
    for target in ["propagating", "stable", "issuing", "deploying", "verifying"] {
        if target != "propagating" {
            wait_phase(&s.p, "stable", Duration::from_secs(60));
        }
        if matches!(target, "issuing" | "deploying" | "verifying") {
            let out = mxguard(&["rotate", "-c", &s.p.config_str(), MX]);
            assert!(out.status.success(), "{out:?}");
        }
        wait_phase(&s.p, target, Duration::from_secs(60));
        d.signal("KILL");
        let _ = d.child.wait();
        drop(d);
        d = s.p.start();
        eprintln!("killed in {target}, restarted");
    }
    // Whatever was interrupted completes.
    let started = Instant::now();
    wait_phase(&s.p, "stable", Duration::from_secs(90));
    let k = current_key(&s.p);
    wait_for(
        "MX to present the current key",
        Duration::from_secs(30),
        || (presented(s.mx.addr()).as_deref() == Some(k.as_str())).then_some(()),
    );
    eprintln!("settled after {:?}", started.elapsed());
    let samples = obs.finish();
    assert!(samples >= 10, "only {samples} samples");
    drop(d);
}

#[test]
fn a_stopped_secondary_holds_the_roll_before_the_switch() {
    let (s, d) = setup("[]", Duration::ZERO, false);
    wait_phase(&s.p, "stable", Duration::from_secs(60));
    let key = current_key(&s.p);
    // Stop the secondary, then ask for a roll.
    let Setup {
        p,
        mx,
        kport,
        _knot,
        unbound,
        _pebble,
    } = s;
    drop(_knot);
    let out = mxguard(&["rotate", "-c", &p.config_str(), MX]);
    assert!(out.status.success());
    // The roll does not start while the secondary cannot confirm it serves the zone.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(phase(&p), "stable");
    assert_eq!(current_key(&p), key);
    assert!(roll_state(&p).unwrap()["requested"].as_bool().unwrap());
    // `tlsa` and the log say which server holds it.
    let out = mxguard(&["tlsa", "-c", &p.config_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("held: secondary") && text.contains("does not serve example.com."),
        "{text}"
    );
    assert!(
        d.log_text()
            .contains("rollover held until every server serves the zone")
    );
    // Back online: it catches up and the roll completes.
    let _knot = Knot::start(kport, d.dns, &["example.com."]);
    wait_for("the roll to complete", Duration::from_secs(90), || {
        (current_key(&p) != key && phase(&p) == "stable").then_some(())
    });
    let out = mxguard(&["tlsa", "-c", &p.config_str()]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("held:"));
    drop((mx, unbound, d));
}

#[test]
fn external_certificate_mode_publishes_its_key_and_flags_an_unannounced_one() {
    let p = Project::new(&[DomainSpec {
        name: "example.com",
        mx: &[MX],
        policy: "mode = \"enforce\"\nmax_age = 604800\n",
    }]);
    // Another tool's certificates: one key now, a pre-announced next key, and a surprise.
    let make = |name: &str| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec![MX.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let path = p.path(name);
        fs::write(&path, cert.pem()).unwrap();
        mxguard::dane::probe::key_id(&rcgen::PublicKeyData::subject_public_key_info(&key))
    };
    let live = make("live.pem");
    let next = make("next.pem");
    let surprise = make("surprise.pem");
    let watched = p.path("certbot-fullchain.pem");
    fs::copy(p.path("live.pem"), &watched).unwrap();
    p.append_config(&format!(
        "[records]\ntlsa_ttl = 1\n[rollover]\nmin_hold = \"2s\"\npoll = \"1s\"\n\n[[mx]]\nhost = \"{MX}\"\nexternal_cert = \"{}\"\nprepublish = [\"{next}\"]\n",
        watched.display()
    ));
    let d = p.start();
    wait_for("live and next published", Duration::from_secs(20), || {
        let set = dig_tlsa(d.dns);
        (set.contains(&live) && set.contains(&next)).then_some(())
    });
    // The other tool renews onto the pre-published key: no alarm, old key retires later.
    fs::copy(p.path("next.pem"), &watched).unwrap();
    wait_for("switch noticed", Duration::from_secs(20), || {
        d.log_text()
            .contains("switched to a pre-published key")
            .then_some(())
    });
    wait_for(
        "old key retired after the hold",
        Duration::from_secs(20),
        || (!dig_tlsa(d.dns).contains(&live)).then_some(()),
    );
    // A key nobody announced: published at once, and flagged loudly.
    fs::copy(p.path("surprise.pem"), &watched).unwrap();
    wait_for(
        "surprise flagged and published",
        Duration::from_secs(20),
        || {
            (d.log_text().contains("was NOT pre-published") && dig_tlsa(d.dns).contains(&surprise))
                .then_some(())
        },
    );
    let out = mxguard(&["tlsa", "-c", &p.config_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("3 1 1 {surprise}   ; live")),
        "{text}"
    );
}

/// The MX already presents another tool's certificate when mxguard takes it over: that key's
/// record is published from mxguard's first zone on, mxguard's certificate is deployed only
/// once its own record is public for the hold time, and the old record goes only after the MX
/// is seen presenting mxguard's key. An observer checks at every sample that the live key is
/// in the validated TLSA RRset.
#[test]
fn an_mx_live_with_another_key_keeps_its_record_until_mxguards_key_is_live() {
    let kport = free_port();
    let probe = free_port();
    let p = project(probe, Some(kport), "[]");
    // The certificate the MTA has before mxguard (say, from another ACME client).
    let old_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let old_cert = rcgen::CertificateParams::new(vec![MX.to_string()])
        .unwrap()
        .self_signed(&old_key)
        .unwrap();
    let old =
        mxguard::dane::probe::key_id(&rcgen::PublicKeyData::subject_public_key_info(&old_key));
    fs::create_dir_all(p.path("mta")).unwrap();
    fs::write(p.path("mta/mx1.crt"), old_cert.pem()).unwrap();
    fs::write(p.path("mta/mx1.key"), old_key.serialize_pem()).unwrap();
    // The MTA serves whatever its files hold, from before mxguard starts.
    let mx = StandInMx::start(p.path("mta/mx1.crt"), p.path("mta/mx1.key"), Duration::ZERO);
    let cfg = fs::read_to_string(p.config())
        .unwrap()
        .replace(&format!("127.0.0.1:{probe}"), &mx.addr().to_string())
        .replace("min_hold = \"3s\"", "min_hold = \"6s\"");
    fs::write(p.config(), cfg).unwrap();
    let d = p.start();
    let _knot = Knot::start(kport, d.dns, &["example.com."]);
    let unbound = Unbound::start(kport, &ds_line(&p));
    wait_for(
        "the old key's record at the secondary",
        Duration::from_secs(30),
        || dig_tlsa(kport).contains(&old).then_some(()),
    );
    let ours = current_key(&p);
    assert_ne!(ours, old);
    let first = dig_tlsa(kport);
    assert!(first.contains(&ours), "{first:?}");
    let published_at = Instant::now();
    let obs = Observer::start(mx.addr(), kport, unbound.port);
    // mxguard's certificate goes live (after its record was public for the 6 s hold), and
    // only then does the old record go.
    wait_for("mxguard's key live", Duration::from_secs(60), || {
        (presented(mx.addr()).as_deref() == Some(ours.as_str())).then_some(())
    });
    assert!(
        published_at.elapsed() >= Duration::from_secs(4),
        "deployed {:?} after its record was published",
        published_at.elapsed()
    );
    wait_for("the old record withdrawn", Duration::from_secs(60), || {
        (!dig_tlsa(kport).contains(&old)).then_some(())
    });
    let samples = obs.finish();
    assert!(samples >= 10, "only {samples} observer samples");
    let log = d.log_text();
    assert!(log.contains("the MX presents another key"), "{log}");
    assert!(log.contains("MX presents mxguard's key"), "{log}");
    // The deployment waited for the hold: the record of mxguard's key was at the secondary
    // before the MX presented it (the observer checked each sample), and the state is clean.
    let st = roll_state(&p).unwrap();
    assert!(st.get("prior").is_none(), "{st}");
    drop((mx, unbound, d));
}
