//! Starts the real daemon in a temporary directory and waits for conditions with deadlines.

use std::fs;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub const BIN: &str = env!("CARGO_BIN_EXE_mxguard");

/// A loopback port that was free a moment ago.
/// A loopback port free for both TCP and UDP right now (the DNS listener needs both), never
/// handed out twice in this test run, and below Linux's ephemeral range (32768 and up): the
/// client sockets of the tests and their tools (dig, curl, knot, unbound) take random ports
/// there, and one of them could otherwise take a daemon's port before (or while restarting) it
/// binds.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    // Each run starts elsewhere in the range, so runs that overlap rarely meet.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        (std::process::id() % u32::from(SPAN)) as u16 + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
    panic!(
        "no loopback port between {FIRST} and {} free for both TCP and UDP",
        FIRST + SPAN
    );
}

/// Polls `f` every 50 ms until it returns `Some`, panicking with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the binary with arguments, returning its output.
pub fn mxguard(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run mxguard")
}

/// `mxguard reports --since 5000d --json` for a project: the TLS-RPT summary as stored.
pub fn reports_json(p: &Project) -> serde_json::Value {
    let out = mxguard(&[
        "reports",
        "-c",
        &p.config_str(),
        "--since",
        "5000d",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The posture checks are off in test daemons unless a test turns them on (replace this
/// text): they would otherwise ask the system's resolvers about the test domains.
pub const CHECKS_OFF: &str = "[check]\ninterval = 0\n\n";

/// A demo project in a temp dir: config, policies/, zones/.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub admin: u16,
    pub https: u16,
    pub http: u16,
    pub dns: u16,
}

/// One test domain: name, MX hosts, policy source text.
pub struct DomainSpec<'a> {
    pub name: &'a str,
    pub mx: &'a [&'a str],
    pub policy: &'a str,
}

impl Project {
    pub fn new(domains: &[DomainSpec<'_>]) -> Project {
        Project::with_extra(domains, "")
    }

    /// `extra` is appended to the top-level part of the config (before `[listen]`).
    pub fn with_extra(domains: &[DomainSpec<'_>], extra: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let (https, http, dns, admin) = (free_port(), free_port(), free_port(), free_port());
        fs::create_dir_all(dir.path().join("policies")).unwrap();
        fs::create_dir_all(dir.path().join("zones")).unwrap();
        let mut cfg = format!(
            "state_dir = \"state\"\n{extra}\n{CHECKS_OFF}[listen]\nhttps = \"127.0.0.1:{https}\"\nhttp = \"127.0.0.1:{http}\"\ndns = \"127.0.0.1:{dns}\"\nadmin = \"127.0.0.1:{admin}\"\n\n[acme]\ndirectory = \"local\"\n"
        );
        for d in domains {
            let mx: Vec<String> = d.mx.iter().map(|m| format!("\"{m}\"")).collect();
            cfg.push_str(&format!(
                "\n[[domain]]\nname = \"{}\"\nmx = [{}]\ntls_rpt = [\"mailto:tlsrpt@{}\"]\n",
                d.name,
                mx.join(", "),
                d.name
            ));
            fs::write(
                dir.path().join(format!("policies/{}.toml", d.name)),
                d.policy,
            )
            .unwrap();
            let mut zone = format!(
                "$ORIGIN {n}.\n$TTL 300\n@ IN SOA ns1.{n}. hostmaster.{n}. 1 7200 3600 1209600 300\n@ IN NS ns1.{n}.\nns1 IN A 127.0.0.1\nmta-sts IN A 127.0.0.1\n",
                n = d.name
            );
            for (i, m) in d.mx.iter().enumerate() {
                zone.push_str(&format!("@ IN MX {} {m}.\n", 10 + i));
                if let Some(l) = m.strip_suffix(&format!(".{}", d.name)) {
                    zone.push_str(&format!("{l} IN A 127.0.0.1\n"));
                }
            }
            fs::write(dir.path().join(format!("zones/{}.zone", d.name)), zone).unwrap();
        }
        fs::write(dir.path().join("mxguard.toml"), cfg).unwrap();
        Project {
            dir,
            https,
            http,
            dns,
            admin,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config(&self) -> PathBuf {
        self.path("mxguard.toml")
    }

    /// Appends TOML (e.g. `[[mx]]` or `[[secondary]]` tables) to the config file.
    pub fn append_config(&self, text: &str) {
        let mut cfg = fs::read_to_string(self.config()).unwrap();
        cfg.push('\n');
        cfg.push_str(text);
        fs::write(self.config(), cfg).unwrap();
    }

    pub fn config_str(&self) -> String {
        self.config().to_string_lossy().into_owned()
    }

    pub fn start(&self) -> Daemon {
        Daemon::start(self)
    }
}

/// The running daemon; killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
    pub ca: PathBuf,
    pub https: u16,
    pub http: u16,
    pub dns: u16,
}

impl Daemon {
    pub fn start(p: &Project) -> Daemon {
        let log = p.path(&format!("daemon-{}.log", free_port()));
        let child = Command::new(BIN)
            .args(["run", "-c", &p.config_str()])
            .env("RUST_LOG", "info,mxguard=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child,
            log,
            ca: p.path("state/local-ca/ca.pem"),
            https: p.https,
            http: p.http,
            dns: p.dns,
        };
        d.wait_running();
        d
    }

    fn wait_running(&mut self) {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.https).parse().unwrap();
        wait_for("daemon to listen", Duration::from_secs(30), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("daemon exited with {status}:\n{}", self.log_text());
            }
            (self.log_text().contains("mxguard running")
                && std::net::TcpStream::connect(addr).is_ok())
            .then_some(())
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGHUP and waits until the daemon has handled it (one more `reloaded` or
    /// `reload refused` line).
    pub fn reload(&self) {
        let before = self.reload_events();
        self.signal("HUP");
        wait_for("reload to be handled", Duration::from_secs(15), || {
            (self.reload_events() > before).then_some(())
        });
    }

    fn reload_events(&self) -> usize {
        let t = self.log_text();
        t.matches("reloaded").count() + t.matches("reload refused").count()
    }

    /// curl over HTTPS trusting the local CA, `host` resolved to loopback.
    pub fn curl(&self, host: &str, extra: &[&str]) -> Curl {
        curl(
            &self.ca,
            host,
            self.https,
            "/.well-known/mta-sts.txt",
            extra,
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Result of a curl call.
#[derive(Debug)]
pub struct Curl {
    pub exit: i32,
    pub status: u16,
    pub headers: String,
    pub body: String,
    pub stderr: String,
}

pub fn curl(ca: &Path, host: &str, port: u16, path: &str, extra: &[&str]) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let hdr = dir.path().join("h");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .arg("-D")
        .arg(&hdr)
        .args(["-w", "\n%{http_code}"])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("curl is installed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Curl {
        exit: out.status.code().unwrap_or(-1),
        status: code.trim().parse().unwrap_or(0),
        headers: fs::read_to_string(&hdr).unwrap_or_default(),
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A stand-in MX: SMTP with STARTTLS, reading the certificate and key files on every
/// connection (the strictest MTA: a deployed file is live at once).
pub struct StandInMx {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StandInMx {
    pub fn start(cert: PathBuf, key: PathBuf, starttls_delay: Duration) -> StandInMx {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while !stop2.load(Ordering::Relaxed) {
                    let accepted =
                        tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
                    let Ok(Ok((stream, _))) = accepted else {
                        continue;
                    };
                    let (cert, key) = (cert.clone(), key.clone());
                    tokio::spawn(async move {
                        let _ = serve_smtp(stream, &cert, &key, starttls_delay).await;
                    });
                }
            });
        });
        StandInMx {
            port,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for StandInMx {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve_smtp(
    stream: tokio::net::TcpStream,
    cert: &Path,
    key: &Path,
    delay: Duration,
) -> std::io::Result<()> {
    let mut r = BufReader::new(stream);
    r.get_mut()
        .write_all(b"220 mx1.example.com ESMTP stand-in\r\n")
        .await?;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim().to_ascii_uppercase();
        if cmd.starts_with("EHLO") {
            r.get_mut()
                .write_all(b"250-mx1.example.com\r\n250 STARTTLS\r\n")
                .await?;
        } else if cmd == "STARTTLS" {
            tokio::time::sleep(delay).await;
            // Files as deployed right now.
            let chain: Vec<_> = CertificateDer::pem_slice_iter(&fs::read(cert)?)
                .collect::<Result<_, _>>()
                .map_err(std::io::Error::other)?;
            let key =
                PrivateKeyDer::from_pem_slice(&fs::read(key)?).map_err(std::io::Error::other)?;
            let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(std::io::Error::other)?;
            r.get_mut().write_all(b"220 go ahead\r\n").await?;
            let mut tls = tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
                .accept(r.into_inner())
                .await?;
            let mut buf = [0u8; 512];
            // Answer QUIT politely; otherwise just hold until the client leaves.
            use tokio::io::AsyncReadExt;
            while let Ok(n) = tls.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tls.write_all(b"221 bye\r\n").await?;
            }
            return Ok(());
        } else if cmd == "QUIT" {
            r.get_mut().write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            r.get_mut().write_all(b"250 ok\r\n").await?;
        }
    }
}
