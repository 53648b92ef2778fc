//! Log fields that come from the network (report contents, SMTP input, names in queries):
//! every control character escaped, so that a value cannot forge a log line or drive a
//! terminal, and the length capped, so that a value cannot flood the log. Pure; a leaf.

use std::fmt;

/// Longest logged value, in characters; the rest is counted, not written.
pub const MAX_CHARS: usize = 200;

/// `value` as it may be logged: see the module documentation.
pub fn untrusted(value: impl fmt::Display) -> Untrusted {
    Untrusted(value.to_string())
}

/// A value from the network, displayed escaped and capped.
pub struct Untrusted(String);

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(MAX_CHARS) {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                for e in c.escape_default() {
                    f.write_fmt(format_args!("{e}"))?;
                }
            } else {
                f.write_fmt(format_args!("{c}"))?;
            }
        }
        let rest = chars.count();
        if rest > 0 {
            write!(f, "…({rest} more characters)")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_length_capped() {
        let forged = "r1\n2026-11-30T00:00:00Z ERROR forged\u{1b}[31m\0end";
        let out = untrusted(forged).to_string();
        assert!(!out.chars().any(char::is_control), "{out:?}");
        assert_eq!(
            out,
            "r1\\n2026-11-30T00:00:00Z ERROR forged\\u{1b}[31m\\u{0}end"
        );
        let long = "x".repeat(15_000_000);
        let out = untrusted(&long).to_string();
        assert!(out.len() < 300, "{}", out.len());
        assert!(out.ends_with("…(14999800 more characters)"), "{out}");
        assert_eq!(untrusted("plain.example").to_string(), "plain.example");
    }
}
