//! TLS-RPT metrics: intake counters and their Prometheus text rendering.
//!
//! Owns: [`IntakeCounters`] (lock-free atomics bumped by the HTTP intake), the rejection
//! reasons, and [`render`], a pure function from counter snapshots and store totals to the
//! Prometheus text exposition format. Must not touch storage or sockets; the caller queries
//! `crate::tlsrpt::store` for the session totals.
//!
//! `mxguard_tlsrpt_sessions_total` is computed from the stored reports, so it drops when
//! retention deletes old reports; Prometheus treats that as a counter reset.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why the intake refused a report (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    UnsupportedMediaType,
    TooLarge,
    InvalidGzip,
    InvalidReport,
    ReadTimeout,
    ReadError,
    Storage,
    Busy,
    Expired,
}

impl RejectReason {
    pub const ALL: [RejectReason; 9] = [
        RejectReason::UnsupportedMediaType,
        RejectReason::TooLarge,
        RejectReason::InvalidGzip,
        RejectReason::InvalidReport,
        RejectReason::ReadTimeout,
        RejectReason::ReadError,
        RejectReason::Storage,
        RejectReason::Busy,
        RejectReason::Expired,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::UnsupportedMediaType => "unsupported_media_type",
            RejectReason::TooLarge => "too_large",
            RejectReason::InvalidGzip => "invalid_gzip",
            RejectReason::InvalidReport => "invalid_report",
            RejectReason::ReadTimeout => "read_timeout",
            RejectReason::ReadError => "read_error",
            RejectReason::Busy => "busy",
            RejectReason::Expired => "expired",
            RejectReason::Storage => "storage",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters bumped by the intake; cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct IntakeCounters {
    received: AtomicU64,
    duplicates: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
}

/// A point-in-time copy of [`IntakeCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Reports acknowledged with 2xx (new and duplicate).
    pub received: u64,
    /// Of those, retransmissions of a stored report.
    pub duplicates: u64,
    pub rejected: Vec<(RejectReason, u64)>,
}

impl IntakeCounters {
    /// Counts an acknowledged report.
    pub fn received(&self, duplicate: bool) {
        self.received.fetch_add(1, Ordering::Relaxed);
        if duplicate {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a refused report.
    pub fn rejected(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            received: self.received.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            rejected: RejectReason::ALL
                .iter()
                .map(|r| (*r, self.rejected[r.index()].load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

/// Stored session totals for one domain and policy type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTotal {
    pub domain: Option<String>,
    pub policy_type: String,
    pub successful: u64,
    pub failed: u64,
}

/// When the last report for a domain was received (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastReport {
    pub domain: Option<String>,
    pub received_at: i64,
}

/// Renders the Prometheus text format (version 0.0.4).
pub fn render(
    counters: &CounterSnapshot,
    sessions: &[SessionTotal],
    last: &[LastReport],
) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP mxguard_tlsrpt_reports_received_total TLS-RPT reports acknowledged (new and duplicate).\n\
         # TYPE mxguard_tlsrpt_reports_received_total counter\n",
    );
    let _ = writeln!(
        out,
        "mxguard_tlsrpt_reports_received_total {}",
        counters.received
    );
    out.push_str(
        "# HELP mxguard_tlsrpt_reports_duplicate_total TLS-RPT reports that repeated a stored report.\n\
         # TYPE mxguard_tlsrpt_reports_duplicate_total counter\n",
    );
    let _ = writeln!(
        out,
        "mxguard_tlsrpt_reports_duplicate_total {}",
        counters.duplicates
    );
    out.push_str(
        "# HELP mxguard_tlsrpt_reports_rejected_total TLS-RPT reports refused, by reason.\n\
         # TYPE mxguard_tlsrpt_reports_rejected_total counter\n",
    );
    for (reason, n) in &counters.rejected {
        let _ = writeln!(
            out,
            "mxguard_tlsrpt_reports_rejected_total{{reason=\"{}\"}} {n}",
            reason.label()
        );
    }
    out.push_str(
        "# HELP mxguard_tlsrpt_sessions_total Sessions reported by senders in stored TLS-RPT reports.\n\
         # TYPE mxguard_tlsrpt_sessions_total counter\n",
    );
    for s in sessions {
        let domain = escape(s.domain.as_deref().unwrap_or(""));
        let policy = escape(&s.policy_type);
        for (result, n) in [("successful", s.successful), ("failed", s.failed)] {
            let _ = writeln!(
                out,
                "mxguard_tlsrpt_sessions_total{{domain=\"{domain}\",policy_type=\"{policy}\",result=\"{result}\"}} {n}"
            );
        }
    }
    out.push_str(
        "# HELP mxguard_tlsrpt_last_report_timestamp_seconds When the last TLS-RPT report for a domain was received.\n\
         # TYPE mxguard_tlsrpt_last_report_timestamp_seconds gauge\n",
    );
    for l in last {
        let _ = writeln!(
            out,
            "mxguard_tlsrpt_last_report_timestamp_seconds{{domain=\"{}\"}} {}",
            escape(l.domain.as_deref().unwrap_or("")),
            l.received_at
        );
    }
    out
}

/// Escapes a label value (backslash, double quote, newline), as the format requires.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_sessions_and_timestamps() {
        let c = IntakeCounters::default();
        c.received(false);
        c.received(true);
        c.rejected(RejectReason::TooLarge);
        c.rejected(RejectReason::TooLarge);
        let text = render(
            &c.snapshot(),
            &[SessionTotal {
                domain: Some("example.com".into()),
                policy_type: "sts".into(),
                successful: 5,
                failed: 3,
            }],
            &[LastReport {
                domain: Some("example.com".into()),
                received_at: 1_700_000_000,
            }],
        );
        for line in [
            "mxguard_tlsrpt_reports_received_total 2\n",
            "mxguard_tlsrpt_reports_duplicate_total 1\n",
            "mxguard_tlsrpt_reports_rejected_total{reason=\"too_large\"} 2\n",
            "mxguard_tlsrpt_reports_rejected_total{reason=\"invalid_report\"} 0\n",
            "mxguard_tlsrpt_sessions_total{domain=\"example.com\",policy_type=\"sts\",result=\"successful\"} 5\n",
            "mxguard_tlsrpt_sessions_total{domain=\"example.com\",policy_type=\"sts\",result=\"failed\"} 3\n",
            "mxguard_tlsrpt_last_report_timestamp_seconds{domain=\"example.com\"} 1700000000\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // Every non-comment line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.rsplit_once(' ').unwrap().1.parse::<u64>().is_ok(),
                "{line}"
            );
        }
    }

    #[test]
    fn label_values_from_reporters_are_escaped() {
        let text = render(
            &CounterSnapshot::default(),
            &[SessionTotal {
                domain: Some("a\"b\\c\nd".into()),
                policy_type: "x".into(),
                successful: 1,
                failed: 0,
            }],
            &[],
        );
        assert!(text.contains("domain=\"a\\\"b\\\\c\\nd\""), "{text}");
        assert_eq!(text.lines().filter(|l| l.contains("a\\\"b")).count(), 2);
    }
}
