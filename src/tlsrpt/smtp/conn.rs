//! One connection's buffered reader and writer: bounded lines, timeouts on every read and
//! write, the DATA reader with dot-unstuffing and a size cap.

use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::*;

/// Why reading input stopped.
#[derive(Debug)]
pub(super) enum ReadError {
    TooLong,
    Timeout(Duration),
    Eof,
    Shutdown,
    Io(io::Error),
}

impl ReadError {
    pub(super) fn into_smtp(self, peer: &str) -> SmtpError {
        match self {
            ReadError::Timeout(after) => SmtpError::Timeout {
                peer: peer.to_string(),
                after,
            },
            ReadError::Io(source) => SmtpError::Io {
                peer: peer.to_string(),
                source,
            },
            other => SmtpError::Io {
                peer: peer.to_string(),
                source: io::Error::other(format!("{other:?}")),
            },
        }
    }
}

/// A buffered connection: lines in, replies out (flushed before waiting for input).
pub(super) struct Conn<S> {
    pub(super) io: S,
    /// Unread input is `buf[pos..]`.
    pub(super) buf: Vec<u8>,
    pub(super) pos: usize,
    pub(super) out: Vec<u8>,
    pub(super) timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub(super) fn new(io: S, timeout: Duration) -> Conn<S> {
        Conn {
            io,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            out: Vec::with_capacity(512),
            timeout,
        }
    }

    /// Queues a one-line reply.
    pub(super) fn reply(&mut self, code: u16, text: &str) {
        self.out
            .extend_from_slice(format!("{code} {text}\r\n").as_bytes());
    }

    /// Queues a multi-line reply.
    pub(super) fn reply_lines(&mut self, code: u16, lines: &[String]) {
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            self.out
                .extend_from_slice(format!("{code}{sep}{line}\r\n").as_bytes());
        }
    }

    pub(super) async fn flush(&mut self) -> Result<(), ReadError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            self.io.write_all(&self.out).await?;
            self.io.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => {
                self.out.clear();
                Ok(())
            }
            Ok(Err(e)) => Err(ReadError::Io(e)),
            Err(_) => Err(ReadError::Timeout(self.timeout)),
        }
    }

    /// Reads more input (flushing queued replies first), waiting at most the timeout.
    pub(super) async fn fill(
        &mut self,
        shutdown: Option<&CancellationToken>,
    ) -> Result<(), ReadError> {
        self.flush().await?;
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(READ_CHUNK);
        let timeout = self.timeout;
        let read = tokio::time::timeout(timeout, self.io.read_buf(&mut self.buf));
        let result = match shutdown {
            Some(token) => tokio::select! {
                biased;
                _ = token.cancelled() => return Err(ReadError::Shutdown),
                r = read => r,
            },
            None => read.await,
        };
        match result {
            Ok(Ok(0)) => Err(ReadError::Eof),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ReadError::Io(e)),
            Err(_) => Err(ReadError::Timeout(timeout)),
        }
    }

    /// The next line including its LF. A line longer than `max` is consumed up to its LF and
    /// reported as [`ReadError::TooLong`] (memory stays bounded by `max`).
    pub(super) async fn read_line(
        &mut self,
        max: usize,
        shutdown: Option<&CancellationToken>,
    ) -> Result<&[u8], ReadError> {
        let mut discarding = false;
        let mut scanned = 0;
        loop {
            let unread = &self.buf[self.pos + scanned..];
            if let Some(i) = unread.iter().position(|&b| b == b'\n') {
                let start = self.pos;
                let end = self.pos + scanned + i + 1;
                self.pos = end;
                if discarding || end - start > max {
                    return Err(ReadError::TooLong);
                }
                return Ok(&self.buf[start..end]);
            }
            scanned = self.buf.len() - self.pos;
            if scanned > max {
                discarding = true;
                self.buf.clear();
                self.pos = 0;
                scanned = 0;
            }
            self.fill(shutdown).await?;
        }
    }
}

/// What DATA produced.
pub(super) enum Data {
    Message(Vec<u8>),
    /// Over `max_message_bytes`; `close` when the sender went on so long that the session is
    /// ended instead of read to the end.
    TooLarge {
        close: bool,
    },
    LineTooLong,
}

/// Reads the message up to `CRLF.CRLF`, undoing dot-stuffing, keeping at most `max` bytes.
pub(super) async fn read_data<S>(conn: &mut Conn<S>, max: usize) -> Result<Data, ReadError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut message = Vec::new();
    let mut received: usize = 0;
    let mut too_long = false;
    let hard_stop = max.saturating_mul(2).max(max.saturating_add(MAX_DATA_LINE));
    loop {
        let line = match conn.read_line(MAX_DATA_LINE, None).await {
            Ok(line) => line,
            Err(ReadError::TooLong) => {
                too_long = true;
                continue;
            }
            Err(e) => return Err(e),
        };
        if line == b".\r\n" {
            break;
        }
        let line = line.strip_prefix(b".").unwrap_or(line);
        received = received.saturating_add(line.len());
        if received <= max {
            message.extend_from_slice(line);
        } else if received > hard_stop {
            return Ok(Data::TooLarge { close: true });
        }
    }
    Ok(if received > max {
        Data::TooLarge { close: false }
    } else if too_long {
        Data::LineTooLong
    } else {
        Data::Message(message)
    })
}
