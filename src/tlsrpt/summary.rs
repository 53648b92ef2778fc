//! The TLS-RPT summary model and its renderers for `mxguard reports` (plain-text table, JSON).
//!
//! Owns: what a summary contains and how it is shown. Pure: the numbers come from
//! `crate::tlsrpt::store`; this module must not touch storage, the terminal or the clock.
//!
//! Counting rules: `successful_sessions` / `failed_sessions` are the sums of each policy's
//! `summary` totals. The breakdowns (by result type, receiving MX, sending IP) are sums of
//! `failure-details[].failed-session-count`, which real senders do not always keep consistent
//! with the totals (Mail.ru reports one failed session with two failure details), so a
//! breakdown can add up to more or less than `failed_sessions`. Reporter-supplied strings are
//! stripped of control characters before they reach a terminal.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Failures and successes for a period, grouped by policy domain and policy type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Reports whose `end-datetime` is at or after this instant are counted.
    #[serde(
        serialize_with = "super::ser_datetime",
        deserialize_with = "super::de_datetime"
    )]
    pub since: OffsetDateTime,
    /// The domain the summary was restricted to, if any.
    pub domain: Option<String>,
    /// Distinct reports counted.
    pub reports: u64,
    /// One entry per (policy domain, policy type), sorted by domain then type.
    pub groups: Vec<GroupSummary>,
}

/// The numbers for one policy domain and policy type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// The policy domain (normalized); `None` when reports omitted `policy-domain`.
    pub domain: Option<String>,
    pub policy_type: String,
    pub reports: u64,
    pub successful_sessions: u64,
    pub failed_sessions: u64,
    pub failures_by_result_type: Vec<Count>,
    pub failures_by_receiving_mx: Vec<Count>,
    pub failures_by_sending_ip: Vec<Count>,
    pub by_organization: Vec<OrgCount>,
}

/// A failed-session count for one key; `key` is `None` when the reports omitted the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub key: Option<String>,
    pub sessions: u64,
}

/// What one reporting organization said about a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgCount {
    pub organization: String,
    pub reports: u64,
    pub successful_sessions: u64,
    pub failed_sessions: u64,
}

impl GroupSummary {
    /// Failed sessions as a fraction of all sessions (0 when there were none).
    pub fn failure_ratio(&self) -> f64 {
        ratio(self.failed_sessions, self.successful_sessions)
    }
}

pub(crate) fn ratio(failed: u64, successful: u64) -> f64 {
    let total = failed as f64 + successful as f64;
    if total == 0.0 {
        0.0
    } else {
        failed as f64 / total
    }
}

/// Renders the summary as pretty JSON (the serde form of [`Summary`]).
pub fn render_json(summary: &Summary) -> String {
    // Serializing plain structs of strings and integers cannot fail; the datetime is always
    // in RFC 3339 range because it came from the clock or a parsed argument.
    serde_json::to_string_pretty(summary).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Sessions of one policy type on one UTC day (the day the report period starts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailySessions {
    /// Days since 1970-01-01.
    pub day: i64,
    pub policy_type: String,
    pub successful: u64,
    pub failed: u64,
}

/// Rows shown per breakdown (sending IPs, MX hosts, …) unless everything is asked for.
pub const TOP: usize = 10;

/// Renders the summary as a plain-text table followed by per-group failure breakdowns, each
/// cut to the [`TOP`] rows unless `all`.
pub fn render_text(summary: &Summary, all: bool) -> String {
    let top = if all { usize::MAX } else { TOP };
    let mut out = String::new();
    let since = summary
        .since
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| summary.since.to_string());
    let scope = match &summary.domain {
        Some(d) => clean(d),
        None => "all domains".to_string(),
    };
    let _ = writeln!(
        out,
        "TLS-RPT reports since {since} ({scope}): {} report{}",
        summary.reports,
        if summary.reports == 1 { "" } else { "s" }
    );
    if summary.groups.is_empty() {
        out.push_str("no reports\n");
        return out;
    }
    out.push('\n');
    let rows: Vec<[String; 6]> = summary
        .groups
        .iter()
        .map(|g| {
            [
                domain_label(&g.domain),
                clean(&g.policy_type),
                g.reports.to_string(),
                g.successful_sessions.to_string(),
                g.failed_sessions.to_string(),
                format!("{:.1}%", g.failure_ratio() * 100.0),
            ]
        })
        .collect();
    let header = [
        "DOMAIN",
        "POLICY",
        "REPORTS",
        "SUCCESSFUL",
        "FAILED",
        "FAILED%",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    write_row(&mut out, &header.map(String::from), &widths);
    for row in &rows {
        write_row(&mut out, row, &widths);
    }
    for g in summary
        .groups
        .iter()
        .filter(|g| g.failed_sessions > 0 || !g.failures_by_result_type.is_empty())
    {
        let _ = writeln!(
            out,
            "\n{} ({}): {} failed session{}",
            domain_label(&g.domain),
            clean(&g.policy_type),
            g.failed_sessions,
            if g.failed_sessions == 1 { "" } else { "s" }
        );
        write_counts(&mut out, "by result type", &g.failures_by_result_type, top);
        write_counts(
            &mut out,
            "by receiving MX",
            &g.failures_by_receiving_mx,
            top,
        );
        write_counts(&mut out, "by sending IP", &g.failures_by_sending_ip, top);
        let orgs: Vec<Count> = g
            .by_organization
            .iter()
            .filter(|o| o.failed_sessions > 0)
            .map(|o| Count {
                key: Some(o.organization.clone()),
                sessions: o.failed_sessions,
            })
            .collect();
        write_counts(&mut out, "by reporting organization", &orgs, top);
    }
    out
}

fn write_row(out: &mut String, cells: &[String; 6], widths: &[usize; 6]) {
    let mut line = String::new();
    for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        // Text columns left-aligned, numbers right-aligned.
        if i < 2 {
            let _ = write!(line, "{cell:<w$}");
        } else {
            let _ = write!(line, "{cell:>w$}");
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

fn write_counts(out: &mut String, title: &str, counts: &[Count], top: usize) {
    if counts.is_empty() {
        return;
    }
    let _ = writeln!(out, "  {title}:");
    let shown = &counts[..counts.len().min(top)];
    let labels: Vec<String> = shown.iter().map(|c| key_label(&c.key)).collect();
    let width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    for (label, c) in labels.iter().zip(shown) {
        let _ = writeln!(out, "    {label:<width$}  {}", c.sessions);
    }
    if counts.len() > shown.len() {
        let rest: u64 = counts[shown.len()..].iter().map(|c| c.sessions).sum();
        let _ = writeln!(
            out,
            "    … {} more ({rest} sessions; --all shows them)",
            counts.len() - shown.len()
        );
    }
}

fn domain_label(d: &Option<String>) -> String {
    d.as_deref()
        .map_or_else(|| "(no domain)".to_string(), clean)
}

fn key_label(k: &Option<String>) -> String {
    k.as_deref()
        .map_or_else(|| "(not given)".to_string(), clean)
}

/// Reporter-supplied text without control characters (no terminal escapes), at most 80 chars.
/// A reporter's string for a terminal: control characters replaced, at most 80 characters.
pub(crate) fn clean(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    super::truncate(&s, 80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sample() -> Summary {
        Summary {
            since: datetime!(2024-01-01 0:00 UTC),
            domain: None,
            reports: 2,
            groups: vec![
                GroupSummary {
                    domain: Some("example.com".into()),
                    policy_type: "sts".into(),
                    reports: 2,
                    successful_sessions: 0,
                    failed_sessions: 4,
                    failures_by_result_type: vec![
                        Count {
                            key: Some("validation-failure".into()),
                            sessions: 3,
                        },
                        Count {
                            key: Some("sts-policy-fetch-error".into()),
                            sessions: 2,
                        },
                    ],
                    failures_by_receiving_mx: vec![Count {
                        key: None,
                        sessions: 2,
                    }],
                    failures_by_sending_ip: vec![],
                    by_organization: vec![OrgCount {
                        organization: "Evil\x1b[31mOrg".into(),
                        reports: 1,
                        successful_sessions: 0,
                        failed_sessions: 3,
                    }],
                },
                GroupSummary {
                    domain: None,
                    policy_type: "no-policy-found".into(),
                    reports: 1,
                    successful_sessions: 48,
                    failed_sessions: 0,
                    failures_by_result_type: vec![],
                    failures_by_receiving_mx: vec![],
                    failures_by_sending_ip: vec![],
                    by_organization: vec![],
                },
            ],
        }
    }

    #[test]
    fn text_table_shows_groups_and_breakdowns() {
        let text = render_text(&sample(), false);
        assert!(
            text.starts_with(
                "TLS-RPT reports since 2024-01-01T00:00:00Z (all domains): 2 reports\n"
            )
        );
        assert!(
            text.contains("DOMAIN       POLICY           REPORTS  SUCCESSFUL  FAILED  FAILED%\n"),
            "{text}"
        );
        assert!(
            text.contains("example.com  sts                    2           0       4   100.0%\n"),
            "{text}"
        );
        assert!(
            text.contains("(no domain)  no-policy-found        1          48       0     0.0%\n"),
            "{text}"
        );
        assert!(text.contains("    validation-failure      3\n"), "{text}");
        assert!(text.contains("    (not given)  2\n"), "{text}");
        // Terminal escapes from reporters are neutralized.
        assert!(!text.contains('\x1b'));
        assert!(text.contains("Evil?[31mOrg  3"), "{text}");
    }

    #[test]
    fn breakdowns_show_the_top_ten_unless_all() {
        let mut s = sample();
        s.groups[0].failures_by_sending_ip = (0..25)
            .map(|i| Count {
                key: Some(format!("192.0.2.{i}")),
                sessions: 100 - i,
            })
            .collect();
        let text = render_text(&s, false);
        assert!(text.contains("    192.0.2.9  91\n"), "{text}");
        assert!(!text.contains("192.0.2.10 "), "{text}");
        assert!(
            text.contains("    … 15 more (1245 sessions; --all shows them)\n"),
            "{text}"
        );
        let all = render_text(&s, true);
        assert!(all.contains("    192.0.2.24  76\n"), "{all}");
        assert!(!all.contains("more ("), "{all}");
    }

    #[test]
    fn empty_summary_says_so() {
        let s = Summary {
            since: datetime!(2024-01-01 0:00 UTC),
            domain: Some("example.com".into()),
            reports: 0,
            groups: vec![],
        };
        assert_eq!(
            render_text(&s, false),
            "TLS-RPT reports since 2024-01-01T00:00:00Z (example.com): 0 reports\nno reports\n"
        );
    }

    #[test]
    fn json_round_trips() {
        let s = sample();
        let json = render_json(&s);
        assert!(
            json.contains("\"since\": \"2024-01-01T00:00:00Z\""),
            "{json}"
        );
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
