//! The DNSSEC key roll state machine: the one place that decides when a zone's signing keys
//! change — when a new key starts signing, when it is published, when the parent is asked
//! for its DS (CDS/CDNSKEY), when the old key is withdrawn and when it is destroyed.
//!
//! Method: **double signature** for the combined signing key, in the order RFC 6781 §4.1.4
//! gives for algorithm rolls, used for every roll (same algorithm or not):
//!
//! 1. `PreSign`: the new key signs every RRset beside the old one, not yet published; wait
//!    until every server serves it, then the zone's largest TTL, so every cached RRset carries
//!    both signatures.
//! 2. `Publish`: the new DNSKEY is published; wait the DNSKEY TTL, so every cached DNSKEY
//!    RRset holds both keys.
//! 3. `SwapDs`: CDS/CDNSKEY name the new key only; wait until every parent server serves the
//!    new key's DS and no longer the old one's, then the DS TTL.
//! 4. `Withdraw`: the old DNSKEY goes, the old key still signs; wait the DNSKEY TTL (a cached
//!    DNSKEY RRset with both algorithms still finds a signature of each).
//! 5. `Unsign`: the old key stops signing; once served everywhere (plus the delay) its file
//!    is deleted.
//!
//! Why double signature and not double DS: the parent changes once (one DS swap, which a
//! registrar without CDS support does in one step), and the child never depends on a DS the
//! parent has not published yet; the price is larger answers during the roll. Every wait
//! starts only when every authoritative server serves the change, plus `propagation_delay`.
//! Invariant: at every moment, every DS a validator may hold (cached or fresh) matches a
//! published key that signs every RRset it may hold — so no SERVFAIL.
//!
//! Pure: [`step`] maps (state, event, now) to a new state and [`action`] says what to do
//! next. The executor persists every new state before acting on it; every action is
//! idempotent, so a crash anywhere resumes at the same step.

use serde::{Deserialize, Serialize};

use crate::zone::keys::{KeyEntry, KeyRoles};
use crate::zone::settings::DnssecAlgorithm;

/// Where a zone's key roll is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub(crate) enum Phase {
    /// One key: published, signing, in CDS.
    Stable,
    PreSign,
    Publish,
    SwapDs {
        /// When every parent server was first seen serving the new DS and not the old one.
        ds_seen_at: Option<u64>,
        /// The DS TTL the parent serves.
        ds_ttl: u32,
    },
    Withdraw,
    Unsign,
}

impl Phase {
    /// A short name for logs and `status`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Phase::Stable => "stable",
            Phase::PreSign => "pre-sign",
            Phase::Publish => "publish",
            Phase::SwapDs { .. } => "swap-ds",
            Phase::Withdraw => "withdraw",
            Phase::Unsign => "unsign",
        }
    }
}

/// What the parent's servers serve for the zone's DS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ParentView {
    /// When it was asked (unix seconds).
    pub checked_at: u64,
    /// The DS records (presentation format) the parent serves, from the first server.
    pub ds: Vec<String>,
    /// Every parent server serves a DS of the new (or only) key.
    pub has_new: bool,
    /// Some parent server still serves a DS of the old key.
    pub has_old: bool,
    /// The TTL of the DS RRset (the largest seen).
    pub ttl: u32,
    /// Why the parent could not be asked (then the flags above say nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One zone's persisted key state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RollState {
    /// The keys: the active (old) key first, during a roll the new key second. Each entry's
    /// roles are those of `phase` (see [`roles`]).
    pub keys: Vec<KeyEntry>,
    #[serde(flatten)]
    pub phase: Phase,
    /// When `phase` began (unix seconds).
    pub since: u64,
    /// The serial of the first zone carrying this phase's keys (`None`: not built yet).
    #[serde(default)]
    pub serial: Option<u32>,
    /// When every authoritative server was first seen serving `serial` (or later).
    #[serde(default)]
    pub served_at: Option<u64>,
    /// A roll asked for by `mxguard dnssec-roll` (the algorithm of the new key), not started.
    #[serde(default)]
    pub requested: Option<DnssecAlgorithm>,
    /// `dnssec.algorithm` when the last roll started (`None`: no roll yet). A config that
    /// names another algorithm since then rolls to it; a `dnssec-roll --algorithm` to
    /// another one than the config's is not undone until the config changes.
    #[serde(default)]
    pub config_algorithm: Option<DnssecAlgorithm>,
    /// The parent's DS as last seen.
    #[serde(default)]
    pub parent: Option<ParentView>,
    /// The largest zone TTL and DNSKEY TTL served since the roll began: what caches may
    /// still hold when the TTLs were lowered during the roll.
    #[serde(default)]
    pub ttl_max: u32,
    #[serde(default)]
    pub ttl_dnskey: u32,
    /// Why the roll does not move (a server not serving the zone, the parent...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// Timing of rolls (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    /// Added to every wait, after every server serves the change.
    pub propagation_delay: u64,
    /// Roll when the active key is this old (`None`: only on request or algorithm change).
    pub key_lifetime: Option<u64>,
    /// The algorithm keys should have: a different active key is rolled to it.
    pub algorithm: DnssecAlgorithm,
}

/// TTLs of the zone as served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ttls {
    /// The largest TTL of any RRset (denial included).
    pub max: u32,
    pub dnskey: u32,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// A periodic look: whether every server serves `serial`, why not, the zone's TTLs and
    /// (when asked) the parent.
    Tick {
        served: Result<(), String>,
        ttls: Ttls,
        parent: Option<ParentView>,
    },
    /// `mxguard dnssec-roll` (the new key's algorithm).
    Requested { algorithm: DnssecAlgorithm },
    /// The new key was generated (file written).
    Generated { key: KeyEntry },
    /// The zone with this phase's keys is served with `serial`.
    Applied { serial: u32 },
    /// The old key's file is gone.
    Retired,
    /// The configured algorithm changed to the key's own: nothing to roll, only noted.
    ConfigSeen,
}

/// What the executor must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Generate a new key of `algorithm`, then report `Generated`.
    Generate { algorithm: DnssecAlgorithm },
    /// Sign the zone with the state's keys and roles, then report `Applied`.
    Apply,
    /// Look again (report `Tick`) at `deadline` or at the next poll; `parent`: ask the parent.
    Wait { deadline: Option<u64>, parent: bool },
    /// Delete the old key's file, then report `Retired`.
    Retire { file: String },
    /// Report `ConfigSeen`.
    NoteConfig,
}

/// The state of a zone with one key.
pub(crate) fn initial(key: KeyEntry, now: u64) -> RollState {
    let mut s = RollState {
        keys: vec![key],
        phase: Phase::Stable,
        since: now,
        serial: None,
        served_at: None,
        requested: None,
        config_algorithm: None,
        parent: None,
        ttl_max: 0,
        ttl_dnskey: 0,
        held: None,
    };
    set_roles(&mut s);
    s
}

/// The roles of (old, new) in `phase`.
pub(crate) fn roles(phase: &Phase) -> (KeyRoles, KeyRoles) {
    let none = KeyRoles::default();
    let active = KeyRoles::ACTIVE;
    match phase {
        Phase::Stable => (active, none),
        Phase::PreSign => (
            active,
            KeyRoles {
                signs: true,
                ..none
            },
        ),
        Phase::Publish => (
            active,
            KeyRoles {
                published: true,
                signs: true,
                ..none
            },
        ),
        Phase::SwapDs { .. } => (
            KeyRoles {
                published: true,
                signs: true,
                ..none
            },
            active,
        ),
        Phase::Withdraw => (
            KeyRoles {
                signs: true,
                ..none
            },
            active,
        ),
        Phase::Unsign => (none, active),
    }
}

fn set_roles(s: &mut RollState) {
    let (old, new) = roles(&s.phase);
    if let Some(k) = s.keys.get_mut(0) {
        k.roles = old;
    }
    if let Some(k) = s.keys.get_mut(1) {
        k.roles = new;
    }
}

fn enter(s: &RollState, phase: Phase, now: u64) -> RollState {
    let mut n = s.clone();
    n.phase = phase;
    n.since = now;
    n.serial = None;
    n.served_at = None;
    n.held = None;
    set_roles(&mut n);
    n
}

/// Whether a roll is due at `now` (requested, key too old, or another algorithm wanted).
pub(crate) fn roll_due(s: &RollState, t: &Timing, now: u64) -> Option<DnssecAlgorithm> {
    if !matches!(s.phase, Phase::Stable) || s.keys.len() != 1 {
        return None;
    }
    if let Some(a) = s.requested {
        return Some(a);
    }
    let key = &s.keys[0];
    if config_changed(s, t) && key.algorithm != t.algorithm {
        return Some(t.algorithm);
    }
    t.key_lifetime
        .filter(|l| now >= key.created.saturating_add(*l))
        // A key rolled to another algorithm on request keeps it (until the config changes).
        .map(|_| key.algorithm)
}

/// Whether `dnssec.algorithm` names another algorithm than when the last roll started (or,
/// before any roll, than the key's).
fn config_changed(s: &RollState, t: &Timing) -> bool {
    match s.config_algorithm {
        Some(c) => c != t.algorithm,
        None => s.keys.first().is_some_and(|k| k.algorithm != t.algorithm),
    }
}

/// When the current wait ends, given `ttls` (None: not known until something is observed).
fn wait_end(s: &RollState, t: &Timing, ttls: Ttls) -> Option<u64> {
    let served = s.served_at?;
    let d = t.propagation_delay;
    let ttls = Ttls {
        max: ttls.max.max(s.ttl_max),
        dnskey: ttls.dnskey.max(s.ttl_dnskey),
    };
    match &s.phase {
        Phase::Stable => None,
        Phase::PreSign => Some(served + u64::from(ttls.max) + d),
        Phase::Publish | Phase::Withdraw => Some(served + u64::from(ttls.dnskey) + d),
        Phase::SwapDs { ds_seen_at, ds_ttl } => {
            ds_seen_at.map(|seen| seen.max(served) + u64::from(*ds_ttl) + d)
        }
        Phase::Unsign => Some(served + d),
    }
}

/// The next phase after `phase`.
fn next(phase: &Phase) -> Phase {
    match phase {
        Phase::Stable => Phase::PreSign,
        Phase::PreSign => Phase::Publish,
        Phase::Publish => Phase::SwapDs {
            ds_seen_at: None,
            ds_ttl: 0,
        },
        Phase::SwapDs { .. } => Phase::Withdraw,
        Phase::Withdraw => Phase::Unsign,
        Phase::Unsign => Phase::Stable,
    }
}

/// The new state after `event` at `now`.
pub(crate) fn step(s: &RollState, event: &Event, t: &Timing, now: u64) -> RollState {
    match event {
        Event::Requested { algorithm } => {
            let mut n = s.clone();
            n.requested = Some(*algorithm);
            n
        }
        Event::Generated { key } => {
            if roll_due(s, t, now).is_none() || s.keys.iter().any(|k| k.key_tag == key.key_tag) {
                return s.clone();
            }
            let mut n = s.clone();
            n.keys.push(key.clone());
            n.requested = None;
            n.config_algorithm = Some(t.algorithm);
            n.ttl_max = 0;
            n.ttl_dnskey = 0;
            enter(&n, Phase::PreSign, now)
        }
        Event::ConfigSeen => {
            let mut n = s.clone();
            n.config_algorithm = Some(t.algorithm);
            n
        }
        Event::Applied { serial } => {
            let mut n = s.clone();
            n.serial = Some(*serial);
            n
        }
        Event::Retired => {
            if !matches!(s.phase, Phase::Unsign) || s.keys.len() != 2 {
                return s.clone();
            }
            let mut n = s.clone();
            n.keys.remove(0);
            enter(&n, Phase::Stable, now)
        }
        Event::Tick {
            served,
            ttls,
            parent,
        } => {
            let mut n = s.clone();
            if let Some(p) = parent {
                n.parent = Some(p.clone());
            }
            if n.serial.is_none() {
                return n;
            }
            n.ttl_max = n.ttl_max.max(ttls.max);
            n.ttl_dnskey = n.ttl_dnskey.max(ttls.dnskey);
            match served {
                Ok(()) => {
                    n.served_at.get_or_insert(now);
                    n.held = None;
                }
                Err(why) => {
                    if n.served_at.is_none() {
                        n.held = Some(why.clone());
                    }
                }
            }
            // The swap ends only on an answer of every parent server that confirms it.
            let mut confirmed = true;
            if let Phase::SwapDs { ds_seen_at, ds_ttl } = &mut n.phase {
                confirmed = false;
                if let Some(p) = parent {
                    let ok = p.error.is_none() && p.has_new && !p.has_old;
                    if ok {
                        if ds_seen_at.is_none() {
                            *ds_seen_at = Some(now);
                        }
                        *ds_ttl = (*ds_ttl).max(p.ttl);
                        confirmed = true;
                    } else if p.error.is_none() {
                        // Definitely not (or no longer) what the parent serves: the wait
                        // starts again once it does. A failed query says nothing either way.
                        *ds_seen_at = None;
                    }
                    if n.served_at.is_some() {
                        n.held = (!ok).then(|| parent_wait(p));
                    }
                }
            }
            match wait_end(&n, t, *ttls) {
                Some(end)
                    if now >= end
                        && confirmed
                        && !matches!(n.phase, Phase::Unsign | Phase::Stable) =>
                {
                    enter(&n, next(&n.phase), now)
                }
                _ => n,
            }
        }
    }
}

/// Why a roll waits for the parent.
fn parent_wait(p: &ParentView) -> String {
    if let Some(e) = &p.error {
        return format!("cannot ask the parent for the DS: {e}");
    }
    match (p.has_new, p.has_old) {
        (false, _) => "waiting for the parent to serve the new key's DS".into(),
        (true, true) => {
            "the parent serves the new key's DS but still the old one's: have it removed".into()
        }
        (true, false) => "the parent serves the new DS; waiting for its TTL".into(),
    }
}

/// What to do for `s` at `now`.
pub(crate) fn action(s: &RollState, t: &Timing, ttls: Ttls, now: u64) -> Action {
    if let Some(algorithm) = roll_due(s, t, now) {
        return Action::Generate { algorithm };
    }
    if matches!(s.phase, Phase::Stable) && config_changed(s, t) {
        return Action::NoteConfig;
    }
    if s.serial.is_none() && !matches!(s.phase, Phase::Stable) {
        return Action::Apply;
    }
    if matches!(s.phase, Phase::Unsign)
        && s.keys.len() == 2
        && s.keys[0].roles == KeyRoles::default()
        && wait_end(s, t, ttls).is_some_and(|end| now >= end)
    {
        return Action::Retire {
            file: s.keys[0].file.clone(),
        };
    }
    let deadline = match &s.phase {
        Phase::Stable => t
            .key_lifetime
            .and_then(|l| s.keys.first().map(|k| k.created.saturating_add(l))),
        _ => wait_end(s, t, ttls),
    };
    Action::Wait {
        deadline,
        parent: matches!(s.phase, Phase::SwapDs { .. }),
    }
}

#[cfg(test)]
mod tests;
