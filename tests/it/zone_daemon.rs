//! The daemon's own signed zone, as validators, secondaries and the registrar see it.

use std::fs;
use std::process::Command;
use std::time::Duration;

use crate::dns::{Knot, Unbound, assert_validated, dig, run};
use crate::harness::{DomainSpec, Project, free_port, mxguard, wait_for};

const POLICY: &str = "mode = \"enforce\"\nmax_age = 604800\n";

fn project() -> Project {
    let p = Project::new(&[DomainSpec {
        name: "example.com",
        mx: &["mx1.example.com"],
        policy: POLICY,
    }]);
    let dir = p.path("mta");
    p.append_config(&format!(
        "[[mx]]\nhost = \"mx1.example.com\"\ncert_file = \"{d}/mx1.crt\"\nkey_file = \"{d}/mx1.key\"\n",
        d = dir.display()
    ));
    p
}

fn ds_line(p: &Project) -> String {
    let out = mxguard(&["ds", "-c", &p.config_str(), "example.com"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find(|l| l.contains(" IN DS "))
        .unwrap_or_else(|| panic!("no DS in {text}"))
        .to_string()
}

/// `dig @daemon` answer section lines (no DNSSEC).
fn ask(port: u16, name: &str, rtype: &str) -> String {
    let mut cmd = Command::new(dig());
    cmd.args([
        "@127.0.0.1",
        "-p",
        &port.to_string(),
        "+short",
        "+norec",
        // Repeated questions are then the same bytes but for the ID, so they may be answered
        // from mxguard's response cache, which must follow every change below.
        "+nocookie",
        name,
        rtype,
    ]);
    run(&mut cmd).1
}

fn policy_id(p: &Project) -> String {
    let out = mxguard(&["policy", "-c", &p.config_str(), "example.com"]);
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("id=")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

fn serial(port: u16) -> u32 {
    ask(port, "example.com.", "SOA")
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no SOA from port {port}"))
}

#[test]
fn unbound_validates_the_daemons_records_with_the_ds_it_prints() {
    let p = project();
    let ds = ds_line(&p); // before the first start: the key is created and kept
    let d = p.start();
    let u = Unbound::start(d.dns, &ds);
    let txt = u.dig(&["_mta-sts.example.com.", "TXT"]);
    assert_validated(&txt, "NOERROR");
    assert!(
        txt.contains(&format!("v=STSv1; id={}", policy_id(&p))),
        "{txt}"
    );
    let rpt = u.dig(&["_smtp._tls.example.com.", "TXT"]);
    assert_validated(&rpt, "NOERROR");
    assert!(
        rpt.contains("v=TLSRPTv1; rua=mailto:tlsrpt@example.com"),
        "{rpt}"
    );
    // The MX key exists from the first start, so its TLSA record is published.
    let tlsa = u.dig(&["_25._tcp.mx1.example.com.", "TLSA"]);
    assert_validated(&tlsa, "NOERROR");
    assert!(tlsa.contains("TLSA\t3 1 1 "), "{tlsa}");
    assert_validated(&u.dig(&["example.com.", "MX"]), "NOERROR");
    assert_validated(&u.dig(&["example.com.", "CDS"]), "NOERROR");
    assert_validated(&u.dig(&["nothing-here.example.com.", "A"]), "NXDOMAIN");
    let nodata = u.dig(&["mx1.example.com.", "TXT"]);
    assert_validated(&nodata, "NOERROR");
    assert!(nodata.contains("ANSWER: 0"), "{nodata}");
    // The DS is stable across `mxguard ds` calls while the daemon runs.
    assert_eq!(ds_line(&p), ds);
}

#[test]
fn zone_metrics_without_tlsrpt() {
    let p = project();
    p.append_config("[tlsrpt]\nenabled = false\n");
    let d = p.start();
    wait_for(
        "zone metrics on the admin listener",
        Duration::from_secs(5),
        || (zone_metric(&p, "mxguard_zone_serial") == Some(u64::from(serial(d.dns)))).then_some(()),
    );
    let out = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{}/metrics", p.admin)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("mxguard_tlsrpt_"), "{text}");
    assert!(
        text.contains("# TYPE mxguard_zone_signatures_expire_timestamp_seconds gauge"),
        "{text}"
    );
}

#[test]
fn wrong_ds_gives_servfail() {
    let p = project();
    let d = p.start();
    let ds = ds_line(&p);
    // Flip the last digest character.
    let mut wrong = ds.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    let u = Unbound::start(d.dns, &wrong);
    let out = u.dig(&["_mta-sts.example.com.", "TXT"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
}

#[test]
fn policy_change_is_served_before_its_id_is_published() {
    let p = project();
    let d = p.start();
    let old_id = policy_id(&p);
    let s0 = serial(d.dns);
    fs::write(
        p.path("policies/example.com.toml"),
        "mode = \"testing\"\nmax_age = 604800\n",
    )
    .unwrap();
    let new_id = policy_id(&p);
    assert_ne!(new_id, old_id);
    d.signal("HUP");
    // The moment DNS announces the new id, HTTPS must already serve the new text.
    wait_for("new id in DNS", Duration::from_secs(15), || {
        ask(d.dns, "_mta-sts.example.com.", "TXT")
            .contains(&new_id)
            .then_some(())
    });
    let r = d.curl("mta-sts.example.com", &[]);
    assert!(r.body.contains("mode: testing\r\n"), "{r:?}");
    assert!(zone_serial_gt(serial(d.dns), s0));
    // The admin listener reports the serial served (read again with it, should the zone change
    // in between) and when its signatures expire (default validity 14 days, replaced when 7 or
    // fewer remain).
    wait_for(
        "the served serial in the metrics",
        Duration::from_secs(5),
        || (zone_metric(&p, "mxguard_zone_serial") == Some(u64::from(serial(d.dns)))).then_some(()),
    );
    let expires = zone_metric(&p, "mxguard_zone_signatures_expire_timestamp_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let day = 86_400;
    assert!(
        expires > now + 7 * day && expires <= now + 14 * day + 3600,
        "expires {expires}, now {now}"
    );
}

/// The value of `name{zone="example.com"}` on the daemon's /metrics.
fn zone_metric(p: &Project, name: &str) -> Option<u64> {
    let out = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{}/metrics", p.admin)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{name}{{zone=\"example.com\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

fn zone_serial_gt(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

#[test]
fn restart_keeps_keys_and_serial_only_grows() {
    let p = project();
    let ds = ds_line(&p);
    let mut d = p.start();
    let s0 = serial(d.dns);
    d.signal("TERM");
    wait_for("daemon exit", Duration::from_secs(15), || {
        d.child.try_wait().unwrap()
    });
    drop(d);
    let d = p.start();
    assert_eq!(ds_line(&p), ds, "DNSSEC key changed across restart");
    let s1 = serial(d.dns);
    assert!(s1 == s0 || zone_serial_gt(s1, s0), "{s1} < {s0}");
    drop(d);
    // A content change across a restart gives a larger serial.
    fs::write(
        p.path("policies/example.com.toml"),
        "mode = \"testing\"\nmax_age = 86400\n",
    )
    .unwrap();
    let d = p.start();
    let s2 = serial(d.dns);
    assert!(zone_serial_gt(s2, s1), "{s2} not after {s1}");
    assert_eq!(ds_line(&p), ds);
}

#[test]
fn knot_secondary_follows_the_daemon_and_status_shows_it() {
    let p = project();
    let kport = free_port();
    p.append_config(&format!(
        "[[secondary]]\nname = \"knot\"\naddress = \"127.0.0.1:{kport}\"\n"
    ));
    let d = p.start();
    let _knot = Knot::start(kport, d.dns, &["example.com."]);
    let s0 = serial(d.dns);
    wait_for("knot to load the zone", Duration::from_secs(15), || {
        (ask(kport, "example.com.", "SOA").split_whitespace().nth(2) == Some(&s0.to_string()))
            .then_some(())
    });
    let out = mxguard(&["status", "-c", &p.config_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains(&format!(
            "secondary knot (127.0.0.1:{kport}): serial {s0} in sync"
        )),
        "{text}"
    );

    // A policy change reaches knot by NOTIFY + transfer within 2 s of being served.
    fs::write(
        p.path("policies/example.com.toml"),
        "mode = \"testing\"\nmax_age = 604800\n",
    )
    .unwrap();
    let new_id = policy_id(&p);
    d.signal("HUP");
    wait_for("new id at mxguard", Duration::from_secs(15), || {
        ask(d.dns, "_mta-sts.example.com.", "TXT")
            .contains(&new_id)
            .then_some(())
    });
    wait_for("new id at knot", Duration::from_secs(2), || {
        ask(kport, "_mta-sts.example.com.", "TXT")
            .contains(&new_id)
            .then_some(())
    });
    // Answers from the secondary validate with the daemon's DS.
    let u = Unbound::start(kport, &ds_line(&p));
    assert_validated(&u.dig(&["_mta-sts.example.com.", "TXT"]), "NOERROR");
}

#[test]
fn static_record_at_a_managed_name_is_a_config_error_naming_both_places() {
    let p = project();
    let zone = p.path("zones/example.com.zone");
    let mut text = fs::read_to_string(&zone).unwrap();
    text.push_str("_mta-sts IN TXT \"v=STSv1; id=handmade\"\n");
    fs::write(&zone, text).unwrap();
    let out = mxguard(&["check-config", "-c", &p.config_str()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zones/example.com.zone:"), "{err}");
    assert!(err.contains("_mta-sts.example.com."), "{err}");
    assert!(
        err.contains("mxguard.toml: domain[0] MTA-STS policy id"),
        "{err}"
    );
}

#[test]
fn optional_https_tlsa_and_dane_ta_records_are_published() {
    let p = project();
    // A CA intermediate for DANE-TA, and the https TLSA for the policy host.
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let ca_file = p.path("intermediate.pem");
    fs::write(&ca_file, ca.pem()).unwrap();
    let ta = mxguard::dane::probe::key_id(&rcgen::PublicKeyData::subject_public_key_info(&ca_key));
    let cfg = fs::read_to_string(p.config())
        .unwrap()
        .replace(
            "tls_rpt = [\"mailto:tlsrpt@example.com\"]\n",
            "tls_rpt = [\"mailto:tlsrpt@example.com\"]\ntlsa_https = true\n",
        )
        .replace(
            "[[mx]]\nhost = \"mx1.example.com\"\n",
            &format!(
                "[[mx]]\nhost = \"mx1.example.com\"\ndane_ta = [\"{}\"]\n",
                ca_file.display()
            ),
        );
    fs::write(p.config(), cfg).unwrap();
    let d = p.start();
    let mx_tlsa = ask(d.dns, "_25._tcp.mx1.example.com.", "TLSA").to_ascii_lowercase();
    assert!(
        mx_tlsa.replace(' ', "").contains(&format!("211{ta}")),
        "{mx_tlsa}"
    );
    assert!(mx_tlsa.contains("3 1 1 "), "{mx_tlsa}");
    assert!(
        d.log_text()
            .contains("DANE-TA (2 1 1) pins the CA's intermediates")
    );
    // The policy host's key, as the HTTPS listener presents it once its certificate is issued.
    let https_tlsa = ask(d.dns, "_443._tcp.mta-sts.example.com.", "TLSA").to_ascii_lowercase();
    let key_pem = fs::read_to_string(p.path("state/certs/mta-sts.example.com/key.pem")).unwrap();
    let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    let id = mxguard::dane::probe::key_id(&rcgen::PublicKeyData::subject_public_key_info(&key));
    assert!(
        https_tlsa.replace(' ', "").contains(&format!("311{id}")),
        "{https_tlsa}"
    );
    // Both options off again: at SIGHUP the daemon withdraws what it set and no longer sets
    // (the policy host's TLSA; the DANE-TA record, the rollover's DANE-EE record staying).
    let cfg = fs::read_to_string(p.config())
        .unwrap()
        .replace("tlsa_https = true\n", "")
        .replace(&format!("dane_ta = [\"{}\"]\n", ca_file.display()), "");
    fs::write(p.config(), cfg).unwrap();
    d.reload();
    let after = wait_for(
        "the policy host's TLSA and the DANE-TA record withdrawn",
        Duration::from_secs(15),
        || {
            let mx = ask(d.dns, "_25._tcp.mx1.example.com.", "TLSA").to_ascii_lowercase();
            (ask(d.dns, "_443._tcp.mta-sts.example.com.", "TLSA").is_empty()
                && !mx.replace(' ', "").contains(&format!("211{ta}")))
            .then_some(mx)
        },
    );
    assert!(after.contains("3 1 1 "), "{after}");
}

#[test]
fn a_zone_file_edit_is_served_after_sighup_only() {
    let p = project();
    // Short poll: the rollover and certificate passes run every second, and none of them may
    // read the zone file.
    p.append_config("\n[rollover]\npoll = \"1s\"\n");
    let d = p.start();
    wait_for(
        "the rollover's TLSA records",
        Duration::from_secs(20),
        || {
            (ask(d.dns, "_25._tcp.mx1.example.com.", "TLSA")
                .lines()
                .count()
                == 2)
                .then_some(())
        },
    );
    let s0 = serial(d.dns);
    let zone = p.path("zones/example.com.zone");
    let text = fs::read_to_string(&zone).unwrap();
    fs::write(&zone, format!("{text}www 3600 IN A 192.0.2.80\n")).unwrap();
    // Several passes later nothing served has changed.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(ask(d.dns, "www.example.com.", "A"), "");
    assert_eq!(serial(d.dns), s0);
    d.reload();
    wait_for(
        "the edited zone after SIGHUP",
        Duration::from_secs(15),
        || (ask(d.dns, "www.example.com.", "A").trim() == "192.0.2.80").then_some(()),
    );
    assert!(zone_serial_gt(serial(d.dns), s0));
    // Managed records survive the reload of the zone file.
    assert_eq!(
        ask(d.dns, "_25._tcp.mx1.example.com.", "TLSA")
            .lines()
            .count(),
        2
    );
    // A half-saved zone file is refused on SIGHUP; the zone keeps being served.
    fs::write(&zone, "$ORIGIN example.com.\n@ IN SOA ns1 (\n").unwrap();
    let s1 = serial(d.dns);
    d.signal("HUP");
    wait_for(
        "the refused reload in the log",
        Duration::from_secs(15),
        || d.log_text().contains("reload refused").then_some(()),
    );
    assert_eq!(ask(d.dns, "www.example.com.", "A").trim(), "192.0.2.80");
    assert_eq!(serial(d.dns), s1);
}

/// dig output (no +short) for `args` against the daemon.
fn dig_full(port: u16, args: &[&str]) -> String {
    let mut cmd = Command::new(dig());
    cmd.args(["@127.0.0.1", "-p", &port.to_string(), "+norec", "+nocookie"]);
    cmd.args(args);
    run(&mut cmd).1
}

#[test]
fn any_and_rrsig_queries_over_udp_are_no_amplifiers() {
    let p = project();
    let d = p.start();
    // RFC 8482: ANY gets one RRset (with its signature), not the apex's dozen.
    let out = dig_full(d.dns, &["+dnssec", "+ignore", "example.com.", "ANY"]);
    let answer_types: std::collections::BTreeSet<&str> = out
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert!(
        answer_types.len() <= 2 && answer_types.iter().any(|t| *t != "RRSIG"),
        "{out}"
    );
    let size: usize = out
        .lines()
        .find_map(|l| l.strip_prefix(";; MSG SIZE  rcvd: "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no size in {out}"));
    assert!(size < 400, "ANY answer of {size} bytes: {out}");
    // RRSIG over UDP: truncated at once, answered over TCP.
    let udp = dig_full(d.dns, &["+ignore", "+notcp", "example.com.", "RRSIG"]);
    assert!(udp.contains(" tc"), "no TC over UDP: {udp}");
    assert!(udp.contains("ANSWER: 0"), "{udp}");
    let tcp = dig_full(d.dns, &["+tcp", "example.com.", "RRSIG"]);
    assert!(
        tcp.contains("IN\tRRSIG\tSOA") || tcp.contains("RRSIG SOA"),
        "{tcp}"
    );
}

#[test]
fn log_lines_say_what_happened_to_certificates() {
    let p = project();
    let d = p.start();
    // The MX has no reload command: the deployment must not claim an MTA reload.
    wait_for(
        "the MX certificate deployed",
        Duration::from_secs(30),
        || d.log_text().contains("certificate deployed").then_some(()),
    );
    let first = d.log_text();
    assert!(
        first.contains("certificate deployed (no reload command configured)")
            && !first.contains("MTA reloaded"),
        "{first}"
    );
    assert!(first.contains("certificate issued") && first.contains("certificate installed"));
    wait_for(
        "the policy host's certificate stored",
        Duration::from_secs(30),
        || {
            p.path("state/certs/mta-sts.example.com/chain.pem")
                .exists()
                .then_some(())
        },
    );
    drop(d);
    // A restart serves the stored certificates at once: no stand-in from the local CA.
    let d = p.start();
    let again = d.log_text();
    assert!(
        !again.contains("from the local CA (not publicly trusted)"),
        "{again}"
    );
    assert!(
        d.curl("mta-sts.example.com", &[])
            .body
            .contains("version: STSv1"),
        "{again}"
    );
}

#[test]
fn the_daemon_raises_its_open_files_limit_to_the_hard_limit() {
    let p = project();
    let log = p.path("nofile.log");
    let mut child = Command::new("sh")
        .args([
            "-c",
            &format!(
                "ulimit -Sn 256 && exec {} run -c {}",
                crate::harness::BIN,
                p.config_str()
            ),
        ])
        .env("RUST_LOG", "info")
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let limits = wait_for("the daemon's limits", Duration::from_secs(20), || {
        let text = fs::read_to_string(format!("/proc/{}/limits", child.id())).ok()?;
        let line = text
            .lines()
            .find(|l| l.starts_with("Max open files"))?
            .to_string();
        let v: Vec<&str> = line.split_whitespace().collect();
        (v.len() >= 5 && v[3] != "256").then_some((v[3].to_string(), v[4].to_string()))
    });
    let logged = wait_for("the log line", Duration::from_secs(10), || {
        fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("open files limit raised"))
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        limits.0, limits.1,
        "soft limit not raised to the hard limit"
    );
    assert!(logged.contains("from=256"), "{logged}");
}

#[test]
fn a_restored_state_behind_the_secondary_moves_above_its_serial() {
    let p = project();
    let kport = free_port();
    p.append_config(&format!(
        "[[secondary]]\nname = \"knot\"\naddress = \"127.0.0.1:{kport}\"\n"
    ));
    let d = p.start();
    let _knot = Knot::start(kport, d.dns, &["example.com."]);
    let s0 = serial(d.dns);
    wait_for("knot to load the zone", Duration::from_secs(15), || {
        (ask(kport, "example.com.", "SOA").split_whitespace().nth(2) == Some(&s0.to_string()))
            .then_some(())
    });
    drop(d);
    // A state directory restored from an older backup: a serial far behind knot's.
    let state_file = p.path("state/zones/example.com.signing.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&state_file).unwrap()).unwrap();
    state["serial"] = (s0 - 100_000).into();
    fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    let d = p.start();
    let lifted = wait_for("a serial above knot's", Duration::from_secs(20), || {
        let s = serial(d.dns);
        zone_serial_gt(s, s0).then_some(s)
    });
    wait_for("knot to transfer it", Duration::from_secs(15), || {
        (ask(kport, "example.com.", "SOA").split_whitespace().nth(2) == Some(&lifted.to_string()))
            .then_some(())
    });
    assert!(
        d.log_text()
            .contains("a secondary serves a higher serial than mxguard; moving above it"),
        "{}",
        d.log_text()
    );
}

#[test]
fn a_zone_mx_outside_the_enforce_policy_is_refused_by_check_config_and_sighup() {
    let p = project();
    let d = p.start();
    let zone = p.path("zones/example.com.zone");
    let text = fs::read_to_string(&zone).unwrap();
    fs::write(&zone, format!("{text}@ 3600 IN MX 20 mx9.example.com.\n")).unwrap();
    let out = mxguard(&["check-config", "-c", &p.config_str()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MX mx9.example.com is not covered by the enforce policy of example.com"),
        "{err}"
    );
    d.signal("HUP");
    wait_for("the refused reload", Duration::from_secs(15), || {
        d.log_text()
            .contains("MX mx9.example.com is not covered")
            .then_some(())
    });
    assert_eq!(ask(d.dns, "example.com.", "MX").lines().count(), 1);
}

#[test]
fn a_malformed_dns_cookie_gets_formerr() {
    let p = project();
    let d = p.start();
    let q = |cookie: &str, tcp: bool| {
        let mut cmd = Command::new(dig());
        cmd.args(["@127.0.0.1", "-p", &d.dns.to_string(), "+norec"]);
        cmd.arg(format!("+cookie={cookie}"));
        cmd.arg(if tcp { "+tcp" } else { "+notcp" });
        cmd.args(["example.com.", "SOA"]);
        run(&mut cmd).1
    };
    for tcp in [false, true] {
        // A client cookie is 8 bytes; 2 or 12 are malformed (RFC 7873 5.2.2).
        for bad in ["0011", "000102030405060708090a0b"] {
            let out = q(bad, tcp);
            assert!(
                out.contains("status: FORMERR"),
                "tcp {tcp}, cookie {bad}: {out}"
            );
        }
        let out = q("0102030405060708", tcp);
        assert!(
            out.contains("status: NOERROR") && out.contains("ANSWER: 1"),
            "{out}"
        );
    }
}

#[test]
fn a_udp_flood_from_one_network_is_rate_limited_with_slip() {
    use std::net::UdpSocket;
    let p = project();
    let d = p.start();
    // Eight source ports: the kernel spreads them over the server's UDP sockets, whose query
    // tasks share one limiter.
    let socks: Vec<UdpSocket> = (0..8)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let query = |id: u16| {
        let mut m = hickory_proto::op::Message::query();
        m.metadata.id = id;
        m.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii("_mta-sts.example.com.").unwrap(),
            hickory_proto::rr::RecordType::TXT,
        ));
        m.to_vec().unwrap()
    };
    // 1,000 queries at once: far above the default 200 responses per second. The answers are
    // read while sending, so that the test's own receive buffers do not drop them.
    let (mut full, mut truncated) = (0, 0);
    let mut buf = [0u8; 2048];
    let started = std::time::Instant::now();
    // When the last full answer arrived: the server answered every query it counted before.
    let mut last_full = started;
    let mut count = |n: usize, buf: &[u8]| {
        let m = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
        if m.metadata.truncation {
            assert!(m.answers.is_empty());
            truncated += 1;
        } else {
            full += 1;
            last_full = std::time::Instant::now();
        }
    };
    for id in 0..1000u16 {
        let s = &socks[usize::from(id) % socks.len()];
        s.send_to(&query(id), ("127.0.0.1", d.dns)).unwrap();
        while let Ok((n, _)) = s.recv_from(&mut buf) {
            count(n, &buf);
        }
    }
    let quiet = std::time::Instant::now() + Duration::from_millis(500);
    while std::time::Instant::now() < quiet {
        for s in &socks {
            while let Ok((n, _)) = s.recv_from(&mut buf) {
                count(n, &buf);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // One burst of 200 for the network plus what refilled until the last full answer (at 200
    // per second) is answered in full, whichever server socket a query reached (without
    // limiting nearly all 1,000 are; with a limiter per socket up to 200 per socket); some of
    // the rest are truncated (slip), the others dropped (the kernel may drop some of the
    // flood as well).
    let window = last_full.duration_since(started);
    let refill = (window.as_secs_f64() * 200.0).ceil() as usize;
    assert!(
        (100..=200 + refill + 5).contains(&full),
        "{full} full answers (the last {window:?} after the first query)"
    );
    assert!(truncated >= 20, "{truncated} truncated answers (slip)");
    assert!(full + truncated < 1000, "nothing dropped");
    // TCP is not limited: the client that retries over it gets its answer.
    let out = dig_full(d.dns, &["+tcp", "_mta-sts.example.com.", "TXT"]);
    assert!(
        out.contains("status: NOERROR") && out.contains("v=STSv1"),
        "{out}"
    );
}

#[test]
fn a_flood_of_refused_transfers_logs_one_warning_per_interval() {
    let p = project();
    let d = p.start();
    for _ in 0..30 {
        let out = dig_full(d.dns, &["+tcp", "+tries=1", "example.com.", "AXFR"]);
        assert!(
            out.contains("Transfer failed") || out.contains("REFUSED"),
            "{out}"
        );
    }
    let log = d.log_text();
    let lines = log.matches("zone transfer refused").count();
    assert!((1..=2).contains(&lines), "{lines} warnings for 30 refusals");
}

#[test]
fn a_client_cookie_gets_a_server_cookie_back() {
    let p = project();
    let d = p.start();
    let cookie_of = |tcp: bool| {
        let mut cmd = Command::new(dig());
        cmd.args(["@127.0.0.1", "-p", &d.dns.to_string(), "+norec"]);
        cmd.arg("+cookie=0102030405060708");
        cmd.arg(if tcp { "+tcp" } else { "+notcp" });
        cmd.args(["example.com.", "SOA"]);
        let out = run(&mut cmd).1;
        let line = out
            .lines()
            .find(|l| l.contains("; COOKIE: "))
            .unwrap_or_else(|| panic!("no cookie in {out}"))
            .to_string();
        let hex = line
            .split("; COOKIE: ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_ascii_lowercase();
        assert!(out.contains("status: NOERROR"), "{out}");
        hex
    };
    let udp = cookie_of(false);
    // The client cookie echoed, then a 16-byte server cookie.
    assert!(udp.starts_with("0102030405060708"), "{udp}");
    assert_eq!(udp.len(), 48, "{udp}");
    // Stable for the same client and address, over UDP and TCP alike.
    assert_eq!(cookie_of(false), udp);
    assert_eq!(cookie_of(true), udp);
}

#[test]
fn idle_dns_tcp_connections_from_one_address_are_capped() {
    use std::io::Read;
    use std::net::TcpStream;
    let p = project();
    let d = p.start();
    // 32 idle connections are allowed from one address…
    let held: Vec<TcpStream> = (0..32)
        .map(|_| TcpStream::connect(("127.0.0.1", d.dns)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // …the next is closed at once.
    let mut extra = TcpStream::connect(("127.0.0.1", d.dns)).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 1];
    let started = std::time::Instant::now();
    let n = extra.read(&mut b).unwrap_or(0);
    assert_eq!(n, 0, "the 33rd connection got data");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "not closed at once"
    );
    // A query from that address is not served either while the cap is reached; once the
    // idle ones are gone, it is.
    let out = dig_full(d.dns, &["+tcp", "+tries=1", "example.com.", "SOA"]);
    assert!(
        !out.contains("status: NOERROR"),
        "served beyond the cap: {out}"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let out = dig_full(d.dns, &["+tcp", "example.com.", "SOA"]);
    assert!(out.contains("status: NOERROR"), "{out}");
}

/// A new `dnssec.algorithm` never swaps the key at once (the parent's DS would no longer
/// match): without a way to see the parent the roll does not start and `status` says why;
/// the old key keeps signing and unbound keeps validating.
#[test]
fn an_algorithm_change_without_the_parent_keeps_the_key_and_says_why() {
    let p = project();
    p.append_config("[rollover]\npoll = \"1s\"\n");
    let ds = ds_line(&p);
    let d = p.start();
    let unbound = Unbound::start(d.dns, &ds);
    assert_validated(&unbound.dig(&["example.com.", "MX"]), "NOERROR");
    let cfg = fs::read_to_string(p.config()).unwrap();
    fs::write(
        p.config(),
        format!("{cfg}\n[dnssec]\nalgorithm = \"ed25519\"\n"),
    )
    .unwrap();
    d.reload();
    let text = wait_for("status to say why", Duration::from_secs(20), || {
        let out = mxguard(&["status", "-c", &p.config_str()]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("waiting: a key roll is due but cannot start: set dnssec.parent_nameservers or dnssec.parent_resolver")
            .then_some(text)
    });
    assert!(
        text.contains("ecdsap256sha256 (published,signing,ds)"),
        "{text}"
    );
    let keys = ask(d.dns, "example.com.", "DNSKEY");
    assert_eq!(keys.lines().count(), 1, "{keys}");
    assert!(keys.starts_with("257 3 13 "), "{keys}");
    assert_validated(&unbound.dig(&["www-none.example.com.", "A"]), "NXDOMAIN");
    assert_eq!(ds_line(&p), ds);
}
