//! The SMTP session state machine: greeting, EHLO, STARTTLS, MAIL, RCPT, DATA, RSET,
//! QUIT, error limits; a received message goes to the intake.

use crate::logfield::untrusted;
use crate::tlsrpt::RejectKind;
use crate::tlsrpt::intake::IntakeError;
use crate::tlsrpt::mailreport::{self, MailReportError};
use crate::tlsrpt::store::Stored;
use axum::body::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use super::*;

/// How a run of the command loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    Closed,
    StartTls,
}

/// The state of the current transaction.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) greeted: bool,
    pub(super) from: Option<String>,
    pub(super) rcpts: Vec<String>,
    pub(super) errors: usize,
}

impl State {
    pub(super) fn reset(&mut self) {
        self.from = None;
        self.rcpts.clear();
    }
}

/// The command loop. Returns when the client quits or asks for STARTTLS.
pub(super) async fn run<S>(
    conn: &mut Conn<S>,
    state: &mut State,
    ctx: &Ctx,
    secured: bool,
) -> Result<Next, ReadError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        if state.errors >= MAX_ERRORS {
            conn.reply(421, "4.7.0 too many errors, closing connection");
            conn.flush().await?;
            return Ok(Next::Closed);
        }
        let parsed = match conn.read_line(MAX_COMMAND_LINE, Some(&ctx.shutdown)).await {
            Ok(line) => parse_command(line),
            Err(ReadError::TooLong) => {
                state.errors += 1;
                conn.reply(500, "5.5.2 line too long");
                continue;
            }
            Err(ReadError::Shutdown) => {
                conn.reply(421, "4.3.0 shutting down, try again later");
                conn.flush().await?;
                return Ok(Next::Closed);
            }
            Err(ReadError::Timeout(after)) => {
                conn.reply(421, "4.4.2 idle too long, closing connection");
                let _ = conn.flush().await;
                return Err(ReadError::Timeout(after));
            }
            Err(ReadError::Eof) => return Ok(Next::Closed),
            Err(e) => return Err(e),
        };
        let command = match parsed {
            Ok(c) => c,
            Err(e) => {
                state.errors += 1;
                let (code, status) = e.code();
                conn.reply(code, &format!("{status} {e}"));
                continue;
            }
        };
        match command {
            Command::Ehlo(host) => {
                state.reset();
                state.greeted = true;
                let mut lines = vec![
                    format!("{} greets {}", ctx.name, host),
                    "PIPELINING".to_string(),
                    format!("SIZE {}", ctx.max_message_bytes),
                    "8BITMIME".to_string(),
                    "ENHANCEDSTATUSCODES".to_string(),
                ];
                if ctx.tls.is_some() && !secured {
                    lines.push("STARTTLS".to_string());
                }
                conn.reply_lines(250, &lines);
            }
            Command::Helo(host) => {
                state.reset();
                state.greeted = true;
                conn.reply(250, &format!("{} greets {}", ctx.name, host));
            }
            Command::Mail { from, size } => {
                if !state.greeted {
                    state.errors += 1;
                    conn.reply(503, "5.5.1 send EHLO or HELO first");
                } else if state.from.is_some() {
                    state.errors += 1;
                    conn.reply(503, "5.5.1 sender already given; send RSET first");
                } else if let Some(size) = size.filter(|&s| s > ctx.max_message_bytes as u64) {
                    tracing::info!(
                        size,
                        limit = ctx.max_message_bytes,
                        "smtp message refused: declared size over the limit"
                    );
                    conn.reply(
                        552,
                        &format!(
                            "5.3.4 message size {size} exceeds the limit of {} bytes",
                            ctx.max_message_bytes
                        ),
                    );
                } else {
                    state.from = Some(from);
                    conn.reply(250, "2.1.0 sender ok");
                }
            }
            Command::Rcpt { to } => {
                if state.from.is_none() {
                    state.errors += 1;
                    conn.reply(503, "5.5.1 send MAIL first");
                } else if state.rcpts.len() >= MAX_RECIPIENTS {
                    conn.reply(452, "4.5.3 too many recipients");
                } else if ctx.accepts(&to) {
                    conn.reply(250, "2.1.5 recipient ok");
                    state.rcpts.push(to);
                } else {
                    state.errors += 1;
                    tracing::info!(rcpt = %untrusted(&to), "smtp recipient refused");
                    conn.reply(
                        550,
                        &format!(
                            "5.1.1 <{}>: no such recipient here; this server only takes TLS-RPT reports",
                            clean(&to, 100)
                        ),
                    );
                }
            }
            Command::Data => {
                if state.from.is_none() {
                    state.errors += 1;
                    conn.reply(503, "5.5.1 send MAIL first");
                } else if state.rcpts.is_empty() {
                    state.errors += 1;
                    conn.reply(554, "5.5.1 no valid recipients");
                } else {
                    conn.reply(354, "end data with <CR><LF>.<CR><LF>");
                    let data = match read_data(conn, ctx.max_message_bytes).await {
                        Ok(data) => data,
                        Err(ReadError::Timeout(after)) => {
                            conn.reply(
                                421,
                                "4.4.2 message not received in time, closing connection",
                            );
                            let _ = conn.flush().await;
                            return Err(ReadError::Timeout(after));
                        }
                        Err(ReadError::Eof) => {
                            tracing::info!("smtp client closed the connection during DATA");
                            return Ok(Next::Closed);
                        }
                        Err(e) => return Err(e),
                    };
                    let (code, text) = match data {
                        Data::Message(message) => deliver(ctx, message).await,
                        Data::TooLarge { close } => {
                            tracing::info!(
                                limit = ctx.max_message_bytes,
                                "smtp message refused: over the size limit"
                            );
                            let text = format!(
                                "5.3.4 message exceeds the limit of {} bytes",
                                ctx.max_message_bytes
                            );
                            if close {
                                conn.reply(552, &text);
                                conn.flush().await?;
                                return Ok(Next::Closed);
                            }
                            (552, text)
                        }
                        Data::LineTooLong => (
                            552,
                            format!("5.3.4 message has a line longer than {MAX_DATA_LINE} bytes"),
                        ),
                    };
                    conn.reply(code, &text);
                    state.reset();
                }
            }
            Command::Rset => {
                state.reset();
                conn.reply(250, "2.0.0 reset");
            }
            Command::Noop => conn.reply(250, "2.0.0 ok"),
            Command::Vrfy => conn.reply(
                252,
                "2.5.0 cannot verify, but will take reports for the listed addresses",
            ),
            Command::Help => conn.reply(
                214,
                "2.0.0 this server takes TLS-RPT reports (RFC 8460) for its listed addresses",
            ),
            Command::Quit => {
                conn.reply(221, "2.0.0 bye");
                conn.flush().await?;
                return Ok(Next::Closed);
            }
            Command::StartTls => {
                if secured {
                    state.errors += 1;
                    conn.reply(503, "5.5.1 TLS already active");
                } else if ctx.tls.is_none() {
                    state.errors += 1;
                    conn.reply(502, "5.5.1 STARTTLS not available");
                } else {
                    conn.reply(220, "2.0.0 ready to start TLS");
                    conn.flush().await?;
                    return Ok(Next::StartTls);
                }
            }
        }
    }
}

/// Finds and stores the report in `message`; the reply to send.
pub(super) async fn deliver(ctx: &Ctx, message: Vec<u8>) -> (u16, String) {
    let size = message.len();
    let found = if size <= INLINE_PARSE_MAX {
        mailreport::find_report(&message)
    } else {
        match tokio::task::spawn_blocking(move || mailreport::find_report(&message)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(err = %e, "smtp message search task failed");
                return (451, "4.3.0 internal error, try again later".to_string());
            }
        }
    };
    let report = match found {
        Ok(r) => r,
        Err(e) => {
            let what = match &e {
                MailReportError::Malformed { .. } => "malformed",
                MailReportError::NoReport { .. } => "no_report",
            };
            tracing::info!(size, reason = what, err = %untrusted(&e), "smtp message refused");
            return (
                554,
                format!("5.6.0 {}", clean(&e.to_string(), MAX_REPLY_TEXT)),
            );
        }
    };
    tracing::debug!(
        size,
        attachment = report.data.len(),
        declared_type = %untrusted(&report.declared_type),
        submitter = %untrusted(report.submitter.as_deref().unwrap_or("")),
        "smtp report found"
    );
    let result = ctx
        .intake
        .ingest(Bytes::from(report.data), Some(report.content_type), None)
        .await;
    match result {
        Ok(Stored::New { id }) => (250, format!("2.0.0 report stored as {id}")),
        Ok(Stored::Duplicate { id }) => (250, format!("2.0.0 report already stored as {id}")),
        Err(e) => {
            let (code, status) = intake_reply(&e);
            if code == 451 {
                tracing::error!(err = %untrusted(&e), "smtp report not stored");
                (
                    451,
                    format!("{status} storage unavailable, try again later"),
                )
            } else {
                tracing::info!(code, err = %untrusted(&e), "smtp report refused");
                (
                    code,
                    format!("{status} {}", clean(&e.client_message(), MAX_REPLY_TEXT)),
                )
            }
        }
    }
}

/// The SMTP reply code and enhanced status for an intake refusal.
pub(super) fn intake_reply(e: &IntakeError) -> (u16, &'static str) {
    match e {
        IntakeError::Storage(_)
        | IntakeError::ReadTimeout { .. }
        | IntakeError::Read { .. }
        | IntakeError::Busy { .. } => (451, "4.3.0"),
        IntakeError::Expired { .. } => (250, "2.0.0"),
        IntakeError::BodyTooLarge { .. } => (552, "5.3.4"),
        IntakeError::Decode(d) if d.kind() == RejectKind::TooLarge => (552, "5.3.4"),
        IntakeError::Decode(_) | IntakeError::Parse(_) => (554, "5.6.0"),
    }
}
