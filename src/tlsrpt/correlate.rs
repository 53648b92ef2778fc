//! Sets reported failures against mxguard's own changes (the change journal): failures of one
//! result type at one MX, reported for periods that cover a rollover step, a certificate
//! deployment or a policy change of the domain, are named together with that change — the
//! first place an owner looks after a key roll.
//!
//! Pure: failures and changes in, lines out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::changelog::ChangeEvent;

/// One failure-details entry of a stored report, with the report's period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailurePeriod {
    pub organization: String,
    /// Unix seconds.
    pub start: i64,
    pub end: i64,
    pub result_type: String,
    pub mx: Option<String>,
    pub sessions: u64,
}

/// Failures that overlap one of mxguard's changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlap {
    pub result_type: String,
    pub mx: Option<String>,
    pub organizations: usize,
    pub sessions: u64,
    /// The change (unix seconds, kind, subject, detail).
    pub change_at: u64,
    pub change_kind: String,
    pub change_subject: String,
    pub change_detail: String,
    /// One line for people.
    pub text: String,
}

/// Changes that can show in a domain's reports: the domain itself, its policy host, hosts
/// under it and the MX hosts the failures name.
fn concerns(domain: &str, change: &ChangeEvent, mx: &[&str]) -> bool {
    matches!(change.kind.as_str(), "rollover" | "certificate" | "policy")
        && (change.subject == domain
            || change.subject.ends_with(&format!(".{domain}"))
            || mx.contains(&change.subject.as_str()))
}

fn when(t: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t as i64)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

fn span(secs: i64) -> String {
    match secs {
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// A change this long before a failing period still counts (its effect shows in the next
/// reports: senders cache policies and records).
const LOOKBACK: i64 = 86_400;

/// Groups `failures` of `domain` by (result type, MX) and names, for each group, the latest
/// change of the domain inside the group's reported periods or up to a day before one.
pub fn overlaps(domain: &str, failures: &[FailurePeriod], changes: &[ChangeEvent]) -> Vec<Overlap> {
    let mut groups: BTreeMap<(String, Option<String>), Vec<&FailurePeriod>> = BTreeMap::new();
    for f in failures.iter().filter(|f| f.sessions > 0) {
        groups
            .entry((f.result_type.clone(), f.mx.clone()))
            .or_default()
            .push(f);
    }
    let mut out = Vec::new();
    for ((result_type, mx), fs) in groups {
        let names: Vec<&str> = fs.iter().filter_map(|f| f.mx.as_deref()).collect();
        let inside = |c: &&ChangeEvent| {
            let at = c.at as i64;
            fs.iter().any(|f| f.start - LOOKBACK <= at && at <= f.end)
        };
        let Some(change) = changes
            .iter()
            .filter(|c| concerns(domain, c, &names))
            .filter(inside)
            .max_by_key(|c| c.at)
        else {
            continue;
        };
        // Only the failures of periods around that change count.
        let at = change.at as i64;
        let fs: Vec<&FailurePeriod> = fs
            .into_iter()
            .filter(|f| f.start - LOOKBACK <= at && at <= f.end)
            .collect();
        let mut orgs: Vec<&str> = fs.iter().map(|f| f.organization.as_str()).collect();
        orgs.sort();
        orgs.dedup();
        let sessions: u64 = fs.iter().fold(0u64, |a, f| a.saturating_add(f.sessions));
        // When the failing periods start after the change, say how long after.
        let first = fs.iter().map(|f| f.start).min().unwrap_or(0);
        let relation = if first >= change.at as i64 {
            format!("starting {} after", span(first - change.at as i64))
        } else {
            "in reports covering".to_string()
        };
        let text = format!(
            "{} for {} from {} organization{} ({sessions} sessions), {relation} mxguard's {} of {} at {} ({})",
            super::summary::clean(&result_type),
            mx.as_deref()
                .map(super::summary::clean)
                .unwrap_or_else(|| "(MX not given)".into()),
            orgs.len(),
            if orgs.len() == 1 { "" } else { "s" },
            change.kind,
            change.subject,
            when(change.at),
            change.detail
        );
        out.push(Overlap {
            result_type,
            mx,
            organizations: orgs.len(),
            sessions,
            change_at: change.at,
            change_kind: change.kind.clone(),
            change_subject: change.subject.clone(),
            change_detail: change.detail.clone(),
            text,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(org: &str, start: i64, result_type: &str, mx: &str, n: u64) -> FailurePeriod {
        FailurePeriod {
            organization: org.into(),
            start,
            end: start + 86_399,
            result_type: result_type.into(),
            mx: Some(mx.into()),
            sessions: n,
        }
    }

    fn change(at: u64, kind: &str, subject: &str) -> ChangeEvent {
        ChangeEvent {
            at,
            kind: kind.into(),
            subject: subject.into(),
            detail: "key roll starts".into(),
        }
    }

    #[test]
    fn failures_over_a_key_roll_name_it() {
        let day = 1_764_460_800; // 2025-11-30 00:00 UTC
        let failures = [
            // Two days earlier: not around the roll, not counted.
            f(
                "Yahoo",
                day - 2 * 86_400,
                "validation-failure",
                "mx1.example.com",
                7,
            ),
            f("Google", day, "validation-failure", "mx1.example.com", 20),
            f("Microsoft", day, "validation-failure", "mx1.example.com", 5),
            f("Mail.Ru", day, "validation-failure", "mx1.example.com", 1),
            f(
                "Google",
                day,
                "starttls-not-supported",
                "mx2.example.com",
                3,
            ),
        ];
        let changes = [
            change(day as u64 + 36_000, "rollover", "mx1.example.com"),
            change(day as u64 + 37_000, "reload", "/etc/mxguard.toml"),
            // Another domain's change never counts.
            change(day as u64 + 38_000, "rollover", "mx.other.example"),
        ];
        let o = overlaps("example.com", &failures, &changes);
        // mx2's failures: the only change in their period is mx1's roll; it is under the
        // domain, so it is named there too.
        assert_eq!(o.len(), 2);
        let v = o
            .iter()
            .find(|x| x.result_type == "validation-failure")
            .unwrap();
        assert_eq!(v.organizations, 3);
        assert_eq!(v.sessions, 26);
        assert_eq!(v.change_subject, "mx1.example.com");
        assert_eq!(
            v.text,
            "validation-failure for mx1.example.com from 3 organizations (26 sessions), in reports covering mxguard's rollover of mx1.example.com at 2025-11-30 10:00 UTC (key roll starts)"
        );
        // Reports for a later period: "starting … after".
        let later = [f(
            "Google",
            day + 40 * 60 + 36_000,
            "validation-failure",
            "mx1.example.com",
            4,
        )];
        let o = overlaps(
            "example.com",
            &later,
            &[change(day as u64 + 36_000, "rollover", "mx1.example.com")],
        );
        assert_eq!(o.len(), 1);
        assert!(
            o[0].text.contains("(4 sessions), starting 40 min after mxguard's rollover of mx1.example.com at 2025-11-30 10:00 UTC"),
            "{}",
            o[0].text
        );
        // A change two days before: unrelated.
        let o = overlaps(
            "example.com",
            &later,
            &[change(
                day as u64 - 2 * 86_400,
                "rollover",
                "mx1.example.com",
            )],
        );
        assert!(o.is_empty());
        // No change inside the periods: nothing to say.
        assert!(overlaps("example.com", &failures, &[]).is_empty());
    }
}
