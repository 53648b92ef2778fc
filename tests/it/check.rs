//! `mxguard check` against a loopback lab: mxguard's own signed zone behind a strict unbound
//! (the check validates by itself, with the zone's DS as its trust anchor), the policy over
//! HTTPS from mxguard or from nginx, and a stand-in MX serving STARTTLS. A good posture exits
//! 0; each negative control exits 1 and names its problem.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::dns::{Proc, Unbound};
use crate::harness::{
    CHECKS_OFF, Daemon, DomainSpec, Project, StandInMx, free_port, mxguard, wait_for,
};

pub(crate) const MX: &str = "mx1.example.com";

pub(crate) struct Lab {
    pub(crate) p: Project,
    pub(crate) d: Daemon,
    pub(crate) mx: StandInMx,
    unbound: Unbound,
    pub(crate) anchor: PathBuf,
    /// mxguard's local CA and the lab's own test CA, for --ca-file.
    pub(crate) cas: PathBuf,
    test_ca: TestCa,
}

/// A CA of the lab, for certificates the negative controls present.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mxguard lab CA");
        let key = rcgen::KeyPair::generate().unwrap();
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// Writes a leaf for `names` (valid from `from` to `until`, as years) as cert + key files.
    fn leaf(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        years: (i32, i32),
    ) -> (PathBuf, PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
        params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        fs::write(&c, format!("{}{}", cert.pem(), self.issuer.pem())).unwrap();
        fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

fn lab(policy: &str) -> Lab {
    lab_with(policy, "")
}

/// `extra` is appended to the config before the daemon starts.
pub(crate) fn lab_with(policy: &str, extra: &str) -> Lab {
    lab_acme(policy, extra, "")
}

/// `acme` lines go into the `[acme]` table.
fn lab_acme(policy: &str, extra: &str, acme: &str) -> Lab {
    let probe = free_port();
    let p = Project::new(&[DomainSpec {
        name: "example.com",
        mx: &[MX],
        policy,
    }]);
    let mta = p.path("mta");
    p.append_config(&format!(
        "[[mx]]\nhost = \"{MX}\"\ncert_file = \"{m}/mx1.crt\"\nkey_file = \"{m}/mx1.key\"\nverify = \"127.0.0.1:{probe}\"\n",
        m = mta.display()
    ));
    if !extra.is_empty() {
        p.append_config(extra);
    }
    if !acme.is_empty() {
        let cfg = fs::read_to_string(p.config()).unwrap();
        let with = cfg.replace(
            "[acme]\ndirectory = \"local\"\n",
            &format!("[acme]\ndirectory = \"local\"\n{acme}"),
        );
        assert_ne!(with, cfg, "harness config layout changed");
        fs::write(p.config(), with).unwrap();
    }
    let d = p.start();
    let (cert, key) = (p.path("mta/mx1.crt"), p.path("mta/mx1.key"));
    wait_for("first MX deployment", Duration::from_secs(60), || {
        (cert.exists() && key.exists()).then_some(())
    });
    let mx = StandInMx::start(cert, key, Duration::ZERO);
    let cfg = fs::read_to_string(p.config())
        .unwrap()
        .replace(&format!("127.0.0.1:{probe}"), &mx.addr().to_string());
    fs::write(p.config(), cfg).unwrap();
    d.reload();
    let ds = String::from_utf8(mxguard(&["ds", "-c", &p.config_str(), "example.com"]).stdout)
        .unwrap()
        .lines()
        .find(|l| l.contains(" IN DS "))
        .unwrap()
        .to_string();
    let anchor = p.path("anchor.ds");
    fs::write(&anchor, format!("{ds}\n")).unwrap();
    let unbound = Unbound::start(p.dns, &ds);
    let test_ca = TestCa::new();
    let cas = p.path("cas.pem");
    fs::write(
        &cas,
        format!(
            "{}{}",
            fs::read_to_string(p.path("state/local-ca/ca.pem")).unwrap(),
            test_ca.issuer.pem()
        ),
    )
    .unwrap();
    Lab {
        p,
        d,
        mx,
        unbound,
        anchor,
        cas,
        test_ca,
    }
}

impl Lab {
    pub(crate) fn resolver(&self) -> String {
        format!("127.0.0.1:{}", self.unbound.port)
    }

    /// `mxguard check ARGS --json` with the lab's resolver, anchor and CAs (unless ARGS
    /// give their own); (exit code, document, stderr).
    fn check(&self, args: &[&str]) -> (i32, serde_json::Value, String) {
        let resolver = self.resolver();
        let mut all: Vec<&str> = vec!["check", "--json", "--resolver", &resolver];
        let anchor = self.anchor.to_string_lossy().into_owned();
        let cas = self.cas.to_string_lossy().into_owned();
        if !args.contains(&"--trust-anchor") {
            all.extend(["--trust-anchor", &anchor]);
        }
        all.extend(["--ca-file", &cas]);
        all.extend(args);
        let out = mxguard(&all);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let doc = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out.status.code().unwrap_or(-1), doc, stderr)
    }

    /// Turns the daemon's posture checks on (through the lab's resolver, anchor and CAs) and
    /// waits for the first passing run.
    pub(crate) fn checks_on(&self) {
        let cfg = fs::read_to_string(self.p.config()).unwrap();
        let on = format!(
            "[check]\ninterval = \"1h\"\nresolver = \"{}\"\ntrust_anchor = \"{}\"\nca_file = \"{}\"\n\n",
            self.resolver(),
            self.anchor.display(),
            self.cas.display()
        );
        assert!(cfg.contains(CHECKS_OFF));
        fs::write(self.p.config(), cfg.replace(CHECKS_OFF, &on)).unwrap();
        self.d.reload();
        let ok = format!(
            "mxguard_check_ok{{domain=\"example.com\",mx=\"{MX}\",check=\"dane.match\"}} 1\n"
        );
        wait_for("a passing self-check", Duration::from_secs(30), || {
            metrics(&self.p).contains(&ok).then_some(())
        });
    }

    /// Auditor mode: no config, the given policy and SMTP ports.
    fn audit(&self, https_port: u16, smtp_port: u16) -> (i32, serde_json::Value, String) {
        self.check(&[
            "--domain",
            "example.com",
            "--https-port",
            &https_port.to_string(),
            "--smtp-port",
            &smtp_port.to_string(),
        ])
    }
}

/// The failed checks of the first domain, as `check host: seen` lines.
fn failures(doc: &serde_json::Value) -> Vec<String> {
    doc["domains"][0]["checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["status"] == "fail")
                .map(|c| {
                    format!(
                        "{} {}: {}",
                        c["check"].as_str().unwrap(),
                        c["host"].as_str().unwrap(),
                        c["seen"].as_str().unwrap()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn has_failure(doc: &serde_json::Value, check: &str, host: &str, seen_part: &str) -> bool {
    failures(doc)
        .iter()
        .any(|f| f.starts_with(&format!("{check} {host}: ")) && f.contains(seen_part))
}

#[test]
fn a_good_posture_passes_with_config_and_as_an_auditor() {
    // With CAA published for the configured CA: the check finds it consistent.
    let lab = lab_acme(
        "mode = \"enforce\"\nmax_age = 604800\n",
        "",
        "caa = true\ncaa_issuer = \"ca.lab.example\"\n",
    );
    let cfg = lab.p.config_str();
    let (code, doc, err) = lab.check(&["-c", &cfg]);
    assert_eq!(code, 0, "{doc:#}\n{err}");
    let d = &doc["domains"][0];
    assert_eq!(d["domain"], "example.com");
    assert_eq!(
        (
            d["dane"].as_str(),
            d["mta_sts"].as_str(),
            d["tls_rpt"].as_str()
        ),
        (Some("ok"), Some("ok"), Some("ok")),
        "{doc:#}"
    );
    assert_eq!(d["policy_mode"], "enforce");
    let mx = &d["mx"][0];
    assert_eq!(mx["host"], MX);
    assert_eq!(mx["dane"], "ok");
    assert_eq!(mx["mta_sts"], "ok");
    assert_eq!(mx["endpoint"], lab.mx.addr().to_string());
    let checks = d["checks"].as_array().unwrap();
    let status = |name: &str| {
        checks
            .iter()
            .find(|c| c["check"] == name)
            .map(|c| c["status"].as_str().unwrap().to_string())
    };
    for c in [
        "caa",
        "dns.mx",
        "mta-sts.txt",
        "mta-sts.fetch",
        "mta-sts.mx-covered",
        "tls-rpt.txt",
        "mx.address",
        "dane.tlsa",
        "smtp.starttls",
        "dane.match",
        "mta-sts.certificate",
        "certificate.expiry",
    ] {
        assert_eq!(status(c).as_deref(), Some("pass"), "{c}: {doc:#}");
    }
    // The anchor is the zone's own key: the DS check says it was skipped, and why.
    assert_eq!(status("dnssec.ds").as_deref(), Some("skip"));

    // The same as text.
    let resolver = lab.resolver();
    let out = mxguard(&[
        "check",
        "-c",
        &cfg,
        "--resolver",
        &resolver,
        "--trust-anchor",
        &lab.anchor.to_string_lossy(),
        "--ca-file",
        &lab.cas.to_string_lossy(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.starts_with("example.com: DANE ok  MTA-STS ok (enforce)  TLS-RPT ok\n  mx1.example.com: DANE ok  MTA-STS ok  [127.0.0.1]"),
        "{text}"
    );
    assert!(text.contains("skip dnssec.ds example.com: the trust anchor is the zone's own key"));

    // As an outside auditor: no config, the policy and SMTP ports given.
    let (code, doc, err) = lab.audit(lab.p.https, lab.mx.addr().port());
    assert_eq!(code, 0, "{doc:#}\n{err}");
    assert_eq!(doc["domains"][0]["dane"], "ok");
    assert_eq!(doc["domains"][0]["mta_sts"], "ok");

    // A config that names another CA than the CAA records allow (edited, not reloaded).
    let text = fs::read_to_string(lab.p.config()).unwrap();
    fs::write(
        lab.p.config(),
        text.replace(
            "caa_issuer = \"ca.lab.example\"",
            "caa_issuer = \"other-ca.example\"",
        ),
    )
    .unwrap();
    let (code, doc, _) = lab.check(&["-c", &cfg]);
    assert_eq!(code, 1, "{doc:#}");
    assert!(
        has_failure(
            &doc,
            "caa",
            "example.com",
            "does not let other-ca.example issue"
        ),
        "{:#?}",
        failures(&doc)
    );
    fs::write(lab.p.config(), text).unwrap();

    // Usage errors exit 2.
    let out = mxguard(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --domain"));
    let out = mxguard(&["check", "-c", &cfg, "--domain", "example.org"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("example.org is not a domain of"));
}

#[test]
fn negative_controls_name_their_problem() {
    let lab = lab("mode = \"enforce\"\nmax_age = 604800\n");
    let dir = lab.p.path("negative");
    fs::create_dir_all(&dir).unwrap();

    // 1. The MX presents a key that no TLSA record names (and a chain senders do not trust
    //    for that name: a certificate for another host).
    let (c, k) = lab
        .test_ca
        .leaf(&dir, "other", &["other.example.net"], (2020, 2090));
    let other = StandInMx::start(c, k, Duration::ZERO);
    let (code, doc, err) = lab.audit(lab.p.https, other.addr().port());
    assert_eq!(code, 1, "{doc:#}\n{err}");
    assert!(
        has_failure(&doc, "dane.match", MX, "matches no TLSA record"),
        "{:#?}",
        failures(&doc)
    );
    assert!(
        has_failure(&doc, "mta-sts.certificate", MX, "not valid for this name"),
        "{:#?}",
        failures(&doc)
    );
    assert_eq!(doc["domains"][0]["mx"][0]["dane"], "fail");
    assert_eq!(doc["domains"][0]["mta_sts"], "fail");
    // As text: one line per problem with what was seen and the fix.
    let resolver = lab.resolver();
    let port = other.addr().port().to_string();
    let https = lab.p.https.to_string();
    let out = mxguard(&[
        "check",
        "--domain",
        "example.com",
        "--resolver",
        &resolver,
        "--trust-anchor",
        &lab.anchor.to_string_lossy(),
        "--ca-file",
        &lab.cas.to_string_lossy(),
        "--https-port",
        &https,
        "--smtp-port",
        &port,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.lines().any(|l| l
            .starts_with("  FAIL dane.match mx1.example.com: the key presented at 127.0.0.1:")
            && l.contains("— fix: ")),
        "{text}"
    );
    drop(other);

    // 2. An expired certificate for the right name.
    let (c, k) = lab.test_ca.leaf(&dir, "expired", &[MX], (2020, 2021));
    let expired = StandInMx::start(c, k, Duration::ZERO);
    let (code, doc, _) = lab.audit(lab.p.https, expired.addr().port());
    assert_eq!(code, 1);
    assert!(
        has_failure(&doc, "mta-sts.certificate", MX, "expired"),
        "{:#?}",
        failures(&doc)
    );
    assert!(has_failure(
        &doc,
        "certificate.expiry",
        MX,
        "expired 2021-01-01"
    ));
    drop(expired);

    // 3. The policy host answers 404, then serves an enforce policy that leaves the MX out.
    let nginx = Nginx::start(&lab, &dir);
    let (code, doc, _) = lab.audit(nginx.port, lab.mx.addr().port());
    assert_eq!(code, 1);
    assert!(
        has_failure(&doc, "mta-sts.fetch", "mta-sts.example.com", "HTTP 404"),
        "{:#?}",
        failures(&doc)
    );
    nginx.serve_policy(
        "version: STSv1\r\nmode: enforce\r\nmx: mx9.example.com\r\nmax_age: 86400\r\n",
    );
    let (code, doc, _) = lab.audit(nginx.port, lab.mx.addr().port());
    assert_eq!(code, 1);
    assert!(
        has_failure(
            &doc,
            "mta-sts.mx-covered",
            MX,
            "matched by no policy mx pattern"
        ),
        "{:#?}",
        failures(&doc)
    );
    // The DANE side of the same MX is still fine.
    assert_eq!(doc["domains"][0]["mx"][0]["dane"], "ok");
    assert!(
        doc["domains"][0]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["check"] == "mta-sts.dead-pattern" && c["status"] == "warn")
    );
    drop(nginx);

    // 4. A wrong trust anchor: another key for the zone. Everything is bogus.
    let keydir = dir.join("keys");
    fs::create_dir_all(&keydir).unwrap();
    let out = Command::new(crate::dns::tool("dnssec-keygen", "bind9-utils"))
        .args(["-q", "-a", "ECDSAP256SHA256", "-f", "KSK", "-K"])
        .arg(&keydir)
        .arg("example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stem = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let wrong = keydir.join(format!("{stem}.key"));
    let wrong_s = wrong.to_string_lossy().into_owned();
    let cfg = lab.p.config_str();
    let (code, doc, err) = lab.check(&["-c", &cfg, "--trust-anchor", &wrong_s]);
    assert_eq!(code, 1, "{doc:#}\n{err}");
    assert!(
        has_failure(&doc, "dns.mx", "example.com", "bogus"),
        "{doc:#}\n{err}"
    );
    assert_eq!(doc["domains"][0]["dane"], "fail");

    // 5. A DS that matches no key of the zone: refused up front, naming the DS.
    let ds = fs::read_to_string(&lab.anchor).unwrap();
    let last = ds.trim_end().chars().last().unwrap();
    let flipped = if last == '0' { '1' } else { '0' };
    let bad = format!("{}{flipped}\n", &ds.trim_end()[..ds.trim_end().len() - 1]);
    let bad_path = dir.join("bad.ds");
    fs::write(&bad_path, bad).unwrap();
    let bad_s = bad_path.to_string_lossy().into_owned();
    let (code, _, err) = lab.check(&["-c", &cfg, "--trust-anchor", &bad_s]);
    assert_eq!(code, 1);
    assert!(err.contains("matches no DNSKEY the zone serves"), "{err}");
}

/// nginx as a policy host other than mxguard, with a certificate from the lab CA.
struct Nginx {
    port: u16,
    root: PathBuf,
    _proc: Proc,
}

impl Nginx {
    fn start(lab: &Lab, dir: &Path) -> Nginx {
        let port = free_port();
        let root = dir.join("www");
        fs::create_dir_all(root.join(".well-known")).unwrap();
        let (cert, key) = lab
            .test_ca
            .leaf(dir, "mta-sts", &["mta-sts.example.com"], (2020, 2090));
        // One nginx process (no master, so killing it leaves no worker behind); the files are
        // made readable to all in case it runs as another user.
        let _ = Command::new("chmod")
            .arg("a+rx")
            .arg(lab.p.dir.path())
            .status();
        let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(dir).status();
        let conf = dir.join("nginx.conf");
        fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  default_type text/plain;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    server_name mta-sts.example.com;\n    ssl_certificate {c};\n    ssl_certificate_key {k};\n    root {r};\n  }}\n}}\n",
                d = dir.display(),
                c = cert.display(),
                k = key.display(),
                r = root.display()
            ),
        )
        .unwrap();
        let child = Command::new(crate::dns::tool("nginx", "nginx-light"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let n = Nginx {
            port,
            root,
            _proc: Proc(child),
        };
        wait_for("nginx to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        n
    }

    fn serve_policy(&self, text: &str) {
        let f = self.root.join(".well-known/mta-sts.txt");
        fs::write(&f, text).unwrap();
        let _ = Command::new("chmod").arg("a+r").arg(&f).status();
    }
}

/// A webhook receiver: collects request bodies, answers 204.
struct Hook {
    port: u16,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Hook {
    fn start() -> Hook {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let b = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut r = BufReader::new(stream);
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len.min(1 << 20)];
                if r.read_exact(&mut body).is_ok() {
                    b.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                }
                let _ = r
                    .get_mut()
                    .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            }
        });
        Hook { port, bodies }
    }

    fn all(&self) -> String {
        self.bodies.lock().unwrap().join("\n")
    }
}

pub(crate) fn metrics(p: &Project) -> String {
    let out = Command::new("curl")
        .args(["-sS", &format!("http://127.0.0.1:{}/metrics", p.admin)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_daemon_checks_itself_and_alerts_on_each_transition() {
    // The webhook is the TLS-RPT alert webhook ([tlsrpt] takes effect on restart only).
    let hook = Hook::start();
    let lab = lab_with(
        "mode = \"enforce\"\nmax_age = 604800\n",
        &format!(
            "[tlsrpt.alerts]\nwebhook = \"http://127.0.0.1:{}/hook\"\n",
            hook.port
        ),
    );
    // Turn the checks on, through the lab's resolver and anchor, with an alert webhook.
    let cfg = fs::read_to_string(lab.p.config()).unwrap();
    let on = format!(
        "[check]\ninterval = \"1h\"\nresolver = \"{}\"\ntrust_anchor = \"{}\"\nca_file = \"{}\"\n\n",
        lab.resolver(),
        lab.anchor.display(),
        lab.cas.display()
    );
    assert!(cfg.contains(CHECKS_OFF));
    fs::write(lab.p.config(), cfg.replace(CHECKS_OFF, &on)).unwrap();
    lab.d.reload();
    let ok =
        format!("mxguard_check_ok{{domain=\"example.com\",mx=\"{MX}\",check=\"dane.match\"}} 1\n");
    wait_for("a passing self-check", Duration::from_secs(30), || {
        metrics(&lab.p).contains(&ok).then_some(())
    });
    let m = metrics(&lab.p);
    assert!(m.contains("mxguard_check_run_ok 1\n"), "{m}");
    assert!(
        m.contains("mxguard_check_last_run_timestamp_seconds "),
        "{m}"
    );
    assert!(
        !m.lines()
            .any(|l| l.starts_with("mxguard_check_ok") && l.ends_with(" 0")),
        "nothing fails in the good lab:\n{m}"
    );

    // The MX starts presenting a key that no TLSA record names: the reload runs the checks,
    // the metric drops, the log and the webhook say what broke.
    let dir = lab.p.path("monitor");
    fs::create_dir_all(&dir).unwrap();
    let (c, k) = lab.test_ca.leaf(&dir, "rogue", &[MX], (2020, 2090));
    let rogue = StandInMx::start(c, k, Duration::ZERO);
    let good = lab.mx.addr().to_string();
    let cfg = fs::read_to_string(lab.p.config()).unwrap();
    fs::write(
        lab.p.config(),
        cfg.replace(&good, &rogue.addr().to_string()),
    )
    .unwrap();
    lab.d.reload();
    let failing = ok.replace("} 1\n", "} 0\n");
    wait_for("the failing self-check", Duration::from_secs(30), || {
        metrics(&lab.p).contains(&failing).then_some(())
    });
    wait_for("the failure alert", Duration::from_secs(30), || {
        let all = hook.all();
        (all.contains("\"state\":\"failing\"") && all.contains("dane.match")).then_some(())
    });
    let log = lab.d.log_text();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("posture check failing")
            && l.contains("check=dane.match")),
        "{log}"
    );

    // Back to the right MX: recovery is reported once.
    let cfg = fs::read_to_string(lab.p.config()).unwrap();
    fs::write(
        lab.p.config(),
        cfg.replace(&rogue.addr().to_string(), &good),
    )
    .unwrap();
    lab.d.reload();
    wait_for("the recovery alert", Duration::from_secs(30), || {
        let all = hook.all();
        (all.contains("\"state\":\"recovered\"") && metrics(&lab.p).contains(&ok)).then_some(())
    });
    assert!(lab.d.log_text().contains("posture check recovered"));
}
