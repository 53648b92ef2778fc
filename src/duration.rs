//! Durations in config files: one parser for every duration key. A key takes a whole number
//! of seconds (`90`) or a number with a unit (`"90s"`, `"30m"`, `"12h"`, `"14d"`, `"2w"`).
//! Pure; a leaf that uses nothing of the crate.
//!
//! Use `#[serde(with = "crate::duration")]` for a `Duration` field, and
//! `#[serde(deserialize_with = "crate::duration::secs")]` for a field kept in whole seconds.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer, de};

/// Parses `"14d"`, `"12h"`, `"30m"`, `"45s"`, `"2w"` or a bare number of seconds.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. \"14d\" or \"36h\""))?;
    let mult = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => {
            return Err(format!(
                "invalid duration {text:?}: unit must be one of s, m, h, d, w"
            ));
        }
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("invalid duration {text:?}: too large"))
}

/// Writes the largest whole unit.
pub(crate) fn format(d: &Duration) -> String {
    let s = d.as_secs();
    for (unit, m) in [("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)] {
        if s != 0 && s.is_multiple_of(m) {
            return format!("{}{unit}", s / m);
        }
    }
    format!("{s}s")
}

pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(d))
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Seconds(u64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(t) => parse(&t).map_err(de::Error::custom),
        Raw::Seconds(s) => Ok(Duration::from_secs(s)),
    }
}

/// [`deserialize`] into whole seconds, for keys whose value is kept as a number of seconds.
pub(crate) fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    deserialize(d).map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        #[serde(deserialize_with = "secs")]
        a: u64,
        #[serde(with = "super")]
        b: Duration,
    }

    #[test]
    fn numbers_and_units_both_parse() {
        let t: T = toml::from_str("a = 90\nb = \"2h\"").unwrap();
        assert_eq!((t.a, t.b), (90, Duration::from_secs(7200)));
        let t: T = toml::from_str("a = \"5m\"\nb = 30").unwrap();
        assert_eq!((t.a, t.b), (300, Duration::from_secs(30)));
        assert_eq!(parse("2w").unwrap(), Duration::from_secs(14 * 86400));
        let e = toml::from_str::<T>("a = \"3 fortnights\"\nb = 1")
            .err()
            .unwrap();
        assert!(e.to_string().contains("unit must be one of"), "{e}");
        assert!(parse("99999999999999999999d").is_err());
        assert_eq!(format(&Duration::from_secs(36 * 3600)), "36h");
    }
}
