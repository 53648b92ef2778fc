//! Log fields that come from the network (report contents, SMTP input, names in queries):
//! every control character escaped, so that a value cannot forge a log line or drive a
//! terminal, and the length capped, so that a value cannot flood the log; and [`throttle`]
//! for warnings that a stranger can trigger at will (one line per cause and interval, with
//! the count of the ones left out). A leaf.

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

/// How often one cause of a throttled warning is logged.
pub const THROTTLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

type Causes = std::collections::HashMap<&'static str, (std::time::Instant, u64)>;

fn causes() -> &'static std::sync::Mutex<Causes> {
    static CAUSES: std::sync::OnceLock<std::sync::Mutex<Causes>> = std::sync::OnceLock::new();
    CAUSES.get_or_init(Default::default)
}

/// Whether a warning of `cause` may be logged now: `Some(n)` at most once per
/// [`THROTTLE_INTERVAL`], `n` counting the ones left out since the last; `None` otherwise.
pub fn throttle(cause: &'static str) -> Option<u64> {
    throttle_at(cause, std::time::Instant::now())
}

fn throttle_at(cause: &'static str, now: std::time::Instant) -> Option<u64> {
    let mut map = causes().lock().unwrap_or_else(|e| e.into_inner());
    match map.get_mut(cause) {
        Some((last, skipped)) if now.duration_since(*last) < THROTTLE_INTERVAL => {
            *skipped += 1;
            None
        }
        Some((last, skipped)) => {
            let n = *skipped;
            *last = now;
            *skipped = 0;
            Some(n)
        }
        None => {
            map.insert(cause, (now, 0));
            Some(0)
        }
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

    #[test]
    fn a_flood_of_one_warning_is_logged_once_per_interval_with_a_count() {
        let t0 = std::time::Instant::now();
        assert_eq!(throttle_at("test cause", t0), Some(0));
        for i in 1..=9999u64 {
            let at = t0 + std::time::Duration::from_micros(i);
            assert_eq!(throttle_at("test cause", at), None);
        }
        // Another cause is not held back by this one.
        assert_eq!(throttle_at("other test cause", t0), Some(0));
        assert_eq!(
            throttle_at("test cause", t0 + THROTTLE_INTERVAL),
            Some(9999)
        );
    }
}
