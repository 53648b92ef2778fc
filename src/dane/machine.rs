//! The DANE TLSA rollover state machine (RFC 7671 §8.1): the one place that decides when an
//! MX key changes, when its TLSA records change and when a certificate for a new key is
//! ordered and deployed.
//!
//! Invariant it guarantees: **an MX never presents a key whose `3 1 1` record has not been
//! served by every authoritative server for at least the hold time (≥ 2×TTL), and a key's
//! record is withdrawn only after the key is verified to be no longer presented.**
//!
//! Pure: [`step`] maps (state, event, now) to a new state; [`published`] derives the TLSA set
//! from a state; [`action`] says what the executor must do next. No I/O, no clock. The
//! executor (`super::executor`) persists every new state *before* performing the action it implies,
//! so a crash anywhere resumes at the same step (every action is idempotent).

use serde::{Deserialize, Serialize};

/// A key, named by the SHA-256 of its SubjectPublicKeyInfo (hex) — also its `3 1 1` data.
pub(crate) type KeyId = String;

/// Where a roll is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub(crate) enum Phase {
    /// Records {current, next} are published; waiting until every authoritative server serves
    /// `serial` (or a later one), then until `hold` has passed since then.
    Propagating {
        serial: u32,
        /// When every server was first seen serving `serial` (unix seconds).
        seen_everywhere_at: Option<u64>,
    },
    /// The next key's record is public long enough: a roll may start.
    Stable,
    /// Ordering a certificate for the next key.
    Issuing,
    /// The certificate for the next key is stored; writing it for the MTA and reloading.
    Deploying,
    /// Checking that the live MX presents the next key.
    Verifying,
}

/// One MX host's persisted rollover state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RollState {
    /// The key the MTA presents (or presented before the current roll).
    pub current: KeyId,
    /// The pre-published key the next roll switches to.
    pub next: KeyId,
    #[serde(flatten)]
    pub phase: Phase,
    /// When the current key went live (unix seconds): rolls are due by key age.
    pub current_since: u64,
    /// A roll was requested (`mxguard rotate`) and not started yet.
    #[serde(default)]
    pub requested: bool,
    /// Consecutive failures of the current step, for backoff and alerts.
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Not before this time is the current step retried (unix seconds).
    #[serde(default)]
    pub retry_at: Option<u64>,
    /// Why the roll waits for the servers, while it does (e.g. which secondary is behind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// The key the MX presented before mxguard's first certificate went live (another tool's
    /// certificate): its record stays published until the MX is seen presenting `current`,
    /// and that first deployment waits until `current`'s record is public for the hold time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<KeyId>,
    /// Whether the MX presented a key could not be told when the rollover began (no answer,
    /// or a certificate not valid for the host): mxguard's first certificate then also waits
    /// until its record is public for the hold time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold_first_deploy: bool,
}

/// Timing of rolls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// How long a record must be served everywhere before its key may go live:
    /// max(2×TTL, configured minimum).
    pub hold: u64,
    /// Roll when the current key is this old (seconds).
    pub key_age: u64,
    /// First retry delay after a failed step; doubles, capped at `retry_max`.
    pub retry_initial: u64,
    pub retry_max: u64,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// Periodic check; `all_serve` says whether every authoritative server serves the state's
    /// propagation serial (or later).
    Tick { all_serve: bool },
    /// `mxguard rotate`.
    RotateRequested,
    /// A new zone carrying this state's records was published with `serial`.
    Published { serial: u32 },
    /// The certificate for the next key is stored.
    Issued,
    /// Files written and reload command succeeded.
    Deployed,
    /// The live MX presents `key`.
    Observed { key: KeyId },
    /// The current step failed.
    Failed { reason: String },
    /// A fresh key was generated to become the new `next` (after a successful roll).
    NewNextKey { key: KeyId },
}

/// What the executor must do for a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Build and publish the zone with [`published`] records, then report `Published`.
    Publish,
    /// Wait (tick later): until `deadline` or for secondaries.
    Wait { deadline: Option<u64> },
    /// Order a certificate for the next key.
    Issue,
    /// Write the next key and its certificate for the MTA and run the reload command.
    Deploy,
    /// Connect to the MX and report which key it presents.
    Verify,
    /// Generate a new next key (the roll completed).
    GenerateNext,
}

/// The initial state for an MX whose key is `current`, with a freshly generated `next`;
/// `prior` is the key the MX presents right now when that is another one.
pub(crate) fn initial(current: KeyId, next: KeyId, prior: Option<KeyId>, now: u64) -> RollState {
    let prior = prior.filter(|p| *p != current && *p != next);
    RollState {
        current,
        next,
        phase: Phase::Propagating {
            serial: 0,
            seen_everywhere_at: None,
        },
        current_since: now,
        requested: false,
        failures: 0,
        last_error: None,
        retry_at: None,
        held: None,
        prior,
        hold_first_deploy: false,
    }
}

/// True while mxguard's first certificate must not be deployed: another key is live and
/// `current`'s record is not yet public everywhere for the hold time.
pub(crate) fn first_deploy_waits(s: &RollState) -> bool {
    (s.prior.is_some() || s.hold_first_deploy) && matches!(s.phase, Phase::Propagating { .. })
}

/// The TLSA keys that must be published for a state: always the current and the next key.
/// During a roll the MTA may present either, so both stay until verification.
pub(crate) fn published(s: &RollState) -> Vec<KeyId> {
    let mut v = vec![s.current.clone()];
    if s.next != s.current && !s.next.is_empty() {
        v.push(s.next.clone());
    }
    if let Some(p) = &s.prior
        && !v.contains(p)
    {
        v.push(p.clone());
    }
    v
}

#[cfg(test)]
/// Keys the MTA might present in this state (for checking the invariant).
pub(crate) fn possibly_deployed(s: &RollState) -> Vec<KeyId> {
    match s.phase {
        // From the moment files may have been written until verification, either key.
        Phase::Deploying | Phase::Verifying => vec![s.current.clone(), s.next.clone()],
        // Another tool's key until mxguard's first certificate is seen live.
        _ => std::iter::once(s.current.clone())
            .chain(s.prior.clone())
            .collect(),
    }
}

fn backoff(t: &Timing, failures: u32) -> u64 {
    let exp = failures.saturating_sub(1).min(20);
    t.retry_initial.saturating_mul(1u64 << exp).min(t.retry_max)
}

/// The next action for a state at `now`.
pub(crate) fn action(s: &RollState, t: &Timing, now: u64) -> Action {
    if let Some(r) = s.retry_at
        && r > now
    {
        return Action::Wait { deadline: Some(r) };
    }
    match &s.phase {
        Phase::Propagating { serial: 0, .. } => Action::Publish,
        Phase::Propagating {
            seen_everywhere_at: None,
            ..
        } => Action::Wait { deadline: None },
        Phase::Propagating {
            seen_everywhere_at: Some(at),
            ..
        } => Action::Wait {
            deadline: Some(at + t.hold),
        },
        // Another key was live: look until the MX presents mxguard's (deployed once Stable).
        Phase::Stable if s.prior.is_some() => Action::Verify,
        Phase::Stable => {
            if s.next.is_empty() || s.next == s.current {
                Action::GenerateNext
            } else if s.requested || now >= s.current_since + t.key_age {
                Action::Wait { deadline: None } // a Tick starts the roll
            } else {
                Action::Wait {
                    deadline: Some(s.current_since + t.key_age),
                }
            }
        }
        Phase::Issuing => Action::Issue,
        Phase::Deploying => Action::Deploy,
        Phase::Verifying => Action::Verify,
    }
}

/// The transition function.
pub(crate) fn step(s: &RollState, e: &Event, t: &Timing, now: u64) -> RollState {
    let mut n = s.clone();
    let ok = |n: &mut RollState| {
        n.failures = 0;
        n.last_error = None;
        n.retry_at = None;
    };
    match (&s.phase, e) {
        (_, Event::RotateRequested) => n.requested = true,
        (_, Event::Failed { reason }) => {
            n.failures += 1;
            n.last_error = Some(reason.clone());
            n.retry_at = Some(now + backoff(t, n.failures));
        }
        (Phase::Propagating { .. }, Event::Published { serial }) => {
            n.phase = Phase::Propagating {
                serial: *serial,
                seen_everywhere_at: None,
            };
            ok(&mut n);
        }
        (
            Phase::Propagating {
                serial,
                seen_everywhere_at,
            },
            Event::Tick { all_serve },
        ) if *serial != 0 => match seen_everywhere_at {
            None if *all_serve => {
                n.phase = Phase::Propagating {
                    serial: *serial,
                    seen_everywhere_at: Some(now),
                };
            }
            Some(at) if now >= at + t.hold => {
                n.phase = Phase::Stable;
                n.hold_first_deploy = false;
            }
            _ => {}
        },
        (Phase::Stable, Event::Tick { all_serve }) => {
            let due = s.requested || now >= s.current_since + t.key_age;
            // A secondary that lost the zone (or lags) holds the roll before the switch; no
            // roll before mxguard's first key is seen live.
            if due && *all_serve && s.prior.is_none() && !s.next.is_empty() && s.next != s.current {
                n.phase = Phase::Issuing;
                n.requested = false;
            }
        }
        (Phase::Stable, Event::NewNextKey { key }) if s.next.is_empty() || s.next == s.current => {
            n.next = key.clone();
            n.phase = Phase::Propagating {
                serial: 0,
                seen_everywhere_at: None,
            };
        }
        (Phase::Issuing, Event::Issued) => {
            n.phase = Phase::Deploying;
            ok(&mut n);
        }
        (Phase::Deploying, Event::Deployed) => {
            n.phase = Phase::Verifying;
            ok(&mut n);
        }
        (Phase::Stable, Event::Observed { key }) if s.prior.is_some() => {
            if *key == s.current {
                // mxguard's key is live: the previous key's record goes.
                n.prior = None;
                ok(&mut n);
            } else {
                // The first look usually comes just before the deployment: no error yet.
                n.failures += 1;
                if n.failures >= 2 {
                    n.last_error = Some(format!(
                        "the MX still presents key {key}, not mxguard's key {} (deployed to the MTA's files): its record stays published; check that the MTA uses those files and was reloaded",
                        s.current
                    ));
                }
                n.retry_at = Some(now + backoff(t, n.failures).min(t.hold.max(1)));
            }
        }
        (Phase::Verifying, Event::Observed { key }) => {
            if *key == s.next {
                // The MX presents the next key: the old one retires; a new next key follows.
                n.current = s.next.clone();
                n.next = String::new();
                n.current_since = now;
                n.phase = Phase::Stable;
                ok(&mut n);
            } else {
                n.failures += 1;
                n.last_error = Some(format!(
                    "the MX presents key {key}, expected the new key {}; the old record stays published",
                    s.next
                ));
                n.retry_at = Some(now + backoff(t, n.failures));
            }
        }
        _ => {}
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: Timing = Timing {
        hold: 600,
        key_age: 86_400,
        retry_initial: 10,
        retry_max: 300,
    };

    fn k(s: &str) -> KeyId {
        s.to_string()
    }

    /// Drives a state through its actions with a perfect world; returns the final state.
    fn full_roll(mut s: RollState, mut now: u64) -> (RollState, u64) {
        let mut next_key = 100;
        for _ in 0..50 {
            match action(&s, &T, now) {
                Action::Publish => s = step(&s, &Event::Published { serial: 7 }, &T, now),
                Action::Wait { deadline } => {
                    now = deadline.unwrap_or(now).max(now) + 1;
                    s = step(&s, &Event::Tick { all_serve: true }, &T, now);
                }
                Action::Issue => s = step(&s, &Event::Issued, &T, now),
                Action::Deploy => s = step(&s, &Event::Deployed, &T, now),
                Action::Verify => {
                    let key = s.next.clone();
                    s = step(&s, &Event::Observed { key }, &T, now)
                }
                Action::GenerateNext => {
                    next_key += 1;
                    s = step(
                        &s,
                        &Event::NewNextKey {
                            key: format!("k{next_key}"),
                        },
                        &T,
                        now,
                    );
                    return (s, now);
                }
            }
        }
        (s, now)
    }

    #[test]
    fn a_full_roll_switches_keys_after_hold_and_publishes_a_new_next() {
        let s = initial(k("a"), k("b"), None, 0);
        assert_eq!(published(&s), vec![k("a"), k("b")]);
        let (s, now) = full_roll(s, 0);
        assert_eq!(s.current, "b");
        assert_eq!(s.next, "k101");
        assert!(now >= T.key_age, "rolled only when the key was old enough");
        assert_eq!(published(&s), vec![k("b"), k("k101")]);
    }

    #[test]
    fn stable_needs_hold_after_all_servers_serve() {
        let mut s = initial(k("a"), k("b"), None, 0);
        s = step(&s, &Event::Published { serial: 5 }, &T, 0);
        s = step(&s, &Event::Tick { all_serve: false }, &T, 1000);
        assert!(matches!(
            s.phase,
            Phase::Propagating {
                seen_everywhere_at: None,
                ..
            }
        ));
        s = step(&s, &Event::Tick { all_serve: true }, &T, 2000);
        s = step(&s, &Event::Tick { all_serve: true }, &T, 2000 + T.hold - 1);
        assert!(matches!(s.phase, Phase::Propagating { .. }));
        s = step(&s, &Event::Tick { all_serve: true }, &T, 2000 + T.hold);
        assert_eq!(s.phase, Phase::Stable);
    }

    #[test]
    fn lagging_secondary_holds_the_roll_before_the_switch() {
        let mut s = initial(k("a"), k("b"), None, 0);
        s.phase = Phase::Stable;
        s.requested = true;
        let held = step(&s, &Event::Tick { all_serve: false }, &T, 10);
        assert_eq!(held.phase, Phase::Stable);
        let go = step(&held, &Event::Tick { all_serve: true }, &T, 11);
        assert_eq!(go.phase, Phase::Issuing);
    }

    #[test]
    fn mismatch_keeps_old_record_and_retries() {
        let mut s = initial(k("a"), k("b"), None, 0);
        s.phase = Phase::Verifying;
        let s2 = step(&s, &Event::Observed { key: k("a") }, &T, 100);
        assert_eq!(s2.phase, Phase::Verifying);
        assert_eq!(published(&s2), vec![k("a"), k("b")]);
        assert!(
            s2.last_error
                .as_deref()
                .unwrap()
                .contains("expected the new key")
        );
        assert_eq!(
            action(&s2, &T, 100),
            Action::Wait {
                deadline: Some(110)
            }
        );
    }

    #[derive(Debug, Clone)]
    enum WorldEvent {
        Tick(bool),
        Rotate,
        /// The executor performs the action; `succeeds` false = the step fails.
        Act(bool),
        /// Crash and restart: state reloaded as persisted (unchanged), action repeated.
        Crash,
        Advance(u64),
        /// The certificate manager deploys mxguard's first certificate when it may.
        FirstDeploy,
    }

    fn world_event() -> impl Strategy<Value = WorldEvent> {
        prop_oneof![
            prop::bool::ANY.prop_map(WorldEvent::Tick),
            Just(WorldEvent::Rotate),
            prop::bool::weighted(0.8).prop_map(WorldEvent::Act),
            Just(WorldEvent::Crash),
            (1u64..100_000).prop_map(WorldEvent::Advance),
            Just(WorldEvent::FirstDeploy),
        ]
    }

    #[test]
    fn another_live_key_stays_published_until_mxguards_key_is_seen() {
        let mut s = initial(k("a"), k("b"), Some(k("p")), 0);
        assert_eq!(published(&s), [k("a"), k("b"), k("p")]);
        assert!(first_deploy_waits(&s));
        s = step(&s, &Event::Published { serial: 3 }, &T, 0);
        s = step(&s, &Event::Tick { all_serve: true }, &T, 10);
        assert!(first_deploy_waits(&s), "not public for the hold time yet");
        s = step(&s, &Event::Tick { all_serve: true }, &T, 10 + T.hold);
        assert_eq!(s.phase, Phase::Stable);
        assert!(!first_deploy_waits(&s));
        // Stable with another key live: look at the MX instead of starting a roll.
        assert_eq!(action(&s, &T, 10 + T.hold), Action::Verify);
        let still = step(&s, &Event::Observed { key: k("p") }, &T, 700);
        assert_eq!(still.prior, Some(k("p")));
        assert_eq!(
            still.last_error, None,
            "the first look precedes the deployment"
        );
        assert!(still.retry_at.unwrap() <= 700 + T.hold);
        let again = step(&still, &Event::Observed { key: k("p") }, &T, 800);
        assert!(
            again
                .last_error
                .as_deref()
                .unwrap()
                .contains("still presents key p")
        );
        let live = step(&again, &Event::Observed { key: k("a") }, &T, 900);
        assert_eq!(live.prior, None);
        assert_eq!(live.failures, 0);
        assert_eq!(published(&live), [k("a"), k("b")]);
        // The prior key equal to mxguard's own is no prior key.
        assert_eq!(initial(k("a"), k("b"), Some(k("a")), 0).prior, None);
        // No roll starts while another key is live, even when one is requested.
        let mut waiting = step(&s, &Event::RotateRequested, &T, 700);
        waiting.retry_at = None;
        let after = step(
            &waiting,
            &Event::Tick { all_serve: true },
            &T,
            10 * T.key_age,
        );
        assert_eq!(after.phase, Phase::Stable);
    }

    #[test]
    fn an_unknown_live_key_holds_the_first_deployment_for_the_hold_time() {
        let mut s = initial(k("a"), k("b"), None, 0);
        s.hold_first_deploy = true;
        assert!(first_deploy_waits(&s));
        s = step(&s, &Event::Published { serial: 3 }, &T, 0);
        s = step(&s, &Event::Tick { all_serve: true }, &T, 10);
        assert!(first_deploy_waits(&s));
        s = step(&s, &Event::Tick { all_serve: true }, &T, 10 + T.hold);
        assert_eq!(s.phase, Phase::Stable);
        assert!(!first_deploy_waits(&s));
        assert!(!s.hold_first_deploy);
        assert_eq!(published(&s), [k("a"), k("b")]);
    }

    proptest! {
        /// No sequence of events (crashes, failed steps, lagging secondaries) reaches a state
        /// where a key the MTA might present lacks a published record, or where a record is
        /// withdrawn while its key is deployed; and a deployed key's record was public for the
        /// hold time.
        #[test]
        fn invariant_holds_for_any_event_sequence(
            events in prop::collection::vec(world_event(), 1..300),
            another_key_live in any::<bool>(),
        ) {
            let mut now = 0u64;
            // With `another_key_live`, the MTA presents another tool's key p0 when mxguard
            // starts; mxguard's first certificate (k0) is deployed when the machine allows it.
            let prior = another_key_live.then(|| k("p0"));
            let mut s = initial(k("k0"), k("k1"), prior.clone(), now);
            let mut fresh = 2;
            // The world: which key the MTA presents; when each record became public everywhere.
            let mut deployed = prior.clone().unwrap_or_else(|| k("k0"));
            let mut public_since: std::collections::HashMap<KeyId, u64> = Default::default();
            if !another_key_live {
                public_since.insert(k("k0"), 0);
            }
            let mut published_serial = 0u32;
            for e in events {
                let before = published(&s);
                match e {
                    WorldEvent::Advance(d) => now += d,
                    WorldEvent::Rotate => s = step(&s, &Event::RotateRequested, &T, now),
                    WorldEvent::Crash => {} // persisted state is `s`; nothing else survives
                    WorldEvent::FirstDeploy => {
                        if Some(&deployed) == prior.as_ref() && !first_deploy_waits(&s) {
                            let since = public_since.get(&s.current).copied();
                            prop_assert!(since.is_some_and(|t| now >= t + T.hold),
                                "first deployment of {} before its record is public for the hold time", s.current);
                            deployed = s.current.clone();
                        }
                    }
                    WorldEvent::Tick(all_serve) => {
                        let serves = all_serve;
                        if serves {
                            for key in published(&s) {
                                public_since.entry(key).or_insert(now);
                            }
                        }
                        s = step(&s, &Event::Tick { all_serve: serves }, &T, now);
                    }
                    WorldEvent::Act(succeeds) => {
                        let ev = match action(&s, &T, now) {
                            Action::Wait { .. } => None,
                            Action::Publish => {
                                published_serial += 1;
                                Some(Event::Published { serial: published_serial })
                            }
                            Action::Issue => Some(if succeeds { Event::Issued } else { Event::Failed { reason: "ca".into() } }),
                            Action::Deploy => {
                                // Files are written even when the reload command fails: the MTA
                                // may pick up the new key either way.
                                let since = public_since.get(&s.next).copied();
                                prop_assert!(since.is_some_and(|t| now >= t + T.hold),
                                    "deploying {} whose record is not public for the hold time", s.next);
                                deployed = s.next.clone();
                                Some(if succeeds { Event::Deployed } else { Event::Failed { reason: "reload".into() } })
                            }
                            Action::Verify => Some(Event::Observed { key: deployed.clone() }),
                            Action::GenerateNext => {
                                fresh += 1;
                                Some(Event::NewNextKey { key: format!("k{fresh}") })
                            }
                        };
                        if let Some(ev) = ev {
                            s = step(&s, &ev, &T, now);
                        }
                    }
                }
                let after = published(&s);
                prop_assert!(after.contains(&deployed), "deployed key {deployed} unpublished: {s:?}");
                for key in possibly_deployed(&s) {
                    prop_assert!(after.contains(&key), "{key} may be presented but is unpublished");
                }
                for key in &before {
                    if !after.contains(key) {
                        prop_assert_ne!(key, &deployed, "record of the deployed key withdrawn");
                        public_since.remove(key);
                    }
                }
                for key in &after {
                    if !before.contains(key) {
                        // A new record is public only once all servers serve it (next Tick).
                        public_since.remove(key);
                    }
                }
            }
        }
    }
}
