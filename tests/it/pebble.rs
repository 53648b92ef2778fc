//! A real Pebble ACME server (Debian package `pebble`) for the ACME tests, and
//! `pebble-challtestsrv` as the DNS server Pebble's validator resolves names through until the
//! daemon's own DNS does.
//!
//! Pebble ships no configuration and no certificate for its own API: [`Pebble::start`] writes a
//! config and makes a CA and an API certificate (kept for the life of the value, so a restarted
//! Pebble is trusted by the same `acme.ca_file`). Pebble makes a new random issuing root on
//! every start: [`Pebble::root_pem`] fetches the current one from the management port.
//! Every process is killed when its guard is dropped.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Project, free_port, wait_for};

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed: install the Debian package `pebble` (apt-get install pebble)"
    )
}

/// How to run Pebble.
#[derive(Debug, Clone)]
pub struct PebbleOptions {
    /// The DNS server Pebble's validator asks (A/AAAA, TXT for dns-01).
    pub dns: SocketAddr,
    /// Where http-01 validation connects (the daemon's `listen.http` port).
    pub http_port: u16,
    /// Where tls-alpn-01 validation connects (the daemon's `listen.https` port).
    pub tls_port: u16,
    /// Lifetime of issued certificates, seconds.
    pub validity: u64,
    /// Pebble's chaos: random validation delays (0–15 s) and 5% rejected nonces.
    pub chaos: bool,
    /// Require external account binding with this key id and base64url HMAC key.
    pub eab: Option<(String, String)>,
}

impl PebbleOptions {
    /// Options for a project's daemon: validation goes to its listeners.
    pub fn for_project(p: &Project, dns: SocketAddr) -> PebbleOptions {
        PebbleOptions {
            dns,
            http_port: p.http,
            tls_port: p.https,
            validity: 3600,
            chaos: false,
            eab: None,
        }
    }
}

/// A running Pebble; killed on drop.
pub struct Pebble {
    pub opts: PebbleOptions,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Log of the current run (a new file per start).
    pub log: PathBuf,
    pub api_port: u16,
    pub mgmt_port: u16,
    starts: u32,
}

impl Pebble {
    pub fn start(opts: PebbleOptions) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        write_api_cert(dir.path());
        let mut p = Pebble {
            opts,
            dir,
            child: None,
            log: PathBuf::new(),
            api_port: 0,
            mgmt_port: 0,
            starts: 0,
        };
        p.spawn(true);
        p
    }

    /// Trust anchor for Pebble's API (for `acme.ca_file` and curl).
    pub fn api_ca(&self) -> PathBuf {
        self.dir.path().join("api-ca.pem")
    }

    /// The ACME directory URL.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.api_port)
    }

    /// Starts Pebble; with `new_ports`, on fresh API/management ports (retried on a clash).
    fn spawn(&mut self, new_ports: bool) {
        for _ in 0..5 {
            if new_ports {
                self.api_port = free_port();
                self.mgmt_port = free_port();
            }
            let mut cfg = serde_json::json!({ "pebble": {
                "listenAddress": format!("127.0.0.1:{}", self.api_port),
                "managementListenAddress": format!("127.0.0.1:{}", self.mgmt_port),
                "certificate": self.dir.path().join("api.pem"),
                "privateKey": self.dir.path().join("api.key"),
                "httpPort": self.opts.http_port,
                "tlsPort": self.opts.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": self.opts.validity,
            }});
            if let Some((kid, key)) = &self.opts.eab {
                cfg["pebble"]["externalAccountBindingRequired"] = true.into();
                cfg["pebble"]["externalAccountMACKeys"] = serde_json::json!({ kid: key });
            }
            let cfg_path = self.dir.path().join("pebble.json");
            fs::write(&cfg_path, cfg.to_string()).unwrap();
            self.starts += 1;
            self.log = self.dir.path().join(format!("pebble-{}.log", self.starts));
            let log = fs::File::create(&self.log).unwrap();
            let mut cmd = Command::new(tool("pebble"));
            cmd.arg("-config")
                .arg(&cfg_path)
                .args(["-dnsserver", &self.opts.dns.to_string()])
                .env_remove("PEBBLE_VA_NOSLEEP")
                .env_remove("PEBBLE_WFE_NONCEREJECT")
                .env("PEBBLE_AUTHZREUSE", "0")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            if !self.opts.chaos {
                cmd.env("PEBBLE_VA_NOSLEEP", "1")
                    .env("PEBBLE_WFE_NONCEREJECT", "0");
            }
            let child = cmd.spawn().expect("run pebble");
            self.child = Some(child);
            let api: SocketAddr = format!("127.0.0.1:{}", self.api_port).parse().unwrap();
            let mgmt: SocketAddr = format!("127.0.0.1:{}", self.mgmt_port).parse().unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            let up = loop {
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    let log = self.log_text();
                    if log.contains("address already in use") && new_ports {
                        break false;
                    }
                    panic!("pebble exited with {status}:\n{log}");
                }
                let log = self.log_text();
                if log.contains("ACME directory available")
                    && TcpStream::connect(api).is_ok()
                    && TcpStream::connect(mgmt).is_ok()
                {
                    break true;
                }
                assert!(Instant::now() < deadline, "pebble did not start:\n{log}");
                std::thread::sleep(Duration::from_millis(50));
            };
            if up {
                return;
            }
            self.child = None;
        }
        panic!("pebble: no free ports after 5 tries");
    }

    /// Stops Pebble (it forgets every account, order and its roots).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a stopped Pebble again on the same ports: a new root, no accounts.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn(false);
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Accounts Pebble created in its current run (it logs the count after each one).
    pub fn accounts_created(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains("accounts in memory"))
            .count()
    }

    /// The current issuing root (PEM), written to a file for openssl and curl.
    pub fn root_pem(&self) -> PathBuf {
        let path = self.dir.path().join(format!("root-{}.pem", self.starts));
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
            .arg(self.api_ca())
            .arg(format!("https://127.0.0.1:{}/roots/0", self.mgmt_port))
            .output()
            .expect("curl is installed");
        assert!(out.status.success(), "fetching pebble root: {out:?}");
        let pem = String::from_utf8(out.stdout).unwrap();
        assert!(pem.contains("BEGIN CERTIFICATE"), "{pem}");
        fs::write(&path, pem).unwrap();
        path
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA and a certificate for 127.0.0.1/localhost, for Pebble's own HTTPS API.
fn write_api_cert(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "mxguard test: pebble API CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pebble");
    let cert = params.signed_by(&key, &issuer).unwrap();
    fs::write(dir.join("api-ca.pem"), ca_cert.pem()).unwrap();
    fs::write(dir.join("api.pem"), cert.pem()).unwrap();
    fs::write(dir.join("api.key"), key.serialize_pem()).unwrap();
}

/// `pebble-challtestsrv` as a DNS server answering every A query with 127.0.0.1 (no AAAA);
/// killed on drop.
pub struct ChallDns {
    child: Child,
    pub addr: SocketAddr,
    /// The management API (`http://127.0.0.1:PORT`).
    #[allow(dead_code)] // used by the provider test (--features providers)
    pub mgmt: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ChallDns {
    pub fn start() -> ChallDns {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let (dns, mgmt) = (free_port(), free_port());
            let log = dir.path().join(format!("challtestsrv-{dns}.log"));
            let out = fs::File::create(&log).unwrap();
            let mut child = Command::new(tool("pebble-challtestsrv"))
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .args(["-dns01", &format!("127.0.0.1:{dns}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-management", &format!("127.0.0.1:{mgmt}")])
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("run pebble-challtestsrv");
            let addr: SocketAddr = format!("127.0.0.1:{dns}").parse().unwrap();
            let started = wait_for("challtestsrv to listen", Duration::from_secs(20), || {
                if let Some(status) = child.try_wait().unwrap() {
                    return Some(Err(status));
                }
                (TcpStream::connect(addr).is_ok()
                    && TcpStream::connect(("127.0.0.1", mgmt)).is_ok())
                .then_some(Ok(()))
            });
            match started {
                Ok(()) => {
                    return ChallDns {
                        child,
                        addr,
                        mgmt: format!("http://127.0.0.1:{mgmt}"),
                        log,
                        _dir: dir,
                    };
                }
                Err(status) => {
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    assert!(
                        text.contains("address already in use"),
                        "challtestsrv exited with {status}:\n{text}"
                    );
                }
            }
        }
        panic!("challtestsrv: no free ports after 5 tries");
    }

    #[allow(dead_code)] // for debugging failed tests
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChallDns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
