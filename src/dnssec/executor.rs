//! Runs the key roll machine for every signed zone: persists each new state *before* acting
//! on it (generate a key, sign with new roles, ask the parent, destroy the old key), so a
//! crash anywhere resumes at the same step.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;
use tokio_util::sync::CancellationToken;

use super::machine::{self, Action, Event, Phase, RollState, Ttls};
use super::{KeyedZones, RollSettings, key_dir, load_state, request_path, state_path};
use crate::state_dir::{PUBLIC_MODE, StateDir, ensure_dir, write_atomic};
use crate::zone::DnssecAlgorithm;
use crate::zone::keys::{self, KeySet};

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn from_unix(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

/// The key roller of the signed zones.
pub(crate) struct KeyRoller {
    pub state: Arc<StateDir>,
    pub zones: Arc<dyn KeyedZones>,
    /// Replaced on reload.
    pub settings: Arc<ArcSwap<RollSettings>>,
    pub changes: Arc<crate::changelog::ChangeLog>,
    /// Per zone in `swap-ds`: when the parent is asked next (unix seconds).
    pub parent_next: std::sync::Mutex<std::collections::HashMap<Name, u64>>,
}

/// Writes a zone's key state (atomically).
pub(crate) fn save(root: &Path, origin: &Name, s: &RollState) -> Result<(), String> {
    let path = state_path(root, origin);
    let text = serde_json::to_vec_pretty(s).map_err(|e| e.to_string())?;
    ensure_dir(&key_dir(root)).map_err(|e| e.to_string())?;
    write_atomic(&path, &text, PUBLIC_MODE).map_err(|e| e.to_string())
}

/// Leaves a roll request for the daemon (`mxguard dnssec-roll`).
pub(crate) fn request(
    root: &Path,
    origin: &Name,
    algorithm: DnssecAlgorithm,
) -> Result<(), String> {
    let path = request_path(root, origin);
    if let Some(dir) = path.parent() {
        ensure_dir(dir).map_err(|e| e.to_string())?;
    }
    write_atomic(&path, algorithm.as_str().as_bytes(), PUBLIC_MODE).map_err(|e| e.to_string())
}

fn read_request(root: &Path, origin: &Name, default: DnssecAlgorithm) -> Option<DnssecAlgorithm> {
    let text = std::fs::read_to_string(request_path(root, origin)).ok()?;
    Some(match text.trim() {
        "ed25519" => DnssecAlgorithm::Ed25519,
        "ecdsap256sha256" => DnssecAlgorithm::EcdsaP256Sha256,
        _ => default,
    })
}

impl KeyRoller {
    fn root(&self) -> &Path {
        self.state.root()
    }

    /// The state of a zone never seen before: from its file, else its one key, active.
    fn first_state(&self, origin: &Name) -> Result<RollState, String> {
        if let Some(s) = load_state(self.root(), origin)? {
            return Ok(s);
        }
        let keys = super::existing_keys(self.root(), origin, self.settings.load().algorithm)?
            .ok_or_else(|| format!("zone {origin} has no key"))?;
        let (key, _) = keys
            .keys()
            .next()
            .ok_or_else(|| format!("zone {origin} has no key"))?;
        let dir = key_dir(self.root());
        let created = std::fs::metadata(keys::key_path(&dir, origin, key.algorithm()))
            .and_then(|m| m.modified())
            .map_or(unix(SystemTime::now()), unix);
        Ok(machine::initial(
            keys::first_entry(origin, key, created),
            created,
        ))
    }

    fn persist(&self, origin: &Name, before: &RollState, s: &RollState) -> bool {
        if let Err(e) = save(self.root(), origin, s) {
            tracing::error!(zone = %origin, err = %e, "cannot persist the key roll state; the roll waits");
            return false;
        }
        if before.phase.name() != s.phase.name() || before.keys.len() != s.keys.len() {
            let tags: Vec<String> = s
                .keys
                .iter()
                .map(|k| format!("{} ({}, {})", k.key_tag, k.algorithm.as_str(), k.roles))
                .collect();
            tracing::info!(zone = %origin, phase = s.phase.name(), keys = %tags.join(" "), "dnssec key roll");
            self.changes.record(
                "dnssec",
                origin.to_ascii().trim_end_matches('.'),
                format!("key roll: {} ({})", s.phase.name(), tags.join(", ")),
            );
        }
        if before.held != s.held {
            match &s.held {
                Some(why) => {
                    tracing::warn!(zone = %origin, phase = s.phase.name(), held = %why, "dnssec key roll waits")
                }
                None => tracing::info!(zone = %origin, "dnssec key roll no longer held"),
            }
        }
        true
    }

    fn hold(&self, origin: &Name, s: &mut RollState, why: String) {
        if s.held.as_deref() != Some(why.as_str()) {
            let mut n = s.clone();
            n.held = Some(why);
            if self.persist(origin, s, &n) {
                *s = n;
            }
        }
    }

    /// Moves one zone as far as it can now; the time it should be looked at again (`None`:
    /// only on a request or reload).
    async fn drive(&self, origin: &Name, s: &mut RollState) -> Option<SystemTime> {
        let settings = self.settings.load_full();
        let timing = settings.timing();
        let poll = SystemTime::now() + settings.poll;
        if let Some(algorithm) = read_request(self.root(), origin, settings.algorithm) {
            let n = machine::step(
                s,
                &Event::Requested { algorithm },
                &timing,
                unix(SystemTime::now()),
            );
            let path = request_path(self.root(), origin);
            if self.persist(origin, s, &n) {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        *s = n;
                        tracing::info!(zone = %origin, algorithm = algorithm.as_str(), "dnssec key roll requested");
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => *s = n,
                    Err(e) => {
                        // A request that stays would start a roll after every roll: none.
                        let mut back = n.clone();
                        back.requested = s.requested;
                        back.held = Some(format!(
                            "the roll request {} cannot be removed ({e}): remove it by hand and run dnssec-roll again",
                            path.display()
                        ));
                        if self.persist(origin, &n, &back) {
                            *s = back;
                        }
                        return Some(poll);
                    }
                }
            }
        }
        for _ in 0..16 {
            let now = unix(SystemTime::now());
            let ttls = self.zones.ttls(origin).unwrap_or(Ttls {
                max: 86400,
                dnskey: 86400,
            });
            let event = match machine::action(s, &timing, ttls, now) {
                Action::Generate { .. } if settings.parent == super::ParentSource::Unknown => {
                    // A roll that cannot see the parent could never finish: do not start it.
                    self.hold(
                        origin,
                        s,
                        "a key roll is due but cannot start: set dnssec.parent_nameservers or dnssec.parent_resolver".into(),
                    );
                    return Some(poll);
                }
                Action::Generate { algorithm } => {
                    let avoid: Vec<u16> = s.keys.iter().map(|k| k.key_tag).collect();
                    match keys::generate_entry(
                        &key_dir(self.root()),
                        origin,
                        algorithm,
                        &avoid,
                        now,
                    ) {
                        Ok(key) => {
                            tracing::info!(zone = %origin, key_tag = key.key_tag, algorithm = algorithm.as_str(), "dnssec key roll starts with a new key");
                            Event::Generated { key }
                        }
                        Err(e) => {
                            self.hold(origin, s, format!("cannot generate the new key: {e}"));
                            return Some(poll);
                        }
                    }
                }
                Action::Apply => {
                    let result = match KeySet::load(&key_dir(self.root()), &s.keys) {
                        Ok(set) => self.zones.use_keys(origin, set).await,
                        Err(e) => Err(e.to_string()),
                    };
                    match result {
                        Ok(serial) => Event::Applied { serial },
                        Err(e) => {
                            self.hold(origin, s, format!("cannot sign with the new keys: {e}"));
                            return Some(poll);
                        }
                    }
                }
                Action::NoteConfig => Event::ConfigSeen,
                Action::Retire { file } => {
                    let path = key_dir(self.root()).join(&file);
                    match std::fs::remove_file(&path) {
                        Ok(()) => {
                            tracing::info!(zone = %origin, file = %path.display(), "old dnssec key destroyed")
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            self.hold(origin, s, format!("cannot delete {}: {e}", path.display()));
                            return Some(poll);
                        }
                    }
                    Event::Retired
                }
                Action::Wait { deadline, parent } => {
                    let Some(serial) = s.serial else {
                        return deadline.map(from_unix);
                    };
                    let due = deadline.is_some_and(|d| now >= d);
                    // Waiting for a time only: nothing to ask before it.
                    if s.served_at.is_some()
                        && !parent
                        && let Some(d) = deadline
                        && !due
                    {
                        return Some(from_unix(d));
                    }
                    // The parent: asked at growing intervals while its DS is awaited, and
                    // once more when the wait after it ends (the swap needs that answer).
                    let ask_parent = parent && s.served_at.is_some() && {
                        let next = self
                            .parent_next
                            .lock()
                            .map_or(0, |m| m.get(origin).copied().unwrap_or(0));
                        due || (deadline.is_none() && now >= next)
                    };
                    if parent && s.served_at.is_some() && !ask_parent {
                        let next = self
                            .parent_next
                            .lock()
                            .map_or(now, |m| m.get(origin).copied().unwrap_or(now));
                        let wake = deadline.map_or(next, |d| d.min(next));
                        return Some(from_unix(wake.max(now + 1)));
                    }
                    let served = self.zones.served_everywhere(origin, serial).await;
                    let view = if ask_parent && served.is_ok() {
                        // Every poll at first, then a tenth of the time waited so far, at most
                        // hourly: a registrar that takes days is not asked every few seconds.
                        let waited = now.saturating_sub(s.since);
                        let every = (waited / 10).clamp(settings.poll.as_secs().max(1), 3600);
                        if let Ok(mut m) = self.parent_next.lock() {
                            m.insert(origin.clone(), now + every);
                        }
                        Some(self.observe_parent(origin, s, &settings).await)
                    } else {
                        None
                    };
                    let n = machine::step(
                        s,
                        &Event::Tick {
                            served,
                            ttls,
                            parent: view,
                        },
                        &timing,
                        now,
                    );
                    if n == *s {
                        return Some(deadline.map_or(poll, |d| from_unix(d).min(poll)));
                    }
                    if !self.persist(origin, s, &n) {
                        return Some(poll);
                    }
                    *s = n;
                    continue;
                }
            };
            let n = machine::step(s, &event, &timing, now);
            if n == *s {
                return Some(poll);
            }
            if !self.persist(origin, s, &n) {
                return Some(poll);
            }
            *s = n;
        }
        Some(poll)
    }

    async fn observe_parent(
        &self,
        origin: &Name,
        s: &RollState,
        settings: &RollSettings,
    ) -> machine::ParentView {
        let now = unix(SystemTime::now());
        let set = match KeySet::load(&key_dir(self.root()), &s.keys) {
            Ok(k) => k,
            Err(e) => {
                return machine::ParentView {
                    checked_at: now,
                    ds: Vec::new(),
                    has_new: false,
                    has_old: false,
                    ttl: 0,
                    error: Some(e.to_string()),
                };
            }
        };
        let new = set.keys().find(|(_, r)| r.ds).map(|(k, _)| k);
        let old = set.keys().find(|(_, r)| !r.ds).map(|(k, _)| k);
        match new {
            Some(new) => super::parent::observe(origin, &settings.parent, new, old, now).await,
            None => machine::ParentView {
                checked_at: now,
                ds: Vec::new(),
                has_new: false,
                has_old: false,
                ttl: 0,
                error: Some("no key is submitted to the parent".into()),
            },
        }
    }

    /// Runs until `shutdown`: every zone's roll, looked at when its next deadline comes, at
    /// every poll while it waits for servers or the parent, and for requests.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        // Nothing runs yet: a key generated just before a crash, which no state lists, is
        // moved aside (never published).
        for f in super::sweep_orphan_keys(self.root()) {
            tracing::warn!(file = %f.display(), "dnssec key file that no key state lists (a roll start interrupted, or a state restored from an older backup) moved aside");
        }
        // The state of each zone that has something ahead (a roll under way, a scheduled
        // one); an idle zone's is read from its file again when it is looked at (about half a
        // kilobyte per zone, most of them idle for months).
        let mut states: BTreeMap<Name, RollState> = BTreeMap::new();
        // When to look at each zone again.
        let mut wake = WakeTimes::default();
        let mut last_settings: Option<Arc<RollSettings>> = None;
        loop {
            let settings = self.settings.load_full();
            // A new algorithm or key lifetime takes effect at a reload: idle zones, whose
            // states are not kept, are looked at again.
            if !last_settings
                .as_ref()
                .is_some_and(|l| Arc::ptr_eq(l, &settings))
            {
                wake.forget_idle();
                last_settings = Some(settings.clone());
            }
            let zones = self.zones.zones();
            // A set: with 10,000 zones a scan of the list per zone took a second per pass.
            let served: std::collections::BTreeSet<&Name> = zones.iter().collect();
            states.retain(|o, _| served.contains(o));
            wake.sync(&zones);
            let requests = std::fs::read_dir(key_dir(self.root()).join("requests"))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter_map(|e| e.file_name().into_string().ok())
                        .filter_map(|n| Name::from_ascii(format!("{n}.")).ok())
                        .map(|n| n.to_lowercase())
                        .collect::<Vec<Name>>()
                })
                .unwrap_or_default();
            // Requests for zones that are not served: removed (a zone added later must not
            // start with a surprise roll).
            for r in requests.iter().filter(|r| !served.contains(r)) {
                let path = request_path(self.root(), r);
                if std::fs::remove_file(&path).is_ok() {
                    tracing::warn!(zone = %r, "dnssec-roll request for a zone mxguard does not serve removed");
                }
            }
            let now = SystemTime::now();
            for origin in &zones {
                let due = match wake.get(origin) {
                    Wake::Unseen => true,
                    w => {
                        requests.contains(&origin.to_lowercase())
                            || matches!(w, Wake::At(t) if t <= now)
                            // A new algorithm or key lifetime takes effect at a reload.
                            || states.get(origin).is_some_and(|s| {
                                machine::roll_due(s, &settings.timing(), unix(now)).is_some()
                            })
                    }
                };
                if !due {
                    continue;
                }
                let mut s = match states.remove(origin) {
                    Some(s) => s,
                    None => match self.first_state(origin) {
                        Ok(s) => s,
                        Err(e) => {
                            if let Some(skipped) = crate::logfield::throttle("dnssec: no key state")
                            {
                                tracing::error!(zone = %origin, err = %e, skipped, "cannot read the zone's key state");
                            }
                            wake.set(origin, Wake::At(now + settings.poll));
                            continue;
                        }
                    },
                };
                let next = self.drive(origin, &mut s).await;
                if next.is_some() {
                    states.insert(origin.clone(), s);
                }
                wake.set(origin, next.map_or(Wake::Idle, Wake::At));
            }
            let next = wake
                .earliest()
                .unwrap_or(now + settings.poll)
                .min(SystemTime::now() + settings.poll);
            let sleep = next
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::from_millis(200))
                .max(Duration::from_millis(200));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }
}

/// When the key roll looks at a zone again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Not looked at yet (or since new settings): in the next pass.
    Unseen,
    /// Only for a request or new settings.
    Idle,
    At(SystemTime),
}

/// The [`Wake`] of every served zone, sorted by zone in a vector of exactly their number (a
/// `BTreeMap` filled in order took about 180 bytes a zone for a 96-byte entry). Rebuilt only
/// when zones come or go.
#[derive(Default)]
struct WakeTimes(Vec<(Name, Wake)>);

impl WakeTimes {
    fn search(&self, zone: &Name) -> Result<usize, usize> {
        self.0.binary_search_by(|(z, _)| z.cmp(zone))
    }

    /// Makes the zones those of `zones`: the ones kept keep their time, new ones are unseen.
    fn sync(&mut self, zones: &[Name]) {
        let mut sorted: Vec<&Name> = zones.iter().collect();
        sorted.sort();
        sorted.dedup();
        if sorted.iter().copied().eq(self.0.iter().map(|(z, _)| z)) {
            return;
        }
        let kept: Vec<(Name, Wake)> = sorted
            .into_iter()
            .map(|z| (z.clone(), self.get(z)))
            .collect();
        self.0 = kept;
        self.0.shrink_to_fit();
    }

    fn get(&self, zone: &Name) -> Wake {
        self.search(zone).map_or(Wake::Unseen, |i| self.0[i].1)
    }

    /// Sets the wake of `zone`, one of the zones of the last [`WakeTimes::sync`].
    fn set(&mut self, zone: &Name, wake: Wake) {
        if let Ok(i) = self.search(zone) {
            self.0[i].1 = wake;
        }
    }

    /// New settings: every idle zone is looked at again.
    fn forget_idle(&mut self) {
        for (_, w) in &mut self.0 {
            if *w == Wake::Idle {
                *w = Wake::Unseen;
            }
        }
    }

    fn earliest(&self) -> Option<SystemTime> {
        self.0
            .iter()
            .filter_map(|(_, w)| match w {
                Wake::At(t) => Some(*t),
                _ => None,
            })
            .min()
    }
}

pub(crate) fn rfc3339(t: u64) -> String {
    time::OffsetDateTime::from(from_unix(t))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// What `mxguard status` shows of a zone's keys and roll.
pub(crate) fn describe(s: &RollState) -> Vec<String> {
    let mut out = Vec::new();
    for k in &s.keys {
        out.push(format!(
            "key {} {} ({}) created {}",
            k.key_tag,
            k.algorithm.as_str(),
            k.roles,
            rfc3339(k.created)
        ));
    }
    let since = rfc3339(s.since);
    match &s.phase {
        Phase::Stable => out.push(format!("no key roll in progress (since {since})")),
        p => out.push(format!("key roll phase {} since {since}", p.name())),
    }
    if let Some(a) = s.requested {
        out.push(format!("roll requested (algorithm {})", a.as_str()));
    }
    if let Some(why) = &s.held {
        out.push(format!("waiting: {why}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::KeySet;
    use crate::zone::keys::{KeyEntry, KeyRoles};

    #[test]
    fn wake_times_follow_the_zones_and_keep_what_is_known() {
        let n = |s: &str| Name::from_ascii(s).unwrap();
        let t = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        let mut w = WakeTimes::default();
        w.sync(&[n("b.example."), n("a.example.")]);
        assert_eq!(w.get(&n("a.example.")), Wake::Unseen);
        w.set(&n("a.example."), Wake::At(t(20)));
        w.set(&n("b.example."), Wake::Idle);
        w.set(&n("c.example."), Wake::At(t(1)));
        assert_eq!(w.get(&n("c.example.")), Wake::Unseen, "not a zone: not set");
        assert_eq!(w.earliest(), Some(t(20)));
        // A zone added, one removed: the one kept keeps its time.
        w.sync(&[n("c.example."), n("b.example.")]);
        assert_eq!(w.get(&n("b.example.")), Wake::Idle);
        assert_eq!(w.get(&n("c.example.")), Wake::Unseen);
        assert_eq!(w.get(&n("a.example.")), Wake::Unseen);
        assert_eq!(w.0.len(), 2);
        assert_eq!(w.earliest(), None);
        w.set(&n("c.example."), Wake::At(t(5)));
        w.forget_idle();
        assert_eq!(w.get(&n("b.example.")), Wake::Unseen);
        assert_eq!(w.get(&n("c.example.")), Wake::At(t(5)));
    }
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Zones that count how often the roller asks whether a serial is served.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    #[async_trait::async_trait]
    impl KeyedZones for Counting {
        fn zones(&self) -> Vec<Name> {
            vec![Name::from_ascii("example.test.").unwrap()]
        }
        async fn use_keys(&self, _: &Name, _: KeySet) -> Result<u32, String> {
            Err("not in this test".into())
        }
        fn ttls(&self, _: &Name) -> Option<Ttls> {
            Some(Ttls {
                max: 300,
                dnskey: 300,
            })
        }
        async fn served_everywhere(&self, _: &Name, _: u32) -> Result<(), String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn roller(dir: &Path, zones: Arc<Counting>) -> KeyRoller {
        KeyRoller {
            state: Arc::new(StateDir::open_locked(dir).unwrap()),
            zones,
            settings: Arc::new(ArcSwap::from_pointee(RollSettings {
                algorithm: DnssecAlgorithm::EcdsaP256Sha256,
                key_lifetime: None,
                propagation_delay: Duration::from_secs(5),
                parent: super::super::ParentSource::Unknown,
                poll: Duration::from_secs(10),
            })),
            changes: Arc::new(crate::changelog::ChangeLog::open(dir)),
            parent_next: Default::default(),
        }
    }

    /// The run loop keeps a zone's state only while `drive` names a time to look at it again:
    /// a zone with no roll under way and none scheduled must get `None`, without asking the
    /// servers anything; with a key lifetime it gets the time the next roll is due.
    #[tokio::test]
    async fn an_idle_zone_is_looked_at_again_only_for_a_scheduled_roll() {
        let dir = tempfile::tempdir().unwrap();
        let zones = Arc::new(Counting::default());
        let r = roller(dir.path(), zones.clone());
        let origin = Name::from_ascii("example.test.").unwrap();
        let now = unix(SystemTime::now());
        let mut s = machine::initial(
            KeyEntry {
                file: "k1".into(),
                algorithm: DnssecAlgorithm::EcdsaP256Sha256,
                key_tag: 1,
                roles: KeyRoles::default(),
                created: now,
            },
            now,
        );
        let before = s.clone();
        assert_eq!(r.drive(&origin, &mut s).await, None);
        // Unchanged (what `first_state` derives from the key files again), so the loop may
        // drop it.
        assert_eq!(s, before);
        assert_eq!(load_state(dir.path(), &origin).unwrap(), None);
        assert_eq!(r.drive(&origin, &mut s).await, None);
        r.settings.store(Arc::new(RollSettings {
            key_lifetime: Some(Duration::from_secs(86400)),
            ..RollSettings::clone(&r.settings.load())
        }));
        assert_eq!(r.drive(&origin, &mut s).await, Some(from_unix(now + 86400)));
        assert_eq!(zones.0.load(Ordering::SeqCst), 0, "no server asked");
    }
}
