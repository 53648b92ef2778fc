//! The SMTP command parser (RFC 5321): one command line in, a [`Command`] or a reply
//! code out. Pure.

use super::*;

/// One SMTP command, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Ehlo(String),
    Helo(String),
    /// `MAIL FROM:<path>`; the null path `<>` is an empty string.
    Mail {
        from: String,
        size: Option<u64>,
    },
    Rcpt {
        to: String,
    },
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
}

/// Why a command line was not understood. Variants carry the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CommandError {
    #[error("unrecognized command {verb:?}")]
    Unknown { verb: String },
    #[error("command {verb} not implemented")]
    NotImplemented { verb: String },
    #[error("syntax error in {verb}: {reason}")]
    Syntax { verb: &'static str, reason: String },
    #[error("unsupported parameter {param:?} in {verb}")]
    Parameter { verb: &'static str, param: String },
}

impl CommandError {
    /// The reply code and enhanced status for this error.
    pub(crate) fn code(&self) -> (u16, &'static str) {
        match self {
            CommandError::Unknown { .. } => (500, "5.5.1"),
            CommandError::NotImplemented { .. } => (502, "5.5.1"),
            CommandError::Syntax { .. } => (501, "5.5.4"),
            CommandError::Parameter { .. } => (555, "5.5.4"),
        }
    }
}

/// Parses one command line (with or without its CRLF). Never panics.
pub(crate) fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let line = line
        .strip_suffix(b"\n")
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .unwrap_or(line);
    let text = String::from_utf8_lossy(line);
    let text = text.trim_start();
    let (verb, args) = match text.split_once([' ', '\t']) {
        Some((v, a)) => (v, a.trim()),
        None => (text.trim_end(), ""),
    };
    let upper = verb.to_ascii_uppercase();
    let no_args = |cmd: Command, name: &'static str| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::Syntax {
                verb: name,
                reason: "takes no arguments".to_string(),
            })
        }
    };
    match upper.as_str() {
        "EHLO" | "HELO" => {
            let name: &'static str = if upper == "EHLO" { "EHLO" } else { "HELO" };
            let host = args.split_whitespace().next().unwrap_or("");
            if host.is_empty() {
                return Err(CommandError::Syntax {
                    verb: name,
                    reason: "a domain or address literal is required".to_string(),
                });
            }
            let host = clean(host, 255);
            Ok(if name == "EHLO" {
                Command::Ehlo(host)
            } else {
                Command::Helo(host)
            })
        }
        "MAIL" => {
            let (path, params) = parse_path(args, "FROM:", "MAIL")?;
            let mut size = None;
            for param in params {
                let (key, value) = param.split_once('=').unwrap_or((param, ""));
                match key.to_ascii_uppercase().as_str() {
                    "SIZE" => {
                        let n = value
                            .parse::<u64>()
                            .ok()
                            .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                            .ok_or_else(|| CommandError::Syntax {
                                verb: "MAIL",
                                reason: format!("SIZE={} is not a number", clean(value, 40)),
                            })?;
                        size = Some(n);
                    }
                    "BODY"
                        if ["7BIT", "8BITMIME"]
                            .iter()
                            .any(|b| b.eq_ignore_ascii_case(value)) => {}
                    // Accepted silently: the address only has to match a configured one.
                    "SMTPUTF8" if value.is_empty() => {}
                    _ => {
                        return Err(CommandError::Parameter {
                            verb: "MAIL",
                            param: clean(param, 60),
                        });
                    }
                }
            }
            Ok(Command::Mail { from: path, size })
        }
        "RCPT" => {
            let (path, mut params) = parse_path(args, "TO:", "RCPT")?;
            if let Some(param) = params.next() {
                return Err(CommandError::Parameter {
                    verb: "RCPT",
                    param: clean(param, 60),
                });
            }
            if path.is_empty() {
                return Err(CommandError::Syntax {
                    verb: "RCPT",
                    reason: "an empty recipient is not allowed".to_string(),
                });
            }
            Ok(Command::Rcpt { to: path })
        }
        "DATA" => no_args(Command::Data, "DATA"),
        "RSET" => no_args(Command::Rset, "RSET"),
        "QUIT" => no_args(Command::Quit, "QUIT"),
        "STARTTLS" => no_args(Command::StartTls, "STARTTLS"),
        "NOOP" => Ok(Command::Noop),
        "VRFY" => Ok(Command::Vrfy),
        "HELP" => Ok(Command::Help),
        "EXPN" | "BDAT" | "AUTH" | "ETRN" | "TURN" | "ATRN" | "SEND" | "SOML" | "SAML" => {
            Err(CommandError::NotImplemented { verb: upper })
        }
        _ => Err(CommandError::Unknown {
            verb: clean(verb, 40),
        }),
    }
}

/// Splits `FROM:<path> PARAM...` into the path (without `<>` and any source route) and the
/// parameters.
pub(super) fn parse_path<'a>(
    args: &'a str,
    keyword: &str,
    verb: &'static str,
) -> Result<(String, std::str::SplitWhitespace<'a>), CommandError> {
    let syntax = |reason: &str| CommandError::Syntax {
        verb,
        reason: reason.to_string(),
    };
    let rest = match args.get(..keyword.len()) {
        Some(k) if k.eq_ignore_ascii_case(keyword) => args[keyword.len()..].trim_start(),
        _ => return Err(syntax(&format!("expected {keyword}<address>"))),
    };
    let (path, params) = if let Some(inner) = rest.strip_prefix('<') {
        let end = inner
            .find('>')
            .ok_or_else(|| syntax("missing '>' after the address"))?;
        (&inner[..end], &inner[end + 1..])
    } else {
        // Lenient: a bare address without angle brackets.
        let end = rest.find([' ', '\t']).unwrap_or(rest.len());
        (&rest[..end], &rest[end..])
    };
    // A source route (`@a,@b:user@host`) is ignored, as RFC 5321 allows.
    let path = match path.strip_prefix('@') {
        Some(_) => path.split_once(':').map(|(_, p)| p).unwrap_or(""),
        None => path,
    };
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) || path.len() > 320 {
        return Err(syntax("invalid address"));
    }
    if !params.is_empty() && !params.starts_with([' ', '\t']) {
        return Err(syntax("expected a space after the address"));
    }
    Ok((path.to_string(), params.split_whitespace()))
}
