//! The SOA serial and signature window of a zone, and their persistence.
//!
//! Owns the serial: RFC 1982 arithmetic, the decision whether served content changed, and the
//! state file. The arithmetic and [`plan`] are pure (time is passed in); [`load_state`] and
//! [`save_state`] are the only I/O, through `crate::state_dir`.
//!
//! Serial scheme: a new serial is `max(previous + 1, unix time)` in RFC 1982 terms — the unix time
//! (mod 2^32) if that is greater than the previous serial, else previous + 1 (mod 2^32). It is
//! therefore strictly greater (RFC 1982) than the previous one, also across the 2^32 wraparound,
//! and usually tells when the zone was last changed. The same serial is kept while the content
//! hash and the signature window stay the same, so restarts do not bump it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::ZoneError;
use super::settings::DnssecSettings;
use crate::state_dir::{PUBLIC_MODE, read_optional, write_atomic};

/// The SHA-256 of a zone's unsigned content, keys and denial settings
/// ([`super::content_hash`]): 32 bytes in memory (a hex `String` took 88 with its heap part, in
/// every zone), lowercase hex in the state file. All zeros stands for "unknown": it matches
/// no content, so the next plan gives a new serial.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    pub(crate) fn new(digest: [u8; 32]) -> ContentHash {
        ContentHash(digest)
    }
}

impl std::fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    /// A value that is not 64 hex digits is read as unknown: the state is mxguard's own, and
    /// the worst an unknown hash does is a new serial.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ContentHash, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(text.as_bytes())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        Ok(bytes.map_or_else(ContentHash::default, ContentHash))
    }
}

/// `a > b` in RFC 1982 serial number arithmetic (SERIAL_BITS = 32).
pub fn serial_gt(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

/// The next serial after `previous` at time `now_unix` (see the module documentation).
pub fn next_serial(previous: Option<u32>, now_unix: u64) -> u32 {
    // Truncation is intended: serials and RRSIG times are 32-bit and wrap (RFC 1982, RFC 4034 3.1.5).
    let clock = now_unix as u32;
    match previous {
        None => clock,
        Some(prev) if serial_gt(clock, prev) => clock,
        Some(prev) => prev.wrapping_add(1),
    }
}

/// What was last served: serial, hash of the unsigned content and key, and signature window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningState {
    pub serial: u32,
    /// SHA-256 over the unsigned content (SOA serial excluded), the key and denial mode.
    pub content_hash: ContentHash,
    /// RRSIG inception, seconds since the epoch (mod 2^32).
    pub inception: u32,
    /// RRSIG expiration, seconds since the epoch (mod 2^32).
    pub expiration: u32,
}

impl SigningState {
    /// When the signatures of this state must be replaced: `refresh` before they expire.
    pub fn resign_at(&self, settings: &DnssecSettings) -> u64 {
        u64::from(self.expiration).saturating_sub(settings.refresh.as_secs())
    }

    /// Whether a re-sign is due at `now_unix`.
    pub fn resign_due(&self, now_unix: u64, settings: &DnssecSettings) -> bool {
        // Window arithmetic in RFC 1982 terms so it keeps working after 2106.
        let now = now_unix as u32;
        let refresh = settings.refresh.as_secs().min(u64::from(u32::MAX / 2)) as u32;
        serial_gt(self.inception, now) || !serial_gt(self.expiration, now.wrapping_add(refresh))
    }
}

/// Decides the serial and signature window for content with `content_hash` at `now_unix`.
///
/// Unchanged content with a window that is not yet due for refresh keeps the previous state
/// (same serial, same window). Changed content within a window that is not yet due gets a new
/// serial but keeps the window, so the signatures of unchanged RRsets stay valid and are
/// reused. A window that is due (or none yet) gets a new serial and a fresh window from
/// `now - inception_offset` to `now + signature_validity`.
pub fn plan(
    previous: Option<&SigningState>,
    content_hash: &ContentHash,
    now_unix: u64,
    settings: &DnssecSettings,
) -> SigningState {
    if let Some(prev) = previous
        && !prev.resign_due(now_unix, settings)
    {
        if prev.content_hash == *content_hash {
            return prev.clone();
        }
        return SigningState {
            serial: next_serial(Some(prev.serial), now_unix),
            content_hash: *content_hash,
            inception: prev.inception,
            expiration: prev.expiration,
        };
    }
    SigningState {
        serial: next_serial(previous.map(|p| p.serial), now_unix),
        content_hash: *content_hash,
        inception: now_unix.saturating_sub(settings.inception_offset.as_secs()) as u32,
        expiration: now_unix.saturating_add(settings.signature_validity.as_secs()) as u32,
    }
}

/// Reads the persisted state; `None` if the file does not exist yet.
pub fn load_state(path: &Path) -> Result<Option<SigningState>, ZoneError> {
    let Some(bytes) = read_optional(path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ZoneError::State {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Persists the state atomically.
pub fn save_state(path: &Path, state: &SigningState) -> Result<(), ZoneError> {
    let mut bytes = serde_json::to_vec_pretty(state).map_err(|e| ZoneError::State {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes, PUBLIC_MODE)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: u64 = 1_750_000_000;

    /// A content hash standing for `content`.
    fn h(content: &str) -> ContentHash {
        let d = ring::digest::digest(&ring::digest::SHA256, content.as_bytes());
        ContentHash::new(d.as_ref().try_into().unwrap())
    }

    #[test]
    fn content_hashes_are_hex_in_the_state_file_and_unknown_when_unreadable() {
        let st = plan(None, &h("x"), T0, &DnssecSettings::default());
        let json = serde_json::to_string(&st).unwrap();
        let hex = data_encoding::HEXLOWER.encode(&h("x").0);
        assert!(
            json.contains(&format!("\"content_hash\":\"{hex}\"")),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<SigningState>(&json).unwrap(), st);
        let odd = json.replace(&hex, "not hex");
        let read: SigningState = serde_json::from_str(&odd).unwrap();
        assert_eq!(read.content_hash, ContentHash::default());
        // Unknown matches no content: a new serial.
        assert!(serial_gt(
            plan(Some(&read), &h("x"), T0 + 1, &DnssecSettings::default()).serial,
            st.serial
        ));
    }

    #[test]
    fn rfc1982_comparison() {
        assert!(serial_gt(2, 1));
        assert!(!serial_gt(1, 2));
        assert!(!serial_gt(5, 5));
        assert!(serial_gt(0, u32::MAX));
        assert!(serial_gt(10, u32::MAX - 10));
        assert!(!serial_gt(u32::MAX - 10, 10));
    }

    #[test]
    fn serial_uses_clock_when_ahead_else_increments() {
        assert_eq!(next_serial(None, T0), T0 as u32);
        assert_eq!(next_serial(Some(5), T0), T0 as u32);
        // A serial ahead of the clock (e.g. YYYYMMDDnn style) still only grows by one.
        assert_eq!(next_serial(Some(T0 as u32 + 1000), T0), T0 as u32 + 1001);
    }

    #[test]
    fn serial_increases_across_wraparound() {
        let prev = u32::MAX;
        let next = next_serial(Some(prev), 3); // clock 3 is "greater" than MAX in RFC 1982
        assert!(serial_gt(next, prev));
        let prev = u32::MAX - 1;
        let next = next_serial(Some(prev), u64::from(u32::MAX) / 2); // clock far "behind"
        assert_eq!(next, u32::MAX);
        let next2 = next_serial(Some(next), u64::from(u32::MAX) / 2);
        assert_eq!(next2, 0);
        assert!(serial_gt(next2, next));
    }

    proptest! {
        #[test]
        fn serial_strictly_increases(prev in any::<u32>(), now in any::<u64>()) {
            let next = next_serial(Some(prev), now);
            prop_assert!(serial_gt(next, prev));
        }
    }

    #[test]
    fn unchanged_content_keeps_serial_and_window() {
        let s = DnssecSettings::default();
        let a = plan(None, &h("h1"), T0, &s);
        assert_eq!(a.serial, T0 as u32);
        assert_eq!(a.inception, (T0 - 3600) as u32);
        assert_eq!(a.expiration, (T0 + 14 * 86400) as u32);
        let b = plan(Some(&a), &h("h1"), T0 + 86400, &s);
        assert_eq!(a, b);
        let c = plan(Some(&b), &h("h2"), T0 + 86400, &s);
        assert!(serial_gt(c.serial, b.serial));
        assert_eq!(c.content_hash, h("h2"));
        // A change inside a window that is not due keeps the window (signatures are reused).
        assert_eq!((c.inception, c.expiration), (b.inception, b.expiration));
        // Two changes within the same second still get distinct, increasing serials.
        let d = plan(Some(&c), &h("h3"), T0 + 86400, &s);
        assert!(serial_gt(d.serial, c.serial));
    }

    #[test]
    fn resign_is_due_when_refresh_window_reached() {
        let s = DnssecSettings::default();
        let a = plan(None, &h("h"), T0, &s);
        assert_eq!(a.resign_at(&s), T0 + 7 * 86400);
        assert!(!a.resign_due(T0 + 7 * 86400 - 1, &s));
        assert!(a.resign_due(T0 + 7 * 86400, &s));
        let b = plan(Some(&a), &h("h"), a.resign_at(&s), &s);
        assert!(serial_gt(b.serial, a.serial));
        assert_eq!(b.expiration, (T0 + 21 * 86400) as u32);
    }

    #[test]
    fn signatures_never_expire_while_running() {
        // Simulate a daemon that wakes up at each resign_at (with jitter) over two years.
        let s = DnssecSettings::default();
        let mut now = T0;
        let mut state = plan(None, &h("h"), now, &s);
        for step in 0..200u64 {
            let wake = state.resign_at(&s) + (step * 37) % 3600;
            // Every instant until the wake-up is covered by the current window.
            for t in [now, (now + wake) / 2, wake] {
                assert!(serial_gt(state.expiration, t as u32), "expired at {t}");
                assert!(
                    !serial_gt(state.inception, t as u32),
                    "not yet valid at {t}"
                );
            }
            now = wake;
            let next = plan(Some(&state), &h("h"), now, &s);
            assert!(serial_gt(next.serial, state.serial));
            state = next;
        }
    }

    #[test]
    fn state_round_trips_through_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("example.com.state.json");
        assert!(load_state(&p).unwrap().is_none());
        let st = plan(None, &h("abc"), T0, &DnssecSettings::default());
        save_state(&p, &st).unwrap();
        assert_eq!(load_state(&p).unwrap(), Some(st));
        std::fs::write(&p, "{").unwrap();
        let e = load_state(&p).unwrap_err();
        assert!(
            e.to_string()
                .contains("example.com.state.json: invalid signing state"),
            "{e}"
        );
    }
}
