//! MTA-STS policies (RFC 8461): the source file model, validation, exact rendering, the
//! policy id and the `_mta-sts` TXT record.
//!
//! Pure: no I/O, no clock. The caller reads the policy source file and hands its text in;
//! serving the rendered text and publishing the TXT record belong to the http and zone
//! modules.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Largest max_age RFC 8461 §3.2 allows (one year).
pub(crate) const MAX_AGE_LIMIT: u64 = 31_557_600;
/// Below this, senders re-fetch the policy often; RFC 8461 recommends weeks.
pub(crate) const MAX_AGE_WARN_BELOW: u64 = 86_400;
/// Senders may refuse policies larger than this (RFC 8461 §3.3).
pub(crate) const MAX_POLICY_BYTES: usize = 64 * 1024;

/// The policy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

impl Mode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "testing" => Ok(Mode::Testing),
            "none" => Ok(Mode::None),
            other => Err(format!(
                "unknown mode {other:?}: use enforce, testing or none"
            )),
        }
    }
}

/// A policy source file (`policies/<domain>.toml`), as the user typed it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicySource {
    pub mode: Mode,
    /// Seconds senders may cache the policy.
    #[serde(default = "default_max_age")]
    pub max_age: u64,
    /// MX patterns; when absent, the domain's MX hosts from the config.
    #[serde(default)]
    pub mx: Option<Vec<String>>,
}

fn default_max_age() -> u64 {
    604_800
}

/// One problem found in a policy, with the key it concerns (e.g. `mx[1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// A validated MTA-STS policy, ready to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    pub mode: Mode,
    pub max_age: u64,
    pub mx: Vec<String>,
}

/// Result of validating a source: the policy plus non-fatal warnings.
#[derive(Debug, Clone)]
pub(crate) struct Validated {
    pub policy: Policy,
    pub warnings: Vec<Problem>,
}

/// Checks a policy source against RFC 8461 and the domain's MX hosts.
///
/// All problems are returned at once. Hostnames are compared case-insensitively and without a
/// trailing dot; the rendered policy uses lowercase names.
pub(crate) fn validate(src: &PolicySource, mx_hosts: &[String]) -> Result<Validated, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    if src.max_age == 0 || src.max_age > MAX_AGE_LIMIT {
        problems.push(Problem {
            key: "max_age".into(),
            message: format!(
                "{} is out of range: use 1 to {MAX_AGE_LIMIT} seconds (RFC 8461 §3.2)",
                src.max_age
            ),
        });
    } else if src.max_age < MAX_AGE_WARN_BELOW {
        warnings.push(Problem {
            key: "max_age".into(),
            message: format!(
                "{} seconds is short: senders will re-fetch often; weeks (e.g. 604800) are recommended",
                src.max_age
            ),
        });
    }
    let (patterns, key_prefix) = match &src.mx {
        Some(list) => (list.clone(), "mx"),
        None => (mx_hosts.to_vec(), "(domain mx)"),
    };
    if patterns.is_empty() {
        problems.push(Problem {
            key: "mx".into(),
            message: "no MX patterns: list at least one MX host".into(),
        });
    }
    let mut normalized = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        match normalize_pattern(p) {
            Ok(n) => {
                if !normalized.contains(&n) {
                    normalized.push(n);
                }
            }
            Err(msg) => problems.push(Problem {
                key: format!("{key_prefix}[{i}]"),
                message: msg,
            }),
        }
    }
    if problems.is_empty() {
        for host in mx_hosts {
            let h = host.trim_end_matches('.').to_ascii_lowercase();
            if !normalized.iter().any(|p| pattern_matches(p, &h)) {
                problems.push(Problem {
                    key: "mx".into(),
                    message: format!(
                        "MX host {h} is not matched by any pattern: add \"{h}\" (or a covering \"*.\" pattern)"
                    ),
                });
            }
        }
    }
    let policy = Policy {
        mode: src.mode,
        max_age: src.max_age,
        mx: normalized,
    };
    if problems.is_empty() {
        let text = policy.render();
        if text.len() > MAX_POLICY_BYTES {
            problems.push(Problem {
                key: "mx".into(),
                message: format!(
                    "rendered policy is {} bytes; senders may reject policies over {MAX_POLICY_BYTES} bytes",
                    text.len()
                ),
            });
        }
    }
    if problems.is_empty() {
        Ok(Validated { policy, warnings })
    } else {
        Err(problems)
    }
}

/// Checks that `name` is a DNS hostname (LDH labels, 1..=63 octets each, ≤ 253 total, at least
/// two labels) and returns it lowercase without a trailing dot.
pub(crate) fn normalize_hostname(name: &str) -> Result<String, String> {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    if n.is_empty() {
        return Err("empty hostname".into());
    }
    if n.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    let labels: Vec<&str> = n.split('.').collect();
    if labels.len() < 2 {
        return Err(format!(
            "{name:?} is not a fully qualified hostname (e.g. mx1.example.com)"
        ));
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{name:?} is not a valid hostname: label {label:?} must be 1-63 letters, digits or hyphens, not starting or ending with a hyphen"
            ));
        }
    }
    Ok(n)
}

/// An MX pattern is a hostname, optionally with one leading `*.` label (RFC 8461 §3.2).
fn normalize_pattern(p: &str) -> Result<String, String> {
    if let Some(rest) = p.strip_prefix("*.") {
        if rest.contains('*') {
            return Err(format!(
                "{p:?}: only one wildcard is allowed, and only as the whole leftmost label (\"*.example.com\")"
            ));
        }
        return normalize_hostname(rest)
            .map(|h| format!("*.{h}"))
            .map_err(|e| format!("{p:?}: {e}"));
    }
    if p.contains('*') {
        return Err(format!(
            "{p:?}: a wildcard must be the whole leftmost label (\"*.example.com\")"
        ));
    }
    normalize_hostname(p)
}

/// RFC 8461 §4.1: a `*.` pattern matches exactly one extra leftmost label.
pub(crate) fn pattern_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

impl Policy {
    /// The exact policy text served at `/.well-known/mta-sts.txt`: `version: STSv1` first,
    /// CRLF line endings.
    pub(crate) fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("version: STSv1\r\n");
        s.push_str(&format!("mode: {}\r\n", self.mode));
        for mx in &self.mx {
            s.push_str(&format!("mx: {mx}\r\n"));
        }
        s.push_str(&format!("max_age: {}\r\n", self.max_age));
        s
    }
}

/// A policy as published: the served text and the id announcing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    pub text: String,
    pub id: String,
}

impl Published {
    pub(crate) fn new(policy: &Policy) -> Published {
        let text = policy.render();
        let id = policy_id(&text);
        Published { text, id }
    }

    /// The data of the `_mta-sts.<domain>` TXT record.
    pub(crate) fn txt_record(&self) -> String {
        format!("v=STSv1; id={}", self.id)
    }
}

/// The policy id: 32 lowercase hex digits of SHA-256 over the rendered text, so it changes
/// exactly when the text changes (RFC 8461 §3.1 allows 1-32 alphanumerics).
pub(crate) fn policy_id(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    data_encoding::HEXLOWER.encode(&digest.as_ref()[..16])
}

/// Errors of parsing a served policy text (what `mxguard check` and the tests read as a
/// sender would).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParseError {
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("missing field {0}")]
    Missing(&'static str),
}

/// Parses policy text as a sender would (RFC 8461 §3.2): `key: value` lines separated by CRLF
/// (LF tolerated), `version: STSv1` first.
pub(crate) fn parse(text: &str) -> Result<Policy, ParseError> {
    let mut version = false;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(ParseError::Line {
                line: line_no,
                message: format!("expected \"key: value\", got {line:?}"),
            });
        };
        let v = v.trim();
        let err = |message: String| ParseError::Line {
            line: line_no,
            message,
        };
        match k.trim() {
            "version" => {
                if line_no != 1 || v != "STSv1" {
                    return Err(err("version must be the first line and STSv1".into()));
                }
                version = true;
            }
            "mode" => mode = Some(v.parse::<Mode>().map_err(err)?),
            "max_age" => {
                max_age = Some(
                    v.parse::<u64>()
                        .map_err(|e| err(format!("max_age {v:?}: {e}")))?,
                )
            }
            "mx" => mx.push(v.to_string()),
            _ => {} // RFC 8461: unknown fields are ignored
        }
    }
    if !version {
        return Err(ParseError::Missing("version"));
    }
    Ok(Policy {
        mode: mode.ok_or(ParseError::Missing("mode"))?,
        max_age: max_age.ok_or(ParseError::Missing("max_age"))?,
        mx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn src(mode: Mode, max_age: u64, mx: Option<Vec<&str>>) -> PolicySource {
        PolicySource {
            mode,
            max_age,
            mx: mx.map(|v| v.into_iter().map(String::from).collect()),
        }
    }

    fn hosts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn renders_exact_text_with_crlf_and_version_first() {
        let v = validate(
            &src(Mode::Enforce, 604800, None),
            &hosts(&["MX1.Example.com.", "mx2.example.com"]),
        )
        .unwrap();
        assert_eq!(
            v.policy.render(),
            "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: mx2.example.com\r\nmax_age: 604800\r\n"
        );
        assert!(v.warnings.is_empty());
    }

    #[test]
    fn txt_record_carries_id() {
        let v = validate(
            &src(Mode::Testing, 86400, None),
            &hosts(&["mx.example.com"]),
        )
        .unwrap();
        let p = Published::new(&v.policy);
        assert_eq!(p.txt_record(), format!("v=STSv1; id={}", p.id));
        assert_eq!(p.id.len(), 32);
        assert!(p.id.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn max_age_zero_and_too_large_are_rejected() {
        for age in [0, MAX_AGE_LIMIT + 1] {
            let e =
                validate(&src(Mode::Enforce, age, None), &hosts(&["mx.example.com"])).unwrap_err();
            assert_eq!(e[0].key, "max_age");
            assert!(e[0].message.contains("out of range"), "{}", e[0]);
        }
    }

    #[test]
    fn short_max_age_warns() {
        let v = validate(&src(Mode::Enforce, 3600, None), &hosts(&["mx.example.com"])).unwrap();
        assert_eq!(v.warnings.len(), 1);
        assert_eq!(v.warnings[0].key, "max_age");
    }

    #[test]
    fn two_wildcards_are_rejected() {
        let e = validate(
            &src(Mode::Enforce, 86400, Some(vec!["*.*.example.com"])),
            &hosts(&["a.b.example.com"]),
        )
        .unwrap_err();
        assert_eq!(e[0].key, "mx[0]");
        assert!(e[0].message.contains("only one wildcard"), "{}", e[0]);
    }

    #[test]
    fn uncovered_mx_is_rejected() {
        let e = validate(
            &src(Mode::Enforce, 86400, Some(vec!["mx1.example.com"])),
            &hosts(&["mx1.example.com", "mx2.example.com"]),
        )
        .unwrap_err();
        assert!(e[0].message.contains("mx2.example.com"), "{}", e[0]);
    }

    #[test]
    fn wildcard_matches_exactly_one_label() {
        assert!(pattern_matches("*.example.com", "mx.example.com"));
        assert!(!pattern_matches("*.example.com", "a.mx.example.com"));
        assert!(!pattern_matches("*.example.com", "example.com"));
        assert!(pattern_matches("mx.example.com", "mx.example.com"));
    }

    #[test]
    fn parse_rejects_missing_version() {
        assert!(parse("mode: enforce\r\nmax_age: 5\r\n").is_err());
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?"
    }

    fn pattern() -> impl Strategy<Value = String> {
        (prop::bool::ANY, prop::collection::vec(label(), 2..4)).prop_map(|(wild, labels)| {
            let h = labels.join(".");
            if wild { format!("*.{h}") } else { h }
        })
    }

    fn policy() -> impl Strategy<Value = Policy> {
        (
            prop_oneof![Just(Mode::Enforce), Just(Mode::Testing), Just(Mode::None)],
            1..=MAX_AGE_LIMIT,
            prop::collection::vec(pattern(), 1..5),
        )
            .prop_map(|(mode, max_age, mx)| Policy { mode, max_age, mx })
    }

    proptest! {
        #[test]
        fn render_parse_round_trip(p in policy()) {
            let text = p.render();
            prop_assert_eq!(parse(&text).unwrap(), p);
        }

        #[test]
        fn id_equal_iff_text_equal(a in policy(), b in policy()) {
            let (ta, tb) = (a.render(), b.render());
            prop_assert_eq!(ta == tb, policy_id(&ta) == policy_id(&tb));
        }

        #[test]
        fn validated_policies_render_within_limits(p in policy()) {
            let hosts: Vec<String> = p.mx.iter().filter(|m| !m.starts_with('*')).cloned().collect();
            let s = PolicySource { mode: p.mode, max_age: p.max_age, mx: Some(p.mx.clone()) };
            let v = validate(&s, &hosts).unwrap();
            prop_assert!(v.policy.render().len() <= MAX_POLICY_BYTES);
            prop_assert!(v.policy.render().starts_with("version: STSv1\r\n"));
        }
    }
}
