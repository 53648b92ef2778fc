//! The DNS server against real validators (unbound, delv), zone checkers (ldns-verify-zone,
//! dnssec-verify), dig for AXFR/TSIG, and a real knotd secondary.
//!
//! Every external tool is required: a missing one fails the test naming the Debian package.

use crate::harness::free_port;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_proto::rr::rdata::{TLSA, TXT};
use hickory_proto::rr::{Name, RData};
use mxguard::dns::{DnsServer, DnsSockets, Secondary, query_soa_serial};
use mxguard::zone::{
    DnssecSettings, KeySet, ManagedRecords, RegistrarRecords, SigningState, ZoneData, Zones,
    build_signed_zone, keys,
};
use tokio_util::sync::CancellationToken;

const ZONE: &str = "$ORIGIN example.com.
$TTL 3600
@   IN SOA ns1 hostmaster ( 1 3600 600 1209600 300 )
    IN NS  ns1
    IN MX  10 mx1
ns1 IN A   127.0.0.1
mx1 IN A   192.0.2.25
";

const TSIG_SECRET: &str = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=";
const WRONG_SECRET: &str = "d3JvbmdzZWNyZXR3cm9uZ3NlY3JldHdyb25nc2VjcmV0";

pub(crate) fn tool(name: &str, package: &str) -> PathBuf {
    for dir in [
        "/usr/bin",
        "/usr/sbin",
        "/bin",
        "/sbin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed: install the Debian package `{package}` (apt-get install {package})"
    );
}

pub(crate) fn dig() -> PathBuf {
    tool("dig", "bind9-dnsutils")
}

fn n(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs a command, returning (success, stdout + stderr).
pub(crate) fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn managed() -> ManagedRecords {
    let mut m = ManagedRecords::new();
    m.push(
        n("_mta-sts.example.com."),
        300,
        RData::TXT(TXT::new(vec!["v=STSv1; id=20240101T000000".into()])),
        "domain[0].policy",
    );
    m.push(
        n("_smtp._tls.example.com."),
        300,
        RData::TXT(TXT::new(vec![
            "v=TLSRPTv1; rua=mailto:tlsrpt@example.com".into(),
        ])),
        "domain[0].tlsrpt",
    );
    m.push(
        n("_25._tcp.mx1.example.com."),
        300,
        RData::TLSA(TLSA::new(
            CertUsage::DaneEe,
            Selector::Spki,
            Matching::Sha256,
            vec![0xab; 32],
        )),
        "domain[0].tlsa",
    );
    m
}

fn zone_data(extra: &str) -> ZoneData {
    let text = format!("{ZONE}{extra}");
    ZoneData::parse(&text, Path::new("example.com.zone"), &n("example.com."))
        .unwrap()
        .with_managed(&managed())
        .unwrap()
}

/// A running server on 127.0.0.1:port (UDP and TCP) in its own runtime thread.
struct Fixture {
    port: u16,
    server: DnsServer,
    shutdown: CancellationToken,
    thread: Option<JoinHandle<()>>,
    dir: tempfile::TempDir,
    key: KeySet,
    state: SigningState,
    settings: DnssecSettings,
}

impl Fixture {
    fn start(nsec3: bool, secondaries: Vec<Secondary>, extra: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let settings = DnssecSettings {
            nsec3,
            ..DnssecSettings::default()
        };
        let key = keys::load_or_generate(
            &dir.path().join("keys"),
            &n("example.com."),
            settings.algorithm,
        )
        .unwrap()
        .into();
        let (zone, state) =
            build_signed_zone(&zone_data(extra), &key, None, now(), &settings).unwrap();
        let zones = Arc::new(ArcSwap::from_pointee(Zones::new().with(zone)));
        // UDP and TCP on the same port.
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
                break (udp, tcp);
            }
        };
        let port = udp.local_addr().unwrap().port();
        udp.set_nonblocking(true).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let server = DnsServer::new(zones);
        let shutdown = CancellationToken::new();
        let (s, t) = (server.clone(), shutdown.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let sockets = DnsSockets {
                    udp: vec![tokio::net::UdpSocket::from_std(udp).unwrap()],
                    tcp: vec![tokio::net::TcpListener::from_std(tcp).unwrap()],
                };
                s.run(sockets, secondaries, t).await.unwrap();
            });
        });
        Fixture {
            port,
            server,
            shutdown,
            thread: Some(thread),
            dir,
            key,
            state,
            settings,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Builds a new signed zone from changed content and swaps it in; returns the new serial.
    fn republish(&mut self, extra: &str) -> u32 {
        let (zone, state) = build_signed_zone(
            &zone_data(extra),
            &self.key,
            Some(&self.state),
            now(),
            &self.settings,
        )
        .unwrap();
        self.state = state;
        let serial = zone.serial();
        self.server.publish(Zones::new().with(zone));
        serial
    }

    /// The DS and DNSKEY of the zone's (first) key, as the registrar gets them.
    fn registrar(&self) -> RegistrarRecords {
        let (key, _) = self.key.keys().next().unwrap();
        key.registrar_records(&n("example.com.")).unwrap()
    }

    fn ds_line(&self) -> String {
        self.registrar().ds
    }

    pub(crate) fn dig(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(dig());
        cmd.arg("@127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .args(["+time=2", "+tries=1"])
            .args(args);
        run(&mut cmd).1
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The DS (SHA-256) of the KSK among `dnskeys` (`dig +short … DNSKEY` lines) of `zone`, as
/// `dnssec-dsfromkey` prints it: a trust anchor line for a validating resolver. `dir` holds
/// the key file it reads.
pub(crate) fn ksk_ds(zone: &str, dnskeys: &str, dir: &std::path::Path) -> String {
    let key = dnskeys
        .lines()
        .find(|l| l.starts_with("257 3 "))
        .unwrap_or_else(|| panic!("no KSK for {zone} in:\n{dnskeys}"));
    let f = dir.join("ksk.key");
    std::fs::write(&f, format!("{zone}. 3600 IN DNSKEY {key}\n")).unwrap();
    let (ok, out) = run(Command::new(tool("dnssec-dsfromkey", "bind9-utils"))
        .args(["-2", "-f"])
        .arg(&f)
        .arg(format!("{zone}.")));
    assert!(ok, "{out}");
    out.trim().to_string()
}

/// A child process killed on drop.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A strict unbound validator with one trust anchor, asking only the lab's servers.
pub(crate) struct Unbound {
    pub(crate) port: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Unbound {
    /// Validating example.com from `ds_line`, asked at `server_port`.
    pub(crate) fn start(server_port: u16, ds_line: &str) -> Unbound {
        Unbound::lab(ds_line, &[("example.com.", server_port)], false)
    }

    /// Validating strictly from the trust anchor `anchor` (a DS or DNSKEY line), each zone of
    /// `stubs` asked at its port on 127.0.0.1 and every other name refused (nothing leaves
    /// the lab); `harden_algo_downgrade`: every algorithm of the DS set must sign.
    pub(crate) fn lab(anchor: &str, stubs: &[(&str, u16)], harden_algo_downgrade: bool) -> Unbound {
        let bin = tool("unbound", "unbound");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("anchor"), format!("{anchor}\n")).unwrap();
        let port = free_port();
        let harden = if harden_algo_downgrade { "yes" } else { "no" };
        let mut conf = format!(
            r#"server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-not-query-localhost: no
    chroot: ""
    username: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    val-log-level: 2
    module-config: "validator iterator"
    trust-anchor-file: "{d}/anchor"
    val-permissive-mode: no
    trust-anchor-signaling: no
    root-key-sentinel: no
    harden-dnssec-stripped: yes
    harden-algo-downgrade: {harden}
    access-control: 127.0.0.0/8 allow
    local-zone: "." refuse
"#
        );
        for (zone, _) in stubs {
            conf.push_str(&format!("    local-zone: \"{zone}\" transparent\n"));
        }
        for (zone, stub) in stubs {
            conf.push_str(&format!(
                "stub-zone:\n    name: \"{zone}\"\n    stub-addr: 127.0.0.1@{stub}\n"
            ));
        }
        conf.push_str("remote-control:\n    control-enable: no\n");
        let conf_path = dir.path().join("unbound.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let (ok, out) = run(Command::new(tool("unbound-checkconf", "unbound")).arg(&conf_path));
        assert!(ok, "unbound-checkconf: {out}");
        let child = Command::new(bin)
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let u = Unbound {
            port,
            _proc: Proc(child),
            _dir: dir,
        };
        wait_for(Duration::from_secs(10), "unbound to answer", || {
            u.dig(&["localhost.", "A"]).contains("status:")
        });
        u
    }

    pub(crate) fn dig(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(dig());
        cmd.arg("@127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .args(["+time=3", "+tries=1", "+dnssec"])
            .args(args);
        run(&mut cmd).1
    }
}

pub(crate) fn flags(out: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(";; flags:"))
        .unwrap_or_else(|| panic!("no flags line in:\n{out}"))
        .to_string()
}

pub(crate) fn assert_validated(out: &str, status: &str) {
    assert!(
        out.contains(&format!("status: {status}")),
        "expected {status}:\n{out}"
    );
    let f = flags(out);
    assert!(f.contains(" ad"), "expected AD flag:\n{out}");
}

fn unbound_validates(nsec3: bool) {
    let fx = Fixture::start(nsec3, vec![], "");
    let u = Unbound::start(fx.port, &fx.ds_line());
    for (name, rtype) in [
        ("_mta-sts.example.com.", "TXT"),
        ("_smtp._tls.example.com.", "TXT"),
        ("_25._tcp.mx1.example.com.", "TLSA"),
        ("example.com.", "MX"),
        ("example.com.", "DNSKEY"),
    ] {
        let out = u.dig(&[name, rtype]);
        assert_validated(&out, "NOERROR");
        assert!(
            out.contains(&format!("IN\t{rtype}")),
            "{name} {rtype} has no answer:\n{out}"
        );
    }
    // Validated NXDOMAIN, NODATA at a name with data, NODATA at an empty non-terminal.
    assert_validated(&u.dig(&["nope.example.com.", "A"]), "NXDOMAIN");
    assert_validated(&u.dig(&["deeper.nope.example.com.", "TXT"]), "NXDOMAIN");
    let nodata = u.dig(&["mx1.example.com.", "AAAA"]);
    assert_validated(&nodata, "NOERROR");
    assert!(nodata.contains("ANSWER: 0"), "{nodata}");
    let ent = u.dig(&["_tcp.mx1.example.com.", "TXT"]);
    assert_validated(&ent, "NOERROR");
    assert!(ent.contains("ANSWER: 0"), "{ent}");
}

#[test]
fn unbound_validates_nsec_zone() {
    unbound_validates(false);
}

#[test]
fn unbound_validates_nsec3_zone() {
    unbound_validates(true);
}

#[test]
fn unbound_with_wrong_ds_servfails() {
    let fx = Fixture::start(false, vec![], "");
    // A DS with a different digest: the chain of trust must break.
    let good = fx.ds_line();
    let (head, digest) = good.rsplit_once(' ').unwrap();
    let flipped: String = digest
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    let u = Unbound::start(fx.port, &format!("{head} {flipped}"));
    let out = u.dig(&["_mta-sts.example.com.", "TXT"]);
    assert!(
        out.contains("status: SERVFAIL"),
        "expected SERVFAIL:\n{out}"
    );
}

fn delv_validates(nsec3: bool) {
    let delv = tool("delv", "bind9-dnsutils");
    let fx = Fixture::start(nsec3, vec![], "");
    let reg = fx.registrar();
    let anchors = fx.dir.path().join("anchors.conf");
    std::fs::write(
        &anchors,
        format!(
            "trust-anchors {{ \"example.com.\" static-ds {} {} {} \"{}\"; }};\n",
            reg.key_tag, reg.algorithm, reg.digest_type, reg.digest_hex
        ),
    )
    .unwrap();
    for (name, rtype) in [
        ("_mta-sts.example.com", "TXT"),
        ("_25._tcp.mx1.example.com", "TLSA"),
        ("example.com", "MX"),
        ("nope.example.com", "A"),
        ("mx1.example.com", "AAAA"),
    ] {
        let (_, out) = run(Command::new(&delv)
            .arg("-a")
            .arg(&anchors)
            .args([
                "-p",
                &fx.port.to_string(),
                "@127.0.0.1",
                "+root=example.com",
            ])
            .args([name, rtype]));
        assert!(
            out.contains("fully validated"),
            "delv {name} {rtype}:\n{out}"
        );
    }
}

#[test]
fn delv_fully_validates_nsec_zone() {
    delv_validates(false);
}

#[test]
fn delv_fully_validates_nsec3_zone() {
    delv_validates(true);
}

/// Runs `dig AXFR` with extra args and returns the zone text (one SOA) or the raw output.
fn axfr(fx: &Fixture, extra: &[&str]) -> String {
    let mut args = vec![
        "AXFR",
        "example.com.",
        "+onesoa",
        "+nocmd",
        "+nostats",
        "+nocomments",
    ];
    args.extend_from_slice(extra);
    fx.dig(&args)
}

fn verify_zone_text(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    // dig prints the TSIG of each message as a record line; it is not zone data.
    let text: String = text
        .lines()
        .filter(|l| l.split_whitespace().nth(3) != Some("TSIG"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, &text).unwrap();
    let (ok, out) = run(Command::new(tool("ldns-verify-zone", "ldnsutils")).arg(&path));
    assert!(ok, "ldns-verify-zone {name}:\n{out}\n--- zone ---\n{text}");
    let (ok, out) = run(Command::new(tool("dnssec-verify", "bind9-dnsutils"))
        .args(["-z", "-o", "example.com"])
        .arg(&path));
    assert!(ok, "dnssec-verify {name}:\n{out}\n--- zone ---\n{text}");
}

#[test]
fn axfr_to_allowed_client_passes_zone_verifiers() {
    for nsec3 in [false, true] {
        let fx = Fixture::start(
            nsec3,
            vec![Secondary::new("local", "127.0.0.1:53".parse().unwrap())],
            "",
        );
        let mut counts = Vec::new();
        for extra in [&[][..], &["+dnssec"][..]] {
            let text = axfr(&fx, extra);
            assert!(!text.contains("Transfer failed"), "{text}");
            assert!(
                text.contains("RRSIG"),
                "AXFR must carry signatures even without DO:\n{text}"
            );
            let denial = if nsec3 { "NSEC3" } else { "NSEC" };
            let has_type = |t: &str| text.lines().any(|l| l.split_whitespace().nth(3) == Some(t));
            assert!(has_type(denial) && has_type("RRSIG"), "{text}");
            counts.push(text.lines().count());
            verify_zone_text(
                fx.dir.path(),
                &format!("axfr-{nsec3}-{}.zone", extra.len()),
                &text,
            );
        }
        assert_eq!(
            counts[0], counts[1],
            "AXFR with and without DO must be identical"
        );
        // Not an allowed source: refused.
        let out = axfr(&fx, &["-b", "127.0.0.2"]);
        assert!(
            out.contains("Transfer failed") || out.contains("REFUSED"),
            "{out}"
        );
        assert!(!out.contains("RRSIG"), "{out}");
    }
}

#[test]
fn tsig_axfr_multi_message_needs_the_right_key() {
    // Enough names to need several AXFR messages, so TSIG chaining is exercised.
    let extra: String = (0..400)
        .map(|i| format!("host{i} IN A 192.0.2.{}\n", i % 250))
        .collect();
    let secondary = Secondary::new("keyed", "127.0.0.3:53".parse().unwrap())
        .with_tsig(&n("xfr-key."), decode_b64(TSIG_SECRET))
        .unwrap();
    let fx = Fixture::start(false, vec![secondary], &extra);
    let key = format!("hmac-sha256:xfr-key:{TSIG_SECRET}");
    let text = axfr(&fx, &["-b", "127.0.0.2", "-y", &key]);
    assert!(
        !text.contains("Transfer failed") && !text.contains("tsig"),
        "{text}"
    );
    assert!(text.contains("host399.example.com."), "{text}");
    verify_zone_text(fx.dir.path(), "tsig.zone", &text);

    let wrong = format!("hmac-sha256:xfr-key:{WRONG_SECRET}");
    let out = axfr(&fx, &["-b", "127.0.0.2", "-y", &wrong]);
    assert!(!out.contains("host1.example.com."), "{out}");
    assert!(
        out.contains("NOTAUTH") || out.contains("Transfer failed") || out.contains("tsig"),
        "{out}"
    );

    let other = format!("hmac-sha256:other-key:{TSIG_SECRET}");
    let out = axfr(&fx, &["-b", "127.0.0.2", "-y", &other]);
    assert!(!out.contains("host1.example.com."), "{out}");

    let out = axfr(&fx, &["-b", "127.0.0.2"]);
    assert!(!out.contains("host1.example.com."), "{out}");
    assert!(
        out.contains("REFUSED") || out.contains("Transfer failed"),
        "{out}"
    );

    // A TSIG-signed ordinary query gets a signed answer that dig accepts.
    let out = fx.dig(&["-y", &key, "example.com.", "SOA"]);
    assert!(
        out.contains("status: NOERROR") && !out.contains("tsig verify failure"),
        "{out}"
    );
}

fn decode_b64(s: &str) -> Vec<u8> {
    // Small local decoder so the test does not depend on crate internals.
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        buf = (buf << 6) | A.iter().position(|x| *x == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

#[test]
fn refused_outside_zones_and_no_recursion() {
    let fx = Fixture::start(false, vec![], "");
    let out = fx.dig(&["example.org.", "A", "+rec"]);
    assert!(out.contains("status: REFUSED"), "{out}");
    assert!(!flags(&out).contains(" ra"), "{out}");
    let out = fx.dig(&["example.com.", "SOA", "+norec"]);
    assert!(
        out.contains("status: NOERROR") && flags(&out).contains(" aa"),
        "{out}"
    );
    let out = fx.dig(&["example.com.", "SOA", "CH"]);
    assert!(out.contains("status: REFUSED"), "{out}");
}

#[test]
fn large_answers_truncate_over_udp_and_succeed_over_tcp() {
    let big: String = (0..6)
        .map(|i| format!("big IN TXT \"{i}{}\"\n", "x".repeat(120)))
        .collect();
    let fx = Fixture::start(false, vec![], &big);
    let out = fx.dig(&[
        "big.example.com.",
        "TXT",
        "+notcp",
        "+dnssec",
        "+bufsize=512",
        "+ignore",
    ]);
    assert!(flags(&out).contains(" tc"), "expected TC:\n{out}");
    let out = fx.dig(&[
        "big.example.com.",
        "TXT",
        "+notcp",
        "+dnssec",
        "+bufsize=512",
    ]);
    assert!(out.contains("Truncated, retrying in TCP mode"), "{out}");
    assert!(out.contains("ANSWER: 7") && out.contains("RRSIG"), "{out}");
    // No EDNS: 512-byte limit applies as well.
    let out = fx.dig(&["big.example.com.", "TXT", "+notcp", "+noedns", "+ignore"]);
    assert!(flags(&out).contains(" tc"), "{out}");
    let out = fx.dig(&["big.example.com.", "TXT", "+notcp", "+noedns"]);
    assert!(out.contains("ANSWER: 6") && out.contains("(TCP)"), "{out}");
    // A small answer is not truncated.
    let out = fx.dig(&["example.com.", "SOA", "+notcp", "+noedns", "+ignore"]);
    assert!(
        !flags(&out).contains(" tc") && out.contains("ANSWER: 1"),
        "{out}"
    );
}

#[test]
fn garbage_packets_do_not_stop_the_server() {
    let fx = Fixture::start(false, vec![], "");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut seed = 0x1234_5678u32;
    for len in 0..300usize {
        let pkt: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        sock.send_to(&pkt, fx.addr()).unwrap();
    }
    {
        use std::io::Write;
        let mut tcp = std::net::TcpStream::connect(fx.addr()).unwrap();
        let _ = tcp.write_all(&[0, 40, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let _ = tcp.write_all(&[0xff; 100]);
    }
    let out = fx.dig(&["example.com.", "SOA"]);
    assert!(out.contains("status: NOERROR"), "{out}");
}

#[test]
fn knot_secondary_follows_notify_within_two_seconds() {
    let kport = free_port();
    let mut fx = Fixture::start(
        true,
        vec![Secondary::new(
            "knot",
            SocketAddr::from(([127, 0, 0, 1], kport)),
        )],
        "",
    );
    let _knot = Knot::start(kport, fx.port, &["example.com."]);
    let knot_addr = SocketAddr::from(([127, 0, 0, 1], kport));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let serial_at_knot = || {
        rt.block_on(query_soa_serial(
            knot_addr,
            &n("example.com."),
            None,
            Duration::from_millis(500),
        ))
        .ok()
    };
    let first = fx.state.serial;
    wait_for(Duration::from_secs(15), "knot to load the zone", || {
        serial_at_knot() == Some(first)
    });

    for round in 0..2 {
        let extra = format!("new{round} IN TXT \"round {round}\"\n");
        let serial = fx.republish(&extra);
        let swapped = Instant::now();
        wait_for(
            Duration::from_secs(2),
            "knot to transfer the new serial",
            || serial_at_knot() == Some(serial),
        );
        eprintln!(
            "round {round}: knot had serial {serial} after {:?}",
            swapped.elapsed()
        );
        // The secondary serves the new, signed data.
        let mut cmd = Command::new(dig());
        cmd.args([
            "@127.0.0.1",
            "-p",
            &kport.to_string(),
            "+dnssec",
            &format!("new{round}.example.com."),
            "TXT",
        ]);
        let out = run(&mut cmd).1;
        assert!(
            out.contains(&format!("round {round}")) && out.contains("RRSIG"),
            "{out}"
        );
    }
    // Our own SOA query helper against our server.
    let ours = rt
        .block_on(query_soa_serial(
            fx.addr(),
            &n("example.com."),
            None,
            Duration::from_secs(2),
        ))
        .unwrap();
    assert_eq!(ours, fx.state.serial);
}

/// A real knotd secondary on `port`, pulling `zone` from the primary on `primary_port`.
pub(crate) struct Knot {
    _proc: Proc,
    _dir: tempfile::TempDir,
}

impl Knot {
    pub(crate) fn start(kport: u16, primary_port: u16, zones: &[&str]) -> Knot {
        let knotd = tool("knotd", "knot");
        let kdir = tempfile::tempdir().unwrap();
        let d = kdir.path().display().to_string();
        let conf = format!(
            r#"server:
    listen: 127.0.0.1@{kport}
    rundir: "{d}"
log:
  - target: stderr
    any: info
database:
    storage: "{d}/db"
remote:
  - id: primary
    address: 127.0.0.1@{port}
acl:
  - id: notify_from_primary
    address: 127.0.0.1
    action: notify
template:
  - id: default
    storage: "{d}/zones"
zone:
{zone_list}"#,
            port = primary_port,
            zone_list = zones
                .iter()
                .map(|z| format!(
                    "  - domain: {z}\n    master: primary\n    acl: notify_from_primary\n"
                ))
                .collect::<String>()
        );
        let conf_path = kdir.path().join("knot.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let (ok, out) = run(Command::new(tool("knotc", "knot"))
            .arg("-c")
            .arg(&conf_path)
            .arg("conf-check"));
        assert!(ok, "knotc conf-check: {out}");
        let child = Command::new(knotd)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Knot {
            _proc: Proc(child),
            _dir: kdir,
        }
    }
}

/// A zone with a secure delegation (NS, DS, glue) and an insecure one: referrals without the
/// AA flag carrying the DS or the proof of its absence, the DS answered by the parent; the
/// transferred zone passes ldns-verify-zone and dnssec-verify; unbound validates the DS and
/// the proof that there is none.
#[test]
fn delegations_refer_validate_and_pass_zone_verifiers() {
    const CUTS: &str = "sub IN NS ns.sub\nsub IN DS 12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF\nns.sub IN A 192.0.2.53\nins IN NS ns.other.net.\n";
    for nsec3 in [false, true] {
        let fx = Fixture::start(
            nsec3,
            vec![Secondary::new("local", "127.0.0.1:53".parse().unwrap())],
            CUTS,
        );
        let out = fx.dig(&["+dnssec", "+norec", "www.sub.example.com.", "A"]);
        assert!(out.contains("status: NOERROR"), "{out}");
        assert!(
            !flags(&out).contains(" aa"),
            "a referral is not authoritative:\n{out}"
        );
        assert!(out.contains("ANSWER: 0"), "{out}");
        assert!(out.contains("IN\tNS\tns.sub.example.com."), "{out}");
        assert!(out.contains("IN\tDS\t12345 13 2"), "{out}");
        assert!(out.contains("IN\tA\t192.0.2.53"), "{out}");
        let out = fx.dig(&["+dnssec", "+norec", "sub.example.com.", "DS"]);
        assert!(
            flags(&out).contains(" aa") && out.contains("ANSWER: 2"),
            "{out}"
        );

        let text = axfr(&fx, &["+dnssec"]);
        verify_zone_text(fx.dir.path(), &format!("delegations-{nsec3}.zone"), &text);

        let u = Unbound::start(fx.port, &fx.ds_line());
        let ds = u.dig(&["sub.example.com.", "DS"]);
        assert_validated(&ds, "NOERROR");
        assert!(ds.contains("IN\tDS"), "{ds}");
        let none = u.dig(&["ins.example.com.", "DS"]);
        assert_validated(&none, "NOERROR");
        assert!(none.contains("ANSWER: 0"), "{none}");
    }
}

/// Wildcards (RFC 4592): synthesized answers and NODATA at a wildcard, with the proofs NSEC
/// and NSEC3 need, validate in unbound and delv; the zone passes the zone verifiers.
#[test]
fn wildcard_answers_validate_in_unbound_and_delv() {
    const WILD: &str = "*.wild IN A 192.0.2.77\n*.wild IN TXT \"synthesized\"\n";
    let delv = tool("delv", "bind9-dnsutils");
    for nsec3 in [false, true] {
        let fx = Fixture::start(
            nsec3,
            vec![Secondary::new("local", "127.0.0.1:53".parse().unwrap())],
            WILD,
        );
        let text = axfr(&fx, &["+dnssec"]);
        verify_zone_text(fx.dir.path(), &format!("wild-{nsec3}.zone"), &text);
        let u = Unbound::start(fx.port, &fx.ds_line());
        let a = u.dig(&["host.wild.example.com.", "A"]);
        assert_validated(&a, "NOERROR");
        assert!(
            a.contains("host.wild.example.com.") && a.contains("192.0.2.77"),
            "{a}"
        );
        let deep = u.dig(&["a.b.wild.example.com.", "TXT"]);
        assert_validated(&deep, "NOERROR");
        assert!(deep.contains("synthesized"), "{deep}");
        let nodata = u.dig(&["other.wild.example.com.", "MX"]);
        assert_validated(&nodata, "NOERROR");
        assert!(nodata.contains("ANSWER: 0"), "{nodata}");
        // Outside the wildcard's reach, still NXDOMAIN.
        assert_validated(&u.dig(&["nope.example.com.", "A"]), "NXDOMAIN");

        let reg = fx.registrar();
        let anchors = fx.dir.path().join("anchors.conf");
        std::fs::write(
            &anchors,
            format!(
                "trust-anchors {{ \"example.com.\" static-ds {} {} {} \"{}\"; }};\n",
                reg.key_tag, reg.algorithm, reg.digest_type, reg.digest_hex
            ),
        )
        .unwrap();
        for (name, rtype) in [
            ("host.wild.example.com", "A"),
            ("other.wild.example.com", "MX"),
        ] {
            let (_, out) = run(Command::new(&delv)
                .arg("-a")
                .arg(&anchors)
                .args([
                    "-p",
                    &fx.port.to_string(),
                    "@127.0.0.1",
                    "+root=example.com",
                ])
                .args([name, rtype]));
            assert!(
                out.contains("fully validated"),
                "delv {name} {rtype} (nsec3 {nsec3}):\n{out}"
            );
        }
    }
}
