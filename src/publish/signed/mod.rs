//! mxguard's own signed zones as a [`RecordSink`]: the single writer of the zones the DNS
//! server serves (mxguard as hidden primary, secondaries by NOTIFY and AXFR).
//!
//! Owns the zone snapshots: each domain's zone file parsed at start and on reload only, the
//! managed RRsets per zone, the zone keys, and the signed zones handed to the DNS server. A
//! change rebuilds and re-signs only the zone it touches, reusing the signatures of unchanged
//! RRsets; a change that is already in place does nothing at all. Parsing and signing run on
//! one signer thread, never on the async workers. The signing state (serial, window) is persisted before
//! a zone is served.
//!
//! Must not decide what the records are or when they change, and must not read the config
//! file: the daemon hands in the zone list and DNSSEC settings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::rr::Name;
use tokio_util::sync::CancellationToken;

mod signer;
mod sinks;
mod slots;

use super::{Applied, Change, NotServed, RecordSink, Rrset, RrsetKey, SinkError, zone_for};
use crate::dns::{DnsServer, Secondary};
use crate::state_dir::StateDir;
use crate::zone::keys::KeySet;
use crate::zone::signed::SignedRrSet;
use crate::zone::{self, DnssecSettings, ManagedRecords, SignedZone, ZoneData, ZoneError, Zones};
use signer::SignerThread;
use slots::Slots;

/// One zone to serve: the mail domain and its zone file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DomainZone {
    pub domain: String,
    pub zone_file: Arc<Path>,
}

/// A zone file as read at start or the last reload. Kept as text (a zone file's text is a
/// fraction of its parsed form) and parsed again from memory when the zone is rebuilt; a file
/// with `$INCLUDE` is kept parsed, so that nothing is read from disk after the reload.
#[derive(Clone, PartialEq, Eq)]
enum ZoneSource {
    Text { text: Arc<str>, path: Arc<Path> },
    Parsed(Arc<ZoneData>),
}

impl ZoneSource {
    fn read(path: &Arc<Path>, origin: &Name) -> Result<ZoneSource, ZoneError> {
        let text = std::fs::read_to_string(path).map_err(|source| ZoneError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let data = ZoneData::parse(&text, path, origin)?;
        Ok(if text.to_ascii_uppercase().contains("$INCLUDE") {
            ZoneSource::Parsed(Arc::new(data))
        } else {
            ZoneSource::Text {
                text: text.into(),
                path: path.clone(),
            }
        })
    }

    fn data(&self, origin: &Name) -> Result<ZoneData, ZoneError> {
        match self {
            ZoneSource::Text { text, path } => ZoneData::parse(text, path, origin),
            ZoneSource::Parsed(d) => Ok(ZoneData::clone(d)),
        }
    }
}

/// What is known about one served zone besides its signed form.
#[derive(Clone)]
struct Slot {
    /// The zone file as read at start or the last reload.
    source: ZoneSource,
    /// Managed RRsets of this zone, by key.
    managed: Managed,
    /// The keys and their roles (changed only by the key roll, `crate::dnssec`).
    keys: Arc<KeySet>,
}

/// The managed RRsets of one zone, sorted by key, in a vector of exactly their number: a zone
/// has a handful, and a `BTreeMap` node keeps room for eleven (1.6 KiB per zone). Each RRset is
/// kept in wire form ([`SignedRrSet`] without signatures: one allocation instead of a vector of
/// hickory `RData` with the heap parts of each), which holds its owner and type, so the key
/// adds only its producer (an [`RrsetKey`] with its hickory `Name` inline is 88 bytes). What
/// produced it is named by the producer ([`super::Source::label`]) in later messages: the
/// change's own description (a config key with the file's path) is used while the change is
/// applied and not kept (it took about a tenth of a small zone's memory).
#[derive(Clone, Default, PartialEq, Eq)]
struct Managed(Vec<ManagedSet>);

#[derive(Clone, PartialEq, Eq)]
struct ManagedSet {
    set: SignedRrSet,
    source: super::Source,
}

impl ManagedSet {
    /// The sort key: owner (wire form, lowercase), type, producer.
    fn order(&self) -> (&[u8], u16, super::Source) {
        (
            self.set.owner(),
            u16::from(self.set.record_type()),
            self.source,
        )
    }

    fn key(&self) -> Option<RrsetKey> {
        let owner = self.set.name().ok()?;
        Some(RrsetKey::new(owner, self.set.record_type(), self.source))
    }
}

impl Managed {
    /// Adds or replaces the RRset of `key`; fails when a record cannot be encoded.
    fn insert(&mut self, key: &RrsetKey, set: &Rrset) -> Result<(), SinkError> {
        let stored =
            SignedRrSet::new(&key.owner, key.rtype, set.ttl, &set.data, &[]).map_err(|e| {
                SinkError::Record {
                    what: set.what.clone(),
                    reason: e.to_string(),
                }
            })?;
        let new = ManagedSet {
            set: stored,
            source: key.source,
        };
        match self.0.binary_search_by(|m| m.order().cmp(&new.order())) {
            Ok(i) => self.0[i] = new,
            Err(i) => {
                self.0.insert(i, new);
                self.0.shrink_to_fit();
            }
        }
        Ok(())
    }

    fn remove(&mut self, key: &RrsetKey) {
        let Ok(owner) = SignedRrSet::new(&key.owner, key.rtype, 0, &[], &[]) else {
            return; // a name that cannot be encoded was never stored
        };
        let order = (owner.owner(), u16::from(key.rtype), key.source);
        if let Ok(i) = self.0.binary_search_by(|m| m.order().cmp(&order)) {
            self.0.remove(i);
            self.0.shrink_to_fit();
        }
    }

    /// Each RRset with its key, decoded again.
    fn iter(&self) -> impl Iterator<Item = (RrsetKey, Rrset)> {
        self.0.iter().filter_map(|m| {
            let data = m.set.records().into_iter().map(|r| r.data).collect();
            Some((
                m.key()?,
                Rrset {
                    ttl: m.set.ttl(),
                    data,
                    what: m.source.label().to_string(),
                },
            ))
        })
    }
}

struct Inner {
    settings: DnssecSettings,
    slots: Slots,
}

/// A zone to (re)build: everything the blocking signer needs, owned.
struct Job {
    origin: Name,
    slot: Slot,
    previous: Option<Arc<SignedZone>>,
    /// A serial a secondary serves: the new serial must be above it (RFC 1982).
    above: Option<u32>,
}

/// Zones that could not be loaded or built; each message names the zone and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub(crate) struct LoadError {
    pub problems: Vec<String>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The zone origin of a mail domain.
pub(crate) fn origin(domain: &str) -> Result<Name, super::records::BadName> {
    super::records::fqdn(domain)
}

/// The managed records of `slot`, each named by what produced it: by the description of the
/// change in `naming` that set it, if any (the changes being applied), else by its producer.
fn managed_of(slot: &Slot, naming: &[Change]) -> ManagedRecords {
    let mut m = ManagedRecords::new();
    for (k, set) in slot.managed.iter() {
        let what = naming
            .iter()
            .find_map(|c| match c {
                Change::Set(n, named) if *n == k => Some(named.what.clone()),
                _ => None,
            })
            .unwrap_or(set.what);
        for d in set.data {
            m.push(k.owner.clone(), set.ttl, d, what.clone());
        }
    }
    m
}

/// The unsigned zone: the zone file plus the managed records (named as in [`managed_of`]).
fn merged(origin: &Name, slot: &Slot, naming: &[Change]) -> Result<ZoneData, ZoneError> {
    slot.source
        .data(origin)?
        .with_managed(&managed_of(slot, naming))
}

/// Parses every zone file and loads (or creates) every zone key: blocking.
fn load_slots(
    state: &StateDir,
    zones: &[DomainZone],
    settings: &DnssecSettings,
    keep_keys: &BTreeMap<Name, Arc<KeySet>>,
) -> Result<Slots, LoadError> {
    let mut problems = Vec::new();
    let mut slots = Vec::with_capacity(zones.len());
    for z in zones {
        let origin = match origin(&z.domain) {
            Ok(o) => o,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        let source = match ZoneSource::read(&z.zone_file, &origin) {
            Ok(d) => d,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        // A zone's keys stay as they are across reloads; a new algorithm is rolled to.
        let keys = match keep_keys.get(&origin) {
            Some(k) => k.clone(),
            None => match crate::dnssec::zone_keys(state.root(), &origin, settings.algorithm) {
                Ok(k) => Arc::new(k),
                Err(e) => {
                    problems.push(format!("zone {origin}: {e}"));
                    continue;
                }
            },
        };
        slots.push((
            origin,
            Slot {
                source,
                managed: Managed::default(),
                keys,
            },
        ));
    }
    if problems.is_empty() {
        Ok(slots.into_iter().collect())
    } else {
        Err(LoadError { problems })
    }
}

/// Parses and merges every zone with `changes` without keys, signing or writing anything:
/// what `check-config` validates.
/// One zone is parsed at a time: with every zone parsed at once, a reload of 10,000 zones
/// doubled the daemon's memory for its duration.
pub(crate) fn check(zones: &[DomainZone], changes: &[Change]) -> Result<(), LoadError> {
    let mut problems = Vec::new();
    // The managed records of each zone (by origin), with the zone file they go into.
    let mut slots: BTreeMap<Name, (&Path, ManagedRecords)> = BTreeMap::new();
    for z in zones {
        match origin(&z.domain) {
            Ok(o) => {
                slots.insert(o, (&z.zone_file, ManagedRecords::new()));
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    for c in changes {
        if let Change::Set(k, set) = c {
            match zone_for(&slots, &k.owner).cloned() {
                Some(o) => {
                    if let Some((_, m)) = slots.get_mut(&o) {
                        for d in &set.data {
                            m.push(k.owner.clone(), set.ttl, d.clone(), set.what.clone());
                        }
                    }
                }
                None => problems.push(format!(
                    "{}: {} is not inside any configured zone",
                    set.what, k.owner
                )),
            }
        }
    }
    for (o, (file, managed)) in slots {
        if let Err(e) = ZoneData::load(file, &o).and_then(|data| data.with_managed(&managed)) {
            problems.push(e.to_string());
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LoadError { problems })
    }
}

/// Builds and signs `jobs` (on the calling thread: the signer thread), persisting
/// each zone's signing state before it is returned. A zone whose content and window did not
/// change is left out.
fn build(
    state: &StateDir,
    settings: &DnssecSettings,
    jobs: Vec<Job>,
    now: u64,
) -> Result<Vec<Arc<SignedZone>>, Vec<String>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for job in jobs {
        match build_one(state, settings, &job, now) {
            Ok(Some(z)) => out.push(Arc::new(z)),
            Ok(None) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn build_one(
    state: &StateDir,
    settings: &DnssecSettings,
    job: &Job,
    now: u64,
) -> Result<Option<SignedZone>, ZoneError> {
    let data = merged(&job.origin, &job.slot, &[])?;
    let state_file = state.path(&format!("zones/{}signing.json", job.origin.to_ascii()));
    // To get above a secondary's serial, plan from that serial as if the content had changed:
    // a new serial above it, the same window, every unchanged signature kept.
    let lifted = match (&job.previous, job.above) {
        (Some(prev), Some(above)) => {
            let mut z = SignedZone::clone(prev);
            z.state.serial = above;
            z.state.content_hash = zone::serial::ContentHash::default();
            Some(Arc::new(z))
        }
        _ => None,
    };
    let (zone, new_state) = match lifted.as_ref().or(job.previous.as_ref()) {
        Some(prev) => {
            match zone::rebuild_signed_zone(&data, &job.slot.keys, prev, now, settings)? {
                Some(z) => z,
                None => return Ok(None),
            }
        }
        None => {
            let previous = zone::serial::load_state(&state_file)?;
            let (z, s) =
                zone::build_signed_zone(&data, &job.slot.keys, previous.as_ref(), now, settings)?;
            if previous.as_ref() == Some(&s) {
                return Ok(Some(z));
            }
            (z, s)
        }
    };
    crate::state_dir::ensure_dir(&state.path("zones"))?;
    zone::serial::save_state(&state_file, &new_state)?;
    tracing::debug!(zone = %job.origin, serial = new_state.serial, "zone signed");
    Ok(Some(zone))
}

/// The served zone set with `built` in place of the zones of the same origins, without
/// `removed`.
fn swap_zones(server: &DnsServer, built: Vec<Arc<SignedZone>>, removed: &[Name]) {
    let mut zones = Zones::clone(&server.zones().load());
    for o in removed {
        zones.remove(o);
    }
    for z in built {
        zones.insert_arc(z);
    }
    server.publish(zones);
}

/// The single writer of the served zones.
pub(crate) struct SignedZonePublisher {
    signer: SignerThread,
    state: Arc<StateDir>,
    server: Arc<DnsServer>,
    secondaries: Vec<Secondary>,
    inner: tokio::sync::Mutex<Inner>,
    /// Notified when a secondary is seen serving a serial above mxguard's (see
    /// [`SignedZonePublisher::run_catch_up`]).
    catch_up: tokio::sync::Notify,
}

impl SignedZonePublisher {
    /// Loads every zone file and key, applies `changes`, signs every zone and serves them.
    /// Fails (naming each problem) if any zone cannot be built: the daemon does not start with
    /// a broken zone.
    pub(crate) async fn start(
        state: Arc<StateDir>,
        server: Arc<DnsServer>,
        secondaries: Vec<Secondary>,
        settings: DnssecSettings,
        zones: Vec<DomainZone>,
        changes: Vec<Change>,
    ) -> Result<SignedZonePublisher, LoadError> {
        let signer = SignerThread::start().map_err(|e| LoadError {
            problems: vec![format!("starting the zone signer thread: {e}")],
        })?;
        let st = state.clone();
        let s = settings.clone();
        let slots = signer
            .run(move || load_slots(&st, &zones, &s, &BTreeMap::new()))
            .await
            .map_err(|e| LoadError {
                problems: vec![format!("loading zones: {e}")],
            })??;
        let p = SignedZonePublisher {
            signer,
            state,
            server,
            secondaries,
            inner: tokio::sync::Mutex::new(Inner { settings, slots }),
            catch_up: tokio::sync::Notify::new(),
        };
        {
            let mut inner = p.inner.lock().await;
            let mut slots = inner.slots.clone();
            assign(&mut slots, &changes).map_err(|e| LoadError {
                problems: vec![e.to_string()],
            })?;
            let jobs = slots
                .iter()
                .map(|(o, s)| Job {
                    origin: o.clone(),
                    slot: s.clone(),
                    previous: None,
                    above: None,
                })
                .collect();
            let built = p
                .run_build(&inner.settings, jobs)
                .await
                .map_err(|problems| LoadError { problems })?;
            let mut served = Zones::new();
            for z in built {
                served.insert_arc(z);
            }
            p.server.publish(served);
            inner.slots = slots;
        }
        Ok(p)
    }

    /// Signs `jobs` on the signer thread.
    async fn run_build(
        &self,
        settings: &DnssecSettings,
        jobs: Vec<Job>,
    ) -> Result<Vec<Arc<SignedZone>>, Vec<String>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let state = self.state.clone();
        let settings = settings.clone();
        let now = unix(SystemTime::now());
        self.signer
            .run(move || build(&state, &settings, jobs, now))
            .await
            .map_err(|e| vec![e])?
    }

    /// Serves `built` in place of the zones with the same origins and removes `removed`, on
    /// the signer thread: the new zone set is a copy of the served one (O(number of zones)),
    /// and with secondaries the IXFR journal takes each changed zone's differences
    /// (O(zone size)); a reload that re-signs 10,000 zones would hold an async worker for that.
    /// An error (the signer thread stopped or the swap panicked) leaves the served zones as
    /// they were; callers return it before they record the new state.
    async fn swap(&self, built: Vec<Arc<SignedZone>>, removed: Vec<Name>) -> Result<(), String> {
        if built.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let server = self.server.clone();
        self.signer
            .run(move || swap_zones(&server, built, &removed))
            .await
            .map_err(|e| format!("serving the new zones: {e}"))
    }

    /// Reload: parses every zone file again, adds and removes zones, takes new DNSSEC
    /// settings, and rebuilds only the zones whose file, settings or key changed. Managed
    /// records of remaining zones stay; `changes` are applied in the same step. On error
    /// nothing changes.
    pub(crate) async fn reload(
        &self,
        settings: DnssecSettings,
        zones: Vec<DomainZone>,
        changes: Vec<Change>,
    ) -> Result<Applied, LoadError> {
        let mut inner = self.inner.lock().await;
        let keys: BTreeMap<Name, Arc<KeySet>> = inner
            .slots
            .iter()
            .map(|(o, s)| (o.clone(), s.keys.clone()))
            .collect();
        let st = self.state.clone();
        let s = settings.clone();
        let mut slots = self
            .signer
            .run(move || load_slots(&st, &zones, &s, &keys))
            .await
            .map_err(|e| LoadError {
                problems: vec![format!("loading zones: {e}")],
            })??;
        // Managed records stay with the zone that holds their owner now.
        let mut carried = Vec::new();
        for slot in inner.slots.values() {
            for (k, set) in slot.managed.iter() {
                carried.push(Change::Set(k, set));
            }
        }
        let mut dropped = 0usize;
        for c in carried {
            if zone_for(&slots, &c.key().owner).is_some() {
                assign(&mut slots, std::slice::from_ref(&c)).map_err(|e| LoadError {
                    problems: vec![e.to_string()],
                })?;
            } else {
                dropped += 1;
            }
        }
        if dropped > 0 {
            tracing::debug!(dropped, "managed records of removed zones dropped");
        }
        assign(&mut slots, &changes).map_err(|e| LoadError {
            problems: vec![e.to_string()],
        })?;
        let served = self.server.zones().load_full();
        let settings_changed = !settings.same_signing(&inner.settings);
        let mut jobs = Vec::new();
        for (o, slot) in slots.iter() {
            let old = inner.slots.get(o);
            let unchanged = !settings_changed
                && old.is_some_and(|old| {
                    old.source == slot.source
                        && old.managed == slot.managed
                        && Arc::ptr_eq(&old.keys, &slot.keys)
                });
            if !unchanged {
                jobs.push(Job {
                    origin: o.clone(),
                    slot: slot.clone(),
                    previous: if settings_changed {
                        None
                    } else {
                        served.get(o).cloned()
                    },
                    above: None,
                });
            }
        }
        let removed: Vec<Name> = inner
            .slots
            .keys()
            .filter(|o| !slots.contains_key(o))
            .cloned()
            .collect();
        let built = self
            .run_build(&settings, jobs)
            .await
            .map_err(|problems| LoadError { problems })?;
        let changed = !built.is_empty() || !removed.is_empty();
        let serials = built
            .iter()
            .map(|z| (z.origin().clone(), z.serial()))
            .collect();
        let n_removed = removed.len();
        self.swap(built, removed)
            .await
            .map_err(|e| LoadError { problems: vec![e] })?;
        if changed {
            tracing::info!(zones = slots.len(), removed = n_removed, "zones reloaded");
        }
        inner.slots = slots;
        inner.settings = settings;
        Ok(Applied { serials, changed })
    }

    /// Re-signs the zones whose signatures are due for refresh at `now`.
    async fn resign_due(&self) -> Result<usize, Vec<String>> {
        let inner = self.inner.lock().await;
        let now = unix(SystemTime::now());
        let served = self.server.zones().load_full();
        let jobs: Vec<Job> = inner
            .slots
            .iter()
            .filter(|(o, _)| {
                served
                    .get(o)
                    .is_none_or(|z| z.signing_state().resign_due(now, &inner.settings))
            })
            .map(|(o, s)| Job {
                origin: o.clone(),
                slot: s.clone(),
                previous: served.get(o).cloned(),
                above: None,
            })
            .collect();
        let built = self.run_build(&inner.settings, jobs).await?;
        let n = built.len();
        self.swap(built, Vec::new()).await.map_err(|e| vec![e])?;
        Ok(n)
    }

    /// Asks every secondary for each zone's serial and lifts every zone that a secondary serves
    /// with a higher serial (RFC 1982) above it, so the secondary transfers again (after a
    /// restore from backup or a second state directory, mxguard's serial can be behind). A
    /// secondary that times out is skipped for the rest of the pass. Returns the zones lifted.
    pub(crate) async fn catch_up_serials(&self) -> usize {
        if self.secondaries.is_empty() {
            return 0;
        }
        let served = self.served();
        let mut above: BTreeMap<Name, (u32, String)> = BTreeMap::new();
        for s in &self.secondaries {
            for z in served.iter() {
                let got = crate::dns::query_soa_serial(
                    s.address,
                    z.origin(),
                    s.tsig.as_ref(),
                    Duration::from_secs(1),
                )
                .await;
                let theirs = match got {
                    Ok(t) => t,
                    // Down: the rest of the pass would only wait (the rollover reports it).
                    Err(crate::dns::DnsError::Timeout { .. }) => break,
                    // Not authoritative for this zone (yet): nothing to catch up with.
                    Err(_) => continue,
                };
                let ours = above.get(z.origin()).map_or(z.serial(), |(s, _)| *s);
                if zone::serial::serial_gt(theirs, ours) {
                    above.insert(z.origin().clone(), (theirs, s.name.clone()));
                }
            }
        }
        if above.is_empty() {
            return 0;
        }
        let inner = self.inner.lock().await;
        let served = self.served();
        let mut jobs = Vec::new();
        for (origin, (theirs, name)) in &above {
            let (Some(slot), Some(zone)) = (inner.slots.get(origin), served.get(origin)) else {
                continue;
            };
            tracing::warn!(
                zone = %origin,
                ours = zone.serial(),
                theirs,
                secondary = %name,
                "a secondary serves a higher serial than mxguard; moving above it"
            );
            jobs.push(Job {
                origin: origin.clone(),
                slot: slot.clone(),
                previous: Some(zone.clone()),
                above: Some(*theirs),
            });
        }
        match self.run_build(&inner.settings, jobs).await {
            Ok(built) => {
                let n = built.len();
                match self.swap(built, Vec::new()).await {
                    Ok(()) => n,
                    Err(e) => {
                        tracing::error!(err = %e, "cannot move the serials above the secondaries'");
                        0
                    }
                }
            }
            Err(e) => {
                tracing::error!(err = %e.join("; "), "cannot move the serials above the secondaries'");
                0
            }
        }
    }

    /// The zones being served.
    pub(crate) fn served(&self) -> Arc<Zones> {
        self.server.zones().load_full()
    }

    /// Re-signs zones before their signatures run out; runs until `shutdown`.
    /// Runs until `shutdown`: whenever a secondary was seen above mxguard's serial (a change
    /// found it; start and reload look by themselves), moves every such zone above it.
    pub(crate) async fn run_catch_up(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.catch_up.notified() => {}
            }
            self.catch_up_serials().await;
        }
    }

    pub(crate) async fn run_resigner(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let next = {
                let inner = self.inner.lock().await;
                self.served()
                    .iter()
                    .map(|z| z.signing_state().resign_at(&inner.settings))
                    .min()
            };
            let now = unix(SystemTime::now());
            let wait = next.map_or(Duration::from_secs(3600), |t| {
                Duration::from_secs(t.saturating_sub(now).clamp(1, 3600))
            });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            match self.resign_due().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(zones = n, "zones re-signed"),
                Err(e) => {
                    tracing::error!(err = %e.join("; "), "re-signing failed; the old signatures stay until they expire")
                }
            }
        }
    }
}

/// Puts `changes` into the slots of the zones holding their owners.
fn assign(slots: &mut Slots, changes: &[Change]) -> Result<BTreeSet<Name>, SinkError> {
    let mut touched = BTreeSet::new();
    for c in changes {
        let origin = match (zone_for(slots, &c.key().owner), c) {
            (Some(o), _) => o.clone(),
            // Nothing to withdraw where no zone is.
            (None, Change::Withdraw(_)) => continue,
            (None, Change::Set(k, _)) => {
                return Err(SinkError::OutsideZones {
                    owner: k.owner.to_string(),
                });
            }
        };
        let Some(slot) = slots.get_mut(&origin) else {
            continue;
        };
        match c {
            Change::Set(k, set) if !set.data.is_empty() => {
                slot.managed.insert(k, set)?;
            }
            Change::Set(k, _) | Change::Withdraw(k) => {
                slot.managed.remove(k);
            }
        }
        touched.insert(origin);
    }
    Ok(touched)
}

#[cfg(test)]
mod tests;
