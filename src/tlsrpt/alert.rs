//! TLS-RPT alerting: the settings, the decision whether to alert, and the webhook payload.
//!
//! Owns: `AlertSettings` (strict serde config), `decide` (a pure transition function over
//! `AlertState`) and `WebhookUrl` parsing. Must not touch the network, storage or the
//! clock: the effectful sender is `crate::tlsrpt::alerter`.
//!
//! A domain alerts when, within the window, at least `min_failures` sessions failed **and**
//! the failed fraction exceeds `max_failure_ratio`. The same condition alerts once: the state
//! goes `Armed → Firing` with a `Fire` action, stays `Firing` without actions while the
//! condition holds, and re-arms (`Firing → Armed`, a `Resolve` action) when it clears.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

fn default_min_failures() -> u64 {
    10
}

fn default_max_failure_ratio() -> f64 {
    0.05
}

fn default_window() -> u64 {
    86_400
}

/// `[tlsrpt.alerts]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertSettings {
    /// Where to POST alerts (`http://host[:port]/path`); no alerts are sent when absent.
    /// `https://` is not supported yet.
    #[serde(default)]
    pub webhook: Option<String>,
    /// Alert only when at least this many sessions failed in the window.
    #[serde(default = "default_min_failures")]
    pub min_failures: u64,
    /// Alert only when failed / (failed + successful) exceeds this (0.0 to 1.0).
    #[serde(default = "default_max_failure_ratio")]
    pub max_failure_ratio: f64,
    /// The window, in seconds, over which counts are summed (by report end date).
    #[serde(default = "default_window", deserialize_with = "crate::duration::secs")]
    pub window: u64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            webhook: None,
            min_failures: default_min_failures(),
            max_failure_ratio: default_max_failure_ratio(),
            window: default_window(),
        }
    }
}

/// A problem in [`AlertSettings`], naming the dotted config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub(crate) struct AlertSettingsError {
    pub key: String,
    pub problem: String,
}

impl AlertSettings {
    /// Checks the settings without I/O and returns every problem, each prefixed with
    /// `prefix` (e.g. `tlsrpt.alerts`).
    pub(crate) fn validate(&self, prefix: &str) -> Vec<AlertSettingsError> {
        let mut errors = Vec::new();
        let mut problem = |key: &str, p: String| {
            errors.push(AlertSettingsError {
                key: format!("{prefix}.{key}"),
                problem: p,
            })
        };
        if let Some(url) = &self.webhook
            && let Err(e) = WebhookUrl::parse(url)
        {
            problem("webhook", e.to_string());
        }
        if !(0.0..=1.0).contains(&self.max_failure_ratio) {
            problem(
                "max_failure_ratio",
                format!(
                    "{} is not between 0.0 and 1.0 (0.05 means 5%)",
                    self.max_failure_ratio
                ),
            );
        }
        if self.window == 0 {
            problem(
                "window",
                "must be at least 1 second (86400 = one day)".to_string(),
            );
        }
        errors
    }

    /// The start of the window ending at `now`.
    pub(crate) fn window_start(&self, now: OffsetDateTime) -> OffsetDateTime {
        let secs = i64::try_from(self.window).unwrap_or(i64::MAX);
        now.checked_sub(time::Duration::seconds(secs))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// Session counts for one domain within the alert window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WindowCounts {
    pub successful: u64,
    pub failed: u64,
}

impl WindowCounts {
    /// Failed sessions as a fraction of all sessions.
    pub(crate) fn failure_ratio(&self) -> f64 {
        super::summary::ratio(self.failed, self.successful)
    }
}

/// Whether a domain's alert is currently raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AlertState {
    #[default]
    Armed,
    Firing,
}

/// What the sender should do after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlertAction {
    None,
    /// The condition became true: send an alert.
    Fire,
    /// The condition cleared: send a resolution and re-arm.
    Resolve,
}

/// Whether the alert condition holds for these counts.
pub(crate) fn condition(settings: &AlertSettings, counts: WindowCounts) -> bool {
    counts.failed > 0
        && counts.failed >= settings.min_failures
        && counts.failure_ratio() > settings.max_failure_ratio
}

/// The transition function: the next state and the action to take.
pub(crate) fn decide(
    settings: &AlertSettings,
    counts: WindowCounts,
    state: AlertState,
) -> (AlertState, AlertAction) {
    match (state, condition(settings, counts)) {
        (AlertState::Armed, true) => (AlertState::Firing, AlertAction::Fire),
        (AlertState::Armed, false) => (AlertState::Armed, AlertAction::None),
        (AlertState::Firing, true) => (AlertState::Firing, AlertAction::None),
        (AlertState::Firing, false) => (AlertState::Armed, AlertAction::Resolve),
    }
}

/// The JSON body POSTed to the webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AlertPayload {
    /// `firing` or `resolved`.
    pub status: String,
    pub domain: String,
    pub successful_sessions: u64,
    pub failed_sessions: u64,
    pub failure_ratio: f64,
    pub window_seconds: u64,
    pub min_failures: u64,
    pub max_failure_ratio: f64,
    /// Human-readable one-line summary.
    pub text: String,
    /// Failures in the window set against mxguard's own changes (see `tlsrpt::correlate`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overlapping_changes: Vec<String>,
}

/// Builds the webhook payload for an action (`None` for [`AlertAction::None`]).
pub(crate) fn payload(
    settings: &AlertSettings,
    domain: &str,
    counts: WindowCounts,
    action: AlertAction,
) -> Option<AlertPayload> {
    let status = match action {
        AlertAction::None => return None,
        AlertAction::Fire => "firing",
        AlertAction::Resolve => "resolved",
    };
    let ratio = counts.failure_ratio();
    let text = match action {
        AlertAction::Fire => format!(
            "TLS-RPT: {domain}: {} of {} inbound TLS sessions failed ({:.1}%) in the last {}s",
            counts.failed,
            counts.failed.saturating_add(counts.successful),
            ratio * 100.0,
            settings.window
        ),
        _ => format!(
            "TLS-RPT: {domain}: failures back under threshold ({} failed, {:.1}%)",
            counts.failed,
            ratio * 100.0
        ),
    };
    Some(AlertPayload {
        status: status.to_string(),
        domain: domain.to_string(),
        successful_sessions: counts.successful,
        failed_sessions: counts.failed,
        failure_ratio: ratio,
        window_seconds: settings.window,
        min_failures: settings.min_failures,
        max_failure_ratio: settings.max_failure_ratio,
        text,
        overlapping_changes: Vec::new(),
    })
}

/// A parsed `http://` webhook URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebhookUrl {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Why a webhook URL is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WebhookUrlError {
    #[error(
        "{url:?}: https webhooks are not supported yet; use an http:// URL (e.g. a local relay)"
    )]
    HttpsUnsupported { url: String },
    #[error("{url:?}: expected http://host[:port]/path")]
    Malformed { url: String },
}

impl WebhookUrl {
    /// Parses `http://host[:port][/path]` (IPv6 hosts in brackets).
    pub(crate) fn parse(url: &str) -> Result<WebhookUrl, WebhookUrlError> {
        let malformed = || WebhookUrlError::Malformed {
            url: url.to_string(),
        };
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(WebhookUrlError::HttpsUnsupported {
                url: url.to_string(),
            });
        }
        let rest = url
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("http://"))
            .map(|_| &url[7..])
            .ok_or_else(malformed)?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        if authority.contains('@') || path.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(malformed());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(malformed)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| malformed())?,
                None if after.is_empty() => 80,
                None => return Err(malformed()),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| malformed())?),
                None => (authority.to_string(), 80),
            }
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
        {
            return Err(malformed());
        }
        Ok(WebhookUrl { host, port, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AlertSettings {
        AlertSettings {
            webhook: None,
            min_failures: 10,
            max_failure_ratio: 0.05,
            window: 86_400,
        }
    }

    fn c(successful: u64, failed: u64) -> WindowCounts {
        WindowCounts { successful, failed }
    }

    #[test]
    fn same_condition_alerts_once_and_rearms_when_it_clears() {
        let s = settings();
        let mut state = AlertState::Armed;
        let mut actions = Vec::new();
        // Below min_failures, then bad for three reports, then fine, then bad again.
        for counts in [
            c(100, 5),
            c(100, 20),
            c(100, 30),
            c(100, 40),
            c(10_000, 40),
            c(10, 50),
        ] {
            let (next, action) = decide(&s, counts, state);
            state = next;
            actions.push(action);
        }
        use AlertAction::*;
        assert_eq!(actions, vec![None, Fire, None, None, Resolve, Fire]);
        assert_eq!(state, AlertState::Firing);
    }

    #[test]
    fn both_thresholds_must_be_exceeded() {
        let s = settings();
        assert!(!condition(&s, c(1_000_000, 10))); // ratio too low
        assert!(!condition(&s, c(0, 9))); // too few failures
        assert!(condition(&s, c(0, 10)));
        assert!(!condition(&s, c(0, 0)));
        let zero = AlertSettings {
            min_failures: 0,
            max_failure_ratio: 0.0,
            ..settings()
        };
        assert!(!condition(&zero, c(5, 0)), "no failures never alerts");
        assert!(condition(&zero, c(5, 1)));
    }

    #[test]
    fn settings_are_strict_with_named_defaults() {
        let s: AlertSettings = toml::from_str("webhook = \"http://hooks.example:8080/x\"").unwrap();
        assert_eq!(s.min_failures, 10);
        assert_eq!(s.window, 86_400);
        assert!(s.validate("tlsrpt.alerts").is_empty());
        let e = toml::from_str::<AlertSettings>("min_failure = 3").unwrap_err();
        assert!(e.to_string().contains("unknown field `min_failure`"), "{e}");
        let bad = AlertSettings {
            webhook: Some("https://hooks.example/x".into()),
            max_failure_ratio: 5.0,
            window: 0,
            ..settings()
        };
        let problems: Vec<String> = bad
            .validate("tlsrpt.alerts")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("tlsrpt.alerts.webhook: "));
        assert!(problems[1].starts_with("tlsrpt.alerts.max_failure_ratio: 5 is not between"));
        assert!(problems[2].starts_with("tlsrpt.alerts.window: "));
    }

    #[test]
    fn webhook_urls() {
        let u = WebhookUrl::parse("http://hooks.example:8080/a/b?c=d").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("hooks.example", 8080, "/a/b?c=d")
        );
        let u = WebhookUrl::parse("HTTP://127.0.0.1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 80, "/")
        );
        let u = WebhookUrl::parse("http://[::1]:9/h").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        for bad in [
            "ftp://x/",
            "http://",
            "http://u@h/",
            "http://h:99999/",
            "http://h/a b",
            "http://h\r\nX: y/",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            WebhookUrl::parse("https://h/"),
            Err(WebhookUrlError::HttpsUnsupported { .. })
        ));
    }

    #[test]
    fn payload_texts() {
        let s = settings();
        assert!(payload(&s, "example.com", c(1, 1), AlertAction::None).is_none());
        let p = payload(&s, "example.com", c(90, 10), AlertAction::Fire).unwrap();
        assert_eq!(p.status, "firing");
        assert_eq!(
            p.text,
            "TLS-RPT: example.com: 10 of 100 inbound TLS sessions failed (10.0%) in the last 86400s"
        );
        let p = payload(&s, "example.com", c(90, 0), AlertAction::Resolve).unwrap();
        assert_eq!(p.status, "resolved");
    }
}
