//! The optional SMTP listener for TLS-RPT reports sent by mail (RFC 8460 `rua=mailto:`).
//!
//! Owns: [`SmtpSettings`] (a `[tlsrpt.smtp]`-style config section and its validation), the
//! command parser (`parse_command`, pure), and [`serve`]: an RFC 5321 receiver that accepts
//! mail only for the configured report addresses, takes the report out of each message with
//! `crate::tlsrpt::mailreport::find_report` and hands it to [`Intake::ingest`].
//!
//! Must not touch: config files, the CLI, the report store's SQL (through [`Intake`] only),
//! certificates (the caller passes a ready `rustls::ServerConfig`).
//!
//! Replies after DATA: `250` only once `Intake::ingest` has returned (the report is committed,
//! new or a duplicate); `554 5.6.0` with the reason when the message holds no report or the
//! report does not decode or parse; `552 5.3.4` when it is too large; `451 4.3.0` when storage
//! failed (the sender retries). Nothing is relayed and no bounce is ever sent.
//!
//! Protocol: EHLO/HELO, MAIL (with `SIZE=` and `BODY=`), RCPT, DATA (dot-unstuffing; the end is
//! `CRLF.CRLF` only), RSET, NOOP, QUIT, VRFY (`252`), HELP. Advertised: PIPELINING (input is
//! buffered, replies are flushed before waiting for more input), SIZE, 8BITMIME,
//! ENHANCEDSTATUSCODES and, when a TLS config is given, STARTTLS (offered, never required:
//! reports about TLS failures may have to arrive in plaintext). Input pipelined behind STARTTLS
//! is discarded. Limits: a command line of [`MAX_COMMAND_LINE`] octets, a data line of
//! [`MAX_DATA_LINE`], [`MAX_RECIPIENTS`] per message, [`MAX_ERRORS`] error replies per
//! session, `max_message_bytes` per message (a sender that keeps going past twice that is
//! disconnected), `max_connections` sessions (more are told `421`), and `timeout_secs` for
//! every read, write and TLS handshake.
//!
//! Parts: `command` (the command parser, pure), `conn` (buffered, bounded, timed I/O),
//! `session` (the state machine and delivery to the intake).

mod command;
mod conn;
mod session;

#[allow(unused_imports)]
// each child's items, for the others, the tests and (pub ones) the crate
pub use command::*;
#[allow(unused_imports)]
// each child's items, for the others, the tests and (pub ones) the crate
pub use conn::*;
#[allow(unused_imports)]
// each child's items, for the others, the tests and (pub ones) the crate
pub use session::*;

use crate::tlsrpt::intake::Intake;
use serde::{Deserialize, Serialize};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Longest command line accepted, CRLF included (RFC 5321 allows 512; extensions add more).
pub const MAX_COMMAND_LINE: usize = 2048;

/// Longest line accepted inside DATA, CRLF included (RFC 5321 says 1000; senders exceed it).
pub const MAX_DATA_LINE: usize = 64 * 1024;

/// Recipients accepted per message.
pub const MAX_RECIPIENTS: usize = 50;

/// Error replies after which a session is closed.
pub const MAX_ERRORS: usize = 20;

/// How long [`serve`] waits for open sessions after shutdown before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Messages at most this large are searched on the async thread.
const INLINE_PARSE_MAX: usize = 64 * 1024;

/// Longest reason text put in a reply.
const MAX_REPLY_TEXT: usize = 400;

/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

fn default_max_message_bytes() -> usize {
    10 * 1024 * 1024
}

fn default_max_connections() -> usize {
    100
}

fn default_timeout_secs() -> u64 {
    300
}

/// The SMTP listener's settings (a `[tlsrpt.smtp]`-style config section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// Where to listen, e.g. `"0.0.0.0:25"`.
    pub listen: SocketAddr,
    /// The report addresses (`local@domain`, as in `rua=mailto:`); mail to anyone else is
    /// refused with `550 5.1.1`.
    pub addresses: Vec<String>,
    /// Largest message accepted, in bytes (default 10 MiB); advertised as `SIZE`.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Concurrent sessions (default 100); more are answered `421` and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds allowed for each read, write and TLS handshake (default 300, RFC 5321 4.5.3.2).
    #[serde(
        default = "default_timeout_secs",
        deserialize_with = "crate::duration::secs"
    )]
    pub timeout_secs: u64,
}

impl SmtpSettings {
    /// Settings with the defaults for everything but `listen` and `addresses`.
    pub fn new(listen: SocketAddr, addresses: Vec<String>) -> SmtpSettings {
        SmtpSettings {
            listen,
            addresses,
            max_message_bytes: default_max_message_bytes(),
            max_connections: default_max_connections(),
            timeout_secs: default_timeout_secs(),
        }
    }

    /// Every problem, each prefixed with `prefix.` and the key.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.addresses.is_empty() {
            problems.push(format!(
                "{prefix}.addresses: list at least one report address, e.g. [\"tlsrpt@example.org\"]"
            ));
        }
        let mut seen: Vec<(String, String)> = Vec::new();
        for (i, address) in self.addresses.iter().enumerate() {
            match split_address(address) {
                Some(parts) if seen.contains(&parts) => problems.push(format!(
                    "{prefix}.addresses[{i}]: {address:?} is listed twice"
                )),
                Some(parts) => seen.push(parts),
                None => problems.push(format!(
                    "{prefix}.addresses[{i}]: {address:?} is not a mail address like \"tlsrpt@example.org\" (no \"mailto:\", no <>)"
                )),
            }
        }
        if self.max_message_bytes < 1024 {
            problems.push(format!(
                "{prefix}.max_message_bytes: {} is too small; report mails need at least 1024 bytes (default 10485760)",
                self.max_message_bytes
            ));
        }
        if self.max_connections == 0 {
            problems.push(format!("{prefix}.max_connections: must be at least 1"));
        }
        if self.timeout_secs == 0 {
            problems.push(format!("{prefix}.timeout_secs: must be at least 1"));
        }
        problems
    }
}

/// `(local part, lowercased domain without trailing dot)` of a plain `local@domain` address.
fn split_address(address: &str) -> Option<(String, String)> {
    let (local, domain) = address.rsplit_once('@')?;
    let bad = |s: &str| {
        s.is_empty()
            || s.chars()
                .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\"\\".contains(c))
    };
    let domain = crate::tlsrpt::normalize_domain(domain);
    if bad(local) || bad(&domain) || domain.contains('@') || local.contains('@') {
        return None;
    }
    Some((local.to_string(), domain))
}

/// `s` without control characters, at most `max` bytes.
fn clean(s: &str, max: usize) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    crate::tlsrpt::truncate(&s, max)
}

/// Errors that end a session early. Each carries the peer.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("{peer}: connection error: {source}")]
    Io {
        peer: String,
        #[source]
        source: io::Error,
    },
    #[error("{peer}: TLS handshake failed: {source}")]
    Tls {
        peer: String,
        #[source]
        source: io::Error,
    },
    #[error("{peer}: no data within {after:?}")]
    Timeout { peer: String, after: Duration },
}

/// The shared, immutable context of all sessions.
struct Ctx {
    /// `(local part, domain)` of each accepted address.
    addresses: Vec<(String, String)>,
    /// The name in the greeting and EHLO reply.
    name: String,
    max_message_bytes: usize,
    timeout: Duration,
    tls: Option<TlsAcceptor>,
    intake: Arc<Intake>,
    shutdown: CancellationToken,
}

impl Ctx {
    fn accepts(&self, rcpt: &str) -> bool {
        let Some((local, domain)) = rcpt.rsplit_once('@') else {
            return false;
        };
        let domain = crate::tlsrpt::normalize_domain(domain);
        self.addresses
            .iter()
            .any(|(l, d)| l.eq_ignore_ascii_case(local) && *d == domain)
    }
}

/// Serves SMTP on `listener` until `shutdown` fires, then closes idle sessions with `421` and
/// waits up to a few seconds for busy ones. `tls`, when given, is offered as STARTTLS.
pub async fn serve(
    listener: TcpListener,
    settings: SmtpSettings,
    tls: Option<Arc<rustls::ServerConfig>>,
    intake: Arc<Intake>,
    shutdown: CancellationToken,
) {
    let span = tracing::info_span!("smtp");
    serve_inner(listener, settings, tls, intake, shutdown)
        .instrument(span)
        .await
}

async fn serve_inner(
    listener: TcpListener,
    settings: SmtpSettings,
    tls: Option<Arc<rustls::ServerConfig>>,
    intake: Arc<Intake>,
    shutdown: CancellationToken,
) {
    let addresses: Vec<(String, String)> = settings
        .addresses
        .iter()
        .filter_map(|a| split_address(a))
        .collect();
    let name = addresses
        .first()
        .map(|(_, d)| d.clone())
        .unwrap_or_else(|| "localhost".to_string());
    let ctx = Arc::new(Ctx {
        addresses,
        name,
        max_message_bytes: settings.max_message_bytes,
        timeout: Duration::from_secs(settings.timeout_secs.max(1)),
        tls: tls.map(TlsAcceptor::from),
        intake,
        shutdown: shutdown.clone(),
    });
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let mut sessions = JoinSet::new();
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        starttls = ctx.tls.is_some(),
        addresses = ?settings.addresses,
        "smtp listening"
    );
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Usually out of file descriptors: give sessions a moment to end.
                if let Some(suppressed) = crate::logfield::throttle("smtp accept failed") {
                    tracing::warn!(err = %e, suppressed, "smtp accept failed");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            if let Some(suppressed) = crate::logfield::throttle("smtp connection refused") {
                tracing::warn!(%peer, max = settings.max_connections, suppressed, "smtp connection refused: too many sessions");
            }
            // Best effort, never blocks the accept loop.
            let _ = stream.try_write(b"421 4.3.2 too many connections, try again later\r\n");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx = Arc::clone(&ctx);
        let span = tracing::info_span!("smtp_session", %peer);
        sessions.spawn(
            async move {
                let _permit = permit;
                if let Err(e) = session(stream, peer.to_string(), &ctx).await {
                    tracing::info!(err = %crate::logfield::untrusted(&e), "smtp session ended with an error");
                }
            }
            .instrument(span),
        );
    }
    drop(listener);
    let open = sessions.len();
    if open > 0 {
        tracing::info!(open, "smtp waiting for sessions to end");
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = sessions.len(),
                "smtp sessions still open after the grace period; dropping them"
            );
            sessions.shutdown().await;
        }
    }
    tracing::info!("smtp stopped");
}

/// Runs one session on any byte stream (a TCP socket in production).
async fn session<S>(stream: S, peer: String, ctx: &Ctx) -> Result<(), SmtpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tracing::debug!("smtp session started");
    let mut conn = Conn::new(stream, ctx.timeout);
    conn.reply(220, &format!("{} ESMTP mxguard TLS-RPT intake", ctx.name));
    let mut state = State::default();
    let next = run(&mut conn, &mut state, ctx, false)
        .await
        .map_err(|e| e.into_smtp(&peer))?;
    if next != Next::StartTls {
        return Ok(());
    }
    let Some(acceptor) = &ctx.tls else {
        return Ok(());
    };
    if conn.pos < conn.buf.len()
        && let Some(suppressed) = crate::logfield::throttle("input pipelined after STARTTLS")
    {
        tracing::warn!(
            bytes = conn.buf.len() - conn.pos,
            suppressed,
            "discarding input pipelined after STARTTLS"
        );
    }
    let stream = conn.io;
    let tls = match tokio::time::timeout(ctx.timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(SmtpError::Tls { peer, source }),
        Err(_) => {
            return Err(SmtpError::Timeout {
                peer,
                after: ctx.timeout,
            });
        }
    };
    tracing::debug!("smtp session secured with TLS");
    let mut conn = Conn::new(tls, ctx.timeout);
    let mut state = State::default();
    run(&mut conn, &mut state, ctx, true)
        .await
        .map_err(|e| e.into_smtp(&peer))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlsrpt::intake::IntakeError;
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn parses_the_commands() {
        assert_eq!(
            parse_command(b"EHLO client.example\r\n"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(
            parse_command(b"helo [127.0.0.1]"),
            Ok(Command::Helo("[127.0.0.1]".into()))
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<a@b.example> SIZE=1234 BODY=8BITMIME\r\n"),
            Ok(Command::Mail {
                from: "a@b.example".into(),
                size: Some(1234)
            })
        );
        assert_eq!(
            parse_command(b"mail from: <>"),
            Ok(Command::Mail {
                from: String::new(),
                size: None
            })
        );
        assert_eq!(
            parse_command(b"RCPT TO:<@relay.example:tlsrpt@example.org>"),
            Ok(Command::Rcpt {
                to: "tlsrpt@example.org".into()
            })
        );
        assert_eq!(
            parse_command(b"RCPT TO:tlsrpt@example.org"),
            Ok(Command::Rcpt {
                to: "tlsrpt@example.org".into()
            })
        );
        for (line, cmd) in [
            (&b"DATA"[..], Command::Data),
            (b"rset", Command::Rset),
            (b"NOOP whatever", Command::Noop),
            (b"QUIT\r\n", Command::Quit),
            (b"VRFY postmaster", Command::Vrfy),
            (b"HELP", Command::Help),
            (b"StartTLS", Command::StartTls),
        ] {
            assert_eq!(parse_command(line), Ok(cmd));
        }
    }

    #[test]
    fn refuses_bad_commands_with_the_right_codes() {
        let code = |l: &[u8]| parse_command(l).unwrap_err().code().0;
        assert_eq!(code(b"FOO bar"), 500);
        assert_eq!(code(b""), 500);
        assert_eq!(code(b"EXPN list"), 502);
        assert_eq!(code(b"BDAT 100 LAST"), 502);
        assert_eq!(code(b"EHLO"), 501);
        assert_eq!(code(b"MAIL TO:<a@b>"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b> SIZE=12x"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b> SIZE=99999999999999999999999"), 501);
        assert_eq!(code(b"MAIL FROM:<a@b> AUTH=<>"), 555);
        assert_eq!(code(b"RCPT TO:<a@b> NOTIFY=NEVER"), 555);
        assert_eq!(code(b"RCPT TO:<>"), 501);
        assert_eq!(code(b"DATA now"), 501);
        assert_eq!(code(b"STARTTLS please"), 501);
        let e = parse_command(b"MAIL FROM:<a@b> X-FOO=1").unwrap_err();
        assert_eq!(e.to_string(), "unsupported parameter \"X-FOO=1\" in MAIL");
    }

    #[test]
    fn settings_defaults_and_validation() {
        let s: SmtpSettings =
            toml::from_str("listen = \"127.0.0.1:2525\"\naddresses = [\"tlsrpt@example.org\"]\n")
                .unwrap();
        assert_eq!(s.max_message_bytes, 10 * 1024 * 1024);
        assert_eq!(s.max_connections, 100);
        assert_eq!(s.timeout_secs, 300);
        assert!(s.validate("tlsrpt.smtp").is_empty());
        let e = toml::from_str::<SmtpSettings>(
            "listen = \"127.0.0.1:25\"\naddresses = []\nmax_mesage_bytes = 1\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let bad = SmtpSettings {
            addresses: vec![
                "mailto:x@example.org".into(),
                "a@Example.org".into(),
                "a@example.org.".into(),
                "nobody".into(),
            ],
            max_message_bytes: 10,
            max_connections: 0,
            timeout_secs: 0,
            ..SmtpSettings::new("127.0.0.1:25".parse().unwrap(), vec![])
        };
        let problems = bad.validate("tlsrpt.smtp");
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(problems[0].starts_with("tlsrpt.smtp.addresses[0]: \"mailto:x@example.org\""));
        assert!(
            problems[1].starts_with("tlsrpt.smtp.addresses[2]: \"a@example.org.\" is listed twice")
        );
        assert!(problems[2].starts_with("tlsrpt.smtp.addresses[3]"));
        assert!(problems[3].starts_with("tlsrpt.smtp.max_message_bytes"));
        assert!(problems[4].starts_with("tlsrpt.smtp.max_connections"));
        assert!(problems[5].starts_with("tlsrpt.smtp.timeout_secs"));
        let empty = SmtpSettings::new("127.0.0.1:25".parse().unwrap(), vec![]);
        assert_eq!(
            empty.validate("s"),
            vec![
                "s.addresses: list at least one report address, e.g. [\"tlsrpt@example.org\"]"
                    .to_string()
            ]
        );
    }

    fn test_ctx(dir: &std::path::Path, shutdown: CancellationToken) -> Ctx {
        let store = crate::tlsrpt::store::ReportsHandle::open(&dir.join("r.sqlite3")).unwrap();
        let intake = Arc::new(Intake::new(store, Default::default()));
        Ctx {
            addresses: vec![("tlsrpt".into(), "example.org".into())],
            name: "example.org".into(),
            max_message_bytes: 4096,
            timeout: Duration::from_secs(5),
            tls: None,
            intake,
            shutdown,
        }
    }

    /// Runs one session over an in-memory pipe with `input`, returning everything it wrote.
    async fn converse(ctx: &Ctx, input: &[u8]) -> String {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (mut rx, mut tx) = tokio::io::split(client);
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            let _ = tx.write_all(&input).await;
            let _ = tx.shutdown().await;
        });
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            let _ = rx.read_to_end(&mut out).await;
            out
        });
        let _ = session(server, "test".into(), ctx).await;
        writer.await.unwrap();
        String::from_utf8_lossy(&reader.await.unwrap()).into_owned()
    }

    fn codes(transcript: &str) -> Vec<u16> {
        transcript
            .lines()
            .filter(|l| l.as_bytes().get(3) == Some(&b' '))
            .filter_map(|l| l[..3].parse().ok())
            .collect()
    }

    #[tokio::test]
    async fn pipelined_session_in_one_packet() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = test_ctx(dir.path(), CancellationToken::new());
        let out = converse(
            &ctx,
            b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<nobody@example.org>\r\nRCPT TO:<tlsrpt@EXAMPLE.org>\r\nDATA\r\n\
              Subject: hi\r\n\r\n..leading dot\r\n.\r\nNOOP\r\nVRFY x\r\nRSET\r\nQUIT\r\n",
        )
        .await;
        assert_eq!(
            codes(&out),
            vec![220, 250, 250, 550, 250, 354, 554, 250, 252, 250, 221],
            "{out}"
        );
        assert!(
            out.contains("no TLS-RPT report in message: found text/plain"),
            "{out}"
        );
        assert!(out.contains("250-SIZE 4096"), "{out}");
        assert!(!out.contains("STARTTLS"), "{out}");
    }

    #[tokio::test]
    async fn recipient_addresses_compare_without_case() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = test_ctx(dir.path(), CancellationToken::new());
        let out = converse(
            &ctx,
            b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<TLSRPT@EXAMPLE.ORG>\r\nRCPT TO:<TlsRpt@example.org>\r\nRCPT TO:<tlsrpt2@example.org>\r\nQUIT\r\n",
        )
        .await;
        assert_eq!(
            codes(&out),
            vec![220, 250, 250, 250, 250, 550, 221],
            "{out}"
        );
    }

    #[tokio::test]
    async fn order_and_size_errors() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = test_ctx(dir.path(), CancellationToken::new());
        let big = "x".repeat(100);
        let mut input =
            String::from("MAIL FROM:<a@b>\r\nEHLO c\r\nRCPT TO:<tlsrpt@example.org>\r\nDATA\r\n");
        input.push_str(
            "MAIL FROM:<a@b> SIZE=5000\r\nMAIL FROM:<a@b> SIZE=10\r\nMAIL FROM:<a@b>\r\nDATA\r\n",
        );
        input.push_str("RCPT TO:<tlsrpt@example.org>\r\nDATA\r\n");
        for _ in 0..60 {
            input.push_str(&big);
            input.push_str("\r\n");
        }
        input.push_str(".\r\nSTARTTLS\r\n");
        input.push_str(&"y".repeat(MAX_COMMAND_LINE + 10));
        input.push_str("\r\nQUIT\r\n");
        let out = converse(&ctx, input.as_bytes()).await;
        assert_eq!(
            codes(&out),
            vec![
                220, 503, 250, 503, 503, 552, 250, 503, 554, 250, 354, 552, 502, 500, 221
            ],
            "{out}"
        );
    }

    #[tokio::test]
    async fn shutdown_closes_idle_sessions_with_421() {
        let dir = tempfile::tempdir().unwrap();
        let token = CancellationToken::new();
        let ctx = test_ctx(dir.path(), token.clone());
        let (mut client, server) = tokio::io::duplex(4096);
        let task = async { session(server, "t".into(), &ctx).await };
        let talk = async {
            let mut buf = vec![0u8; 512];
            let n = client.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"220 "));
            token.cancel();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            String::from_utf8(rest).unwrap()
        };
        let (r, text) = tokio::join!(task, talk);
        r.unwrap();
        assert!(text.starts_with("421 4.3.0"), "{text}");
    }

    #[tokio::test]
    async fn an_idle_client_is_told_421_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let mut ctx = test_ctx(dir.path(), CancellationToken::new());
        ctx.timeout = Duration::from_millis(200);
        let (mut client, server) = tokio::io::duplex(4096);
        let talk = async {
            client.write_all(b"EHLO c\r\n").await.unwrap();
            let mut out = Vec::new();
            // The session closes its end after the 421; read until then.
            tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut out))
                .await
                .expect("session ends by the deadline")
                .unwrap();
            String::from_utf8(out).unwrap()
        };
        let (r, text) = tokio::join!(session(server, "t".into(), &ctx), talk);
        assert!(matches!(r, Err(SmtpError::Timeout { .. })), "{r:?}");
        assert!(
            text.ends_with("421 4.4.2 idle too long, closing connection\r\n"),
            "{text}"
        );
    }

    #[test]
    fn intake_errors_map_to_smtp_replies() {
        let storage = IntakeError::Storage(crate::tlsrpt::store::ReportsError::WriterGone {
            path: "/x".into(),
        });
        assert_eq!(intake_reply(&storage), (451, "4.3.0"));
        let gzip = IntakeError::Decode(crate::tlsrpt::DecodeError::Gzip {
            reason: "truncated stream".into(),
        });
        assert_eq!(intake_reply(&gzip), (554, "5.6.0"));
        let big =
            IntakeError::Decode(crate::tlsrpt::DecodeError::DecompressedTooLarge { limit: 1 });
        assert_eq!(intake_reply(&big), (552, "5.3.4"));
        let parse = crate::tlsrpt::parse_report(b"{}").unwrap_err();
        assert_eq!(intake_reply(&IntakeError::Parse(parse)), (554, "5.6.0"));
    }

    #[test]
    fn parse_command_never_panics_on_samples() {
        for line in [
            &b"MAIL FROM:<"[..],
            b"RCPT TO:<@",
            b"RCPT TO:<@:>",
            b"\xff\xfe",
            b"MAIL FROM:<>x",
        ] {
            let _ = parse_command(line);
        }
    }

    proptest! {
        #[test]
        fn parse_command_never_panics(line in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_command(&line);
        }

        #[test]
        fn parse_command_never_panics_on_command_shapes(
            verb in prop_oneof![Just("MAIL FROM:"), Just("RCPT TO:"), Just("EHLO "), Just("mail from: ")],
            rest in "[<>@:=, a-zA-Z0-9\\t\\x00-\\x1f\\u{80}-\\u{10ffff}]{0,80}",
        ) {
            let _ = parse_command(format!("{verb}{rest}").as_bytes());
        }
    }

    #[test]
    fn sessions_never_panic_on_arbitrary_input() {
        use proptest::test_runner::{Config, TestRunner};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ctx = rt.block_on(async { test_ctx(dir.path(), CancellationToken::new()) });
        let line = prop_oneof![
            Just(b"EHLO x\r\n".to_vec()),
            Just(b"MAIL FROM:<a@b>\r\n".to_vec()),
            Just(b"RCPT TO:<tlsrpt@example.org>\r\n".to_vec()),
            Just(b"DATA\r\n".to_vec()),
            Just(b".\r\n".to_vec()),
            Just(b"STARTTLS\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..200),
        ];
        let mut runner = TestRunner::new(Config {
            cases: 128,
            ..Config::default()
        });
        runner
            .run(&proptest::collection::vec(line, 0..30), |lines| {
                let input = lines.concat();
                let out = rt.block_on(converse(&ctx, &input));
                prop_assert!(out.starts_with("220 "));
                Ok(())
            })
            .unwrap();
    }
}
