//! When to renew a certificate and when to retry a failed attempt. Pure: time and randomness
//! are passed in, so every rule is tested with injected values.
//!
//! - Without ARI: renew when a third of the lifetime remains, minus a random jitter of up to
//!   [`JITTER_FRACTION`] of the lifetime (so many certificates issued together do not renew
//!   together).
//! - With ARI (RFC 9773): a uniformly random point in the CA's suggested window; a window
//!   already past means now.
//! - Failures: exponential backoff from [`BACKOFF_BASE`] doubling per attempt, capped at
//!   [`BACKOFF_CAP`]; permanent failures wait the cap at once; a CA's Retry-After is honoured.

use std::time::{Duration, SystemTime};

/// Largest jitter before the one-third point, as a fraction of the lifetime.
pub(crate) const JITTER_FRACTION: f64 = 0.05;
/// First retry delay after a transient failure (default of `acme.retry_initial`).
pub(crate) const BACKOFF_BASE: Duration = Duration::from_secs(60);
/// Longest retry delay (default of `acme.retry_max`).
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(6 * 3600);

/// Retry delays: `base` doubling per attempt up to `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: BACKOFF_BASE,
            cap: BACKOFF_CAP,
        }
    }
}

/// How a failed attempt is classed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FailureClass {
    /// Network trouble, CA errors, timeouts: retried soon with backoff.
    Transient,
    /// The CA refused (unauthorized, CAA, rejected identifier): retried only at the cap, and
    /// logged at error level since it needs a human.
    Permanent,
}

/// Renewal time without ARI. `jitter` is a random number in `[0, 1)`.
pub(crate) fn one_third_rule(
    not_before: SystemTime,
    not_after: SystemTime,
    jitter: f64,
) -> SystemTime {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    let third = lifetime / 3;
    let jitter = lifetime.mul_f64(JITTER_FRACTION * jitter.clamp(0.0, 1.0));
    not_after.checked_sub(third + jitter).unwrap_or(not_before)
}

/// Renewal time from an ARI suggested window. `pick` is a random number in `[0, 1)`.
pub(crate) fn ari_time(
    start: SystemTime,
    end: SystemTime,
    now: SystemTime,
    pick: f64,
) -> SystemTime {
    if end <= now {
        return now;
    }
    let span = end.duration_since(start).unwrap_or(Duration::ZERO);
    let t = start + span.mul_f64(pick.clamp(0.0, 1.0));
    t.max(now)
}

/// Delay before retry number `attempt` (1 = first retry).
pub(crate) fn backoff(attempt: u32, class: FailureClass, b: Backoff) -> Duration {
    match class {
        FailureClass::Permanent => b.cap,
        FailureClass::Transient => {
            let exp = attempt.saturating_sub(1).min(20);
            b.base.saturating_mul(1u32 << exp).min(b.cap)
        }
    }
}

/// When to retry after a failure: the backoff, or the CA's Retry-After if later (but never
/// beyond the cap from now).
pub(crate) fn retry_time(
    now: SystemTime,
    attempt: u32,
    class: FailureClass,
    retry_after: Option<SystemTime>,
    b: Backoff,
) -> SystemTime {
    let t = now + backoff(attempt, class, b);
    match retry_after {
        Some(ra) if ra > t => ra.min(now + b.cap),
        _ => t,
    }
}

/// [`retry_time`] for a certificate that expires at `not_after` (None: none is served yet):
/// the backoff (also the cap a permanent failure waits at once) never reaches past half the
/// remaining lifetime, so a failure hours before expiry is retried before it, not after.
/// Retries never come closer than `b.base`; a CA's Retry-After still wins.
pub(crate) fn retry_time_before_expiry(
    now: SystemTime,
    attempt: u32,
    class: FailureClass,
    retry_after: Option<SystemTime>,
    b: Backoff,
    not_after: Option<SystemTime>,
) -> SystemTime {
    let mut delay = backoff(attempt, class, b);
    if let Some(na) = not_after {
        let remaining = na.duration_since(now).unwrap_or(Duration::ZERO);
        delay = delay.min((remaining / 2).max(b.base));
    }
    let t = now + delay;
    match retry_after {
        Some(ra) if ra > t => ra.min(now + b.cap),
        _ => t,
    }
}

/// True when the certificate is close enough to expiry that failing to renew it is an
/// emergency: less than a tenth of its lifetime, or under 3 days, remains — but never before
/// half the renewal window (the last third) has passed, so a short-lived certificate (6 days)
/// is not an emergency the moment its renewal starts.
pub(crate) fn near_expiry(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    let remaining = not_after.duration_since(now).unwrap_or(Duration::ZERO);
    remaining < (lifetime / 10).max(Duration::from_secs(3 * 86_400).min(lifetime / 6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn t(days: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + DAY * days as u32 + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn ninety_day_cert_renews_at_day_sixty_without_jitter() {
        assert_eq!(one_third_rule(t(0), t(90), 0.0), t(60));
    }

    #[test]
    fn jitter_moves_renewal_earlier_by_at_most_five_percent() {
        let latest = one_third_rule(t(0), t(90), 0.0);
        let earliest = one_third_rule(t(0), t(90), 0.999_999);
        assert!(earliest < latest);
        assert!(latest.duration_since(earliest).unwrap() <= (DAY * 90).mul_f64(JITTER_FRACTION));
    }

    proptest! {
        #[test]
        fn renewal_always_within_lifetime_and_before_two_thirds(
            life in 1u64..400, jitter in 0.0f64..1.0
        ) {
            let r = one_third_rule(t(0), t(life), jitter);
            prop_assert!(r >= t(0));
            prop_assert!(r <= t(0) + (DAY * life as u32) * 2 / 3 + Duration::from_secs(1));
        }

        #[test]
        fn ari_time_is_inside_window_or_now(pick in 0.0f64..1.0, now_day in 0u64..20) {
            let now = t(now_day);
            let r = ari_time(t(5), t(10), now, pick);
            prop_assert!(r >= now);
            if now < t(10) {
                prop_assert!(r >= t(5) && r <= t(10));
            } else {
                prop_assert_eq!(r, now);
            }
        }
    }

    #[test]
    fn ari_window_choice_from_recorded_response() {
        // A renewalInfo response as Let's Encrypt sends it (RFC 9773 §4.2).
        let recorded = r#"{"suggestedWindow":{"start":"2026-12-20T10:00:00Z","end":"2026-12-22T10:00:00Z"},"explanationURL":"https://example.com/why"}"#;
        let v: serde_json::Value = serde_json::from_str(recorded).unwrap();
        let parse = |s: &str| -> SystemTime {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .unwrap()
                .into()
        };
        let start = parse(v["suggestedWindow"]["start"].as_str().unwrap());
        let end = parse(v["suggestedWindow"]["end"].as_str().unwrap());
        let now = parse("2026-11-28T00:00:00Z");
        assert_eq!(ari_time(start, end, now, 0.0), start);
        assert_eq!(ari_time(start, end, now, 0.5), start + DAY);
        // Window already past: renew now.
        let late = parse("2026-12-23T00:00:00Z");
        assert_eq!(ari_time(start, end, late, 0.3), late);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(
            backoff(1, FailureClass::Transient, Backoff::default()),
            BACKOFF_BASE
        );
        assert_eq!(
            backoff(2, FailureClass::Transient, Backoff::default()),
            BACKOFF_BASE * 2
        );
        assert_eq!(
            backoff(4, FailureClass::Transient, Backoff::default()),
            BACKOFF_BASE * 8
        );
        assert_eq!(
            backoff(30, FailureClass::Transient, Backoff::default()),
            BACKOFF_CAP
        );
        assert_eq!(
            backoff(u32::MAX, FailureClass::Transient, Backoff::default()),
            BACKOFF_CAP
        );
        assert_eq!(
            backoff(1, FailureClass::Permanent, Backoff::default()),
            BACKOFF_CAP
        );
    }

    #[test]
    fn retry_after_is_honoured_but_capped() {
        let now = t(0);
        let ra = now + Duration::from_secs(3600);
        assert_eq!(
            retry_time(
                now,
                1,
                FailureClass::Transient,
                Some(ra),
                Backoff::default()
            ),
            ra
        );
        let far = now + DAY * 30;
        assert_eq!(
            retry_time(
                now,
                1,
                FailureClass::Transient,
                Some(far),
                Backoff::default()
            ),
            now + BACKOFF_CAP
        );
        assert_eq!(
            retry_time(now, 1, FailureClass::Transient, None, Backoff::default()),
            now + BACKOFF_BASE
        );
    }

    #[test]
    fn short_lived_certificate_is_not_near_expiry_when_its_renewal_starts() {
        // 160 hours (Let's Encrypt's short-lived profile): renewal at about 53 h before
        // expiry. A failure an hour later is a warning, not an emergency.
        let nb = t(0);
        let na = nb + Duration::from_secs(160 * 3600);
        let renew = one_third_rule(nb, na, 0.0);
        assert!(!near_expiry(nb, na, renew + Duration::from_secs(3600)));
        assert!(!near_expiry(nb, na, na - Duration::from_secs(27 * 3600)));
        assert!(near_expiry(nb, na, na - Duration::from_secs(26 * 3600)));
        // The test CA's 40-second certificates alike.
        let na = nb + Duration::from_secs(40);
        let renew = one_third_rule(nb, na, 0.5);
        assert!(!near_expiry(nb, na, renew + Duration::from_secs(1)));
        assert!(near_expiry(nb, na, na - Duration::from_secs(6)));
    }

    proptest! {
        #[test]
        fn renewal_time_is_never_near_expiry(
            life_s in 3600u64..400 * 86_400, jitter in 0.0f64..1.0
        ) {
            let nb = t(0);
            let na = nb + Duration::from_secs(life_s);
            let renew = one_third_rule(nb, na, jitter);
            // Even some time into the renewal window (a few failed attempts).
            let later = renew + Duration::from_secs(life_s / 50);
            prop_assert!(!near_expiry(nb, na, later));
            prop_assert!(near_expiry(nb, na, na - Duration::from_secs(life_s / 11)));
        }
    }

    #[test]
    fn permanent_failure_two_hours_before_expiry_is_retried_before_expiry() {
        let now = t(0);
        let na = now + Duration::from_secs(2 * 3600);
        // Before: the 6-hour cap at once, four hours after the certificate expired.
        assert_eq!(
            retry_time(now, 1, FailureClass::Permanent, None, Backoff::default()),
            now + BACKOFF_CAP
        );
        let r = retry_time_before_expiry(
            now,
            1,
            FailureClass::Permanent,
            None,
            Backoff::default(),
            Some(na),
        );
        assert_eq!(r, now + Duration::from_secs(3600));
        // Transient backoff is shortened the same way, but never below the base delay.
        let late = na - Duration::from_secs(30);
        let r = retry_time_before_expiry(
            late,
            9,
            FailureClass::Transient,
            None,
            Backoff::default(),
            Some(na),
        );
        assert_eq!(r, late + BACKOFF_BASE);
        // Far from expiry nothing changes; a Retry-After still wins.
        let far = now + DAY * 60;
        assert_eq!(
            retry_time_before_expiry(
                now,
                1,
                FailureClass::Permanent,
                None,
                Backoff::default(),
                Some(far)
            ),
            now + BACKOFF_CAP
        );
        let ra = now + Duration::from_secs(5 * 3600);
        assert_eq!(
            retry_time_before_expiry(
                now,
                1,
                FailureClass::Transient,
                Some(ra),
                Backoff::default(),
                Some(na)
            ),
            ra
        );
    }

    proptest! {
        #[test]
        fn retries_of_a_served_certificate_come_before_its_expiry(
            remaining_s in 240u64..90 * 86_400, attempt in 1u32..40, permanent: bool
        ) {
            let now = t(0);
            let na = now + Duration::from_secs(remaining_s);
            let class = if permanent { FailureClass::Permanent } else { FailureClass::Transient };
            let r = retry_time_before_expiry(now, attempt, class, None, Backoff::default(), Some(na));
            prop_assert!(r < na);
            prop_assert!(r >= now + BACKOFF_BASE);
        }
    }

    #[test]
    fn near_expiry_threshold() {
        assert!(!near_expiry(t(0), t(90), t(60)));
        assert!(near_expiry(t(0), t(90), t(88)));
        assert!(near_expiry(t(0), t(90), t(95)));
    }
}
