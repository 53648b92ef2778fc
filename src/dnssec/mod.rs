//! DNSSEC key lifecycle of the zones mxguard serves: when a zone's signing keys change.
//!
//! Owns `keys/<zone>.roll.json` (each zone's keys with their roles and the roll phase),
//! `keys/requests/` (rolls asked for by `mxguard dnssec-roll`) and the retirement of key files;
//! `crate::zone::keys` generates and reads the key files. Must not sign or serve zones (it
//! hands the key set to the zone publisher through [`KeyedZones`]) and must not read the
//! config file.
//!
//! - `machine`: the key roll state machine (pure): the one place that decides *when*.
//! - `executor`: runs the machine per zone, persisting each state before acting on it.
//! - `parent`: the DS the parent's servers serve.

pub(crate) mod executor;
pub(crate) mod machine;
pub(crate) mod parent;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::Name;

use crate::zone::keys::{self, KeySet};
use crate::zone::{DnssecAlgorithm, ZoneError};
pub(crate) use machine::RollState;
pub(crate) use parent::ParentSource;

/// The zones whose keys roll: mxguard's signed zones.
#[async_trait::async_trait]
pub(crate) trait KeyedZones: Send + Sync {
    /// The zones served now.
    fn zones(&self) -> Vec<Name>;
    /// Signs `zone` with `keys` from now on; the serial of the zone carrying them.
    async fn use_keys(&self, zone: &Name, keys: KeySet) -> Result<u32, String>;
    /// The largest TTL in the served zone and the DNSKEY TTL.
    fn ttls(&self, zone: &Name) -> Option<machine::Ttls>;
    /// Whether every authoritative server serves `serial` (or later); else who does not.
    async fn served_everywhere(&self, zone: &Name, serial: u32) -> Result<(), String>;
}

/// How rolls are timed and where the parent is (from `[dnssec]` and `rollover.poll`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RollSettings {
    pub algorithm: DnssecAlgorithm,
    pub key_lifetime: Option<Duration>,
    pub propagation_delay: Duration,
    pub parent: ParentSource,
    pub poll: Duration,
}

impl RollSettings {
    pub(crate) fn parent_source(
        nameservers: &[SocketAddr],
        resolver: Option<SocketAddr>,
    ) -> ParentSource {
        match (nameservers, resolver) {
            ([], None) => ParentSource::Unknown,
            ([], Some(r)) => ParentSource::Resolver(r),
            (s, _) => ParentSource::Servers(s.to_vec()),
        }
    }

    pub(crate) fn timing(&self) -> machine::Timing {
        machine::Timing {
            propagation_delay: self.propagation_delay.as_secs(),
            key_lifetime: self.key_lifetime.map(|d| d.as_secs()),
            algorithm: self.algorithm,
        }
    }
}

fn zone_file_name(origin: &Name) -> String {
    origin
        .to_lowercase()
        .to_ascii()
        .trim_end_matches('.')
        .to_string()
}

/// The key directory in the state directory.
pub(crate) fn key_dir(state_root: &Path) -> PathBuf {
    state_root.join("keys")
}

/// Where a zone's key state is kept.
pub(crate) fn state_path(state_root: &Path, origin: &Name) -> PathBuf {
    key_dir(state_root).join(format!("{}.roll.json", zone_file_name(origin)))
}

/// Where `mxguard dnssec-roll` leaves a request for the daemon.
pub(crate) fn request_path(state_root: &Path, origin: &Name) -> PathBuf {
    key_dir(state_root)
        .join("requests")
        .join(zone_file_name(origin))
}

/// A zone's key state, if it has one (zones whose key never rolled may not).
pub(crate) fn load_state(state_root: &Path, origin: &Name) -> Result<Option<RollState>, String> {
    let path = state_path(state_root, origin);
    match crate::state_dir::read_optional(&path) {
        Ok(Some(b)) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The key file of a zone that has no key state: its one `<zone>.<algorithm>.csk.pk8`, or
/// of two (a config whose algorithm changed before key rolls existed) the newer, which is the
/// one that was in use; `None` when there is none. Key files of a roll
/// (`<zone>.<algorithm>.<tag>.csk.pk8`) without a key state are an error: the state that says
/// which of them is in use is missing, and a new key would not match the parent's DS.
fn first_key(
    dir: &Path,
    origin: &Name,
    algorithm: DnssecAlgorithm,
) -> Result<Option<keys::ZoneKey>, ZoneError> {
    let mut found = Vec::new();
    for a in [DnssecAlgorithm::EcdsaP256Sha256, DnssecAlgorithm::Ed25519] {
        if let Some(k) = keys::load(dir, origin, a)? {
            let modified = std::fs::metadata(keys::key_path(dir, origin, a))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            found.push((modified, k.algorithm() == algorithm, k));
        }
    }
    found.sort_by_key(|(m, preferred, _)| (*m, *preferred));
    if let Some((_, _, k)) = found.pop() {
        return Ok(Some(k));
    }
    let zone = zone_file_name(origin);
    if has_rolled_keys(dir, &zone) {
        return Err(ZoneError::Key {
            path: dir.join(format!("{zone}.roll.json")),
            reason: format!(
                "key files of {zone} from a key roll exist but its key state is missing: restore this file from a backup (or move {zone}.*.csk.pk8 away to start with a new key, whose DS the parent must then get)"
            ),
        });
    }
    Ok(None)
}

/// Whether `dir` holds key files of a roll of `zone` (the directory is read once per process:
/// only zones without a key state ask, and those are zones seen for the first time).
fn has_rolled_keys(dir: &Path, zone: &str) -> bool {
    static SEEN: std::sync::Mutex<Option<(PathBuf, std::collections::HashSet<String>)>> =
        std::sync::Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((d, set)) = seen.as_ref()
        && d == dir
    {
        return set.contains(zone);
    }
    let set: std::collections::HashSet<String> =
        rolled_key_files(dir).into_iter().map(|(z, _)| z).collect();
    let found = set.contains(zone);
    *seen = Some((dir.to_path_buf(), set));
    found
}

/// The key files of rolls in `dir` (`<zone>.<algorithm>.<tag>.csk.pk8`; a zone's first key has
/// no tag): (zone, file name) each.
fn rolled_key_files(dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".csk.pk8") else {
            continue;
        };
        let mut parts = stem.rsplitn(3, '.');
        if let (Some(tag), Some(_alg), Some(zone)) = (parts.next(), parts.next(), parts.next())
            && tag.parse::<u16>().is_ok()
        {
            out.push((zone.to_string(), name.clone()));
        }
    }
    out
}

/// The keys `origin` is signed with: from its key state, else its first key (generated with
/// `algorithm` when there is none yet).
pub(crate) fn zone_keys(
    state_root: &Path,
    origin: &Name,
    algorithm: DnssecAlgorithm,
) -> Result<KeySet, ZoneError> {
    let dir = key_dir(state_root);
    match load_state(state_root, origin) {
        Ok(Some(s)) => return KeySet::load(&dir, &s.keys),
        Ok(None) => {}
        Err(reason) => {
            return Err(ZoneError::Key {
                path: state_path(state_root, origin),
                reason,
            });
        }
    }
    match first_key(&dir, origin, algorithm)? {
        Some(k) => Ok(KeySet::from(k)),
        None => keys::load_or_generate(&dir, origin, algorithm).map(KeySet::from),
    }
}

/// The keys of `origin` without creating any (`None`: it has none yet).
pub(crate) fn existing_keys(
    state_root: &Path,
    origin: &Name,
    algorithm: DnssecAlgorithm,
) -> Result<Option<KeySet>, String> {
    let dir = key_dir(state_root);
    if let Some(s) = load_state(state_root, origin)? {
        return KeySet::load(&dir, &s.keys)
            .map(Some)
            .map_err(|e| e.to_string());
    }
    first_key(&dir, origin, algorithm)
        .map(|k| k.map(KeySet::from))
        .map_err(|e| e.to_string())
}

/// What `mxguard status` shows of a zone's keys: each key with its roles, the roll phase and
/// what it waits for, the DS the parent serves (asked now when the parent is configured) and
/// what the operator must do. The flag is true when the operator must act.
pub(crate) async fn report(
    state_root: &Path,
    origin: &Name,
    algorithm: DnssecAlgorithm,
    parent: &ParentSource,
) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let state = match load_state(state_root, origin) {
        Ok(s) => s,
        Err(e) => return (vec![format!("key state unreadable: {e}")], true),
    };
    let keys = match existing_keys(state_root, origin, algorithm) {
        Ok(Some(k)) => k,
        Ok(None) => {
            return (
                vec!["no key yet (created at the first start)".into()],
                false,
            );
        }
        Err(e) => return (vec![format!("keys unreadable: {e}")], true),
    };
    match &state {
        Some(s) => out.extend(executor::describe(s)),
        None => {
            for (k, roles) in keys.keys() {
                out.push(format!(
                    "key {} {} ({roles})",
                    k.key_tag(),
                    k.algorithm().as_str()
                ));
            }
            out.push("no key roll yet".into());
        }
    }
    let submitted: Vec<&crate::zone::ZoneKey> = keys.submitted().collect();
    let Some(new) = submitted.first() else {
        return (out, true);
    };
    // The key being replaced, once the new one is submitted (before, the other key is the new
    // one, not yet submitted).
    let rolling_out = state.as_ref().is_some_and(|s| {
        matches!(
            s.phase,
            machine::Phase::SwapDs { .. } | machine::Phase::Withdraw | machine::Phase::Unsign
        )
    });
    let old = keys
        .keys()
        .find(|(_, r)| rolling_out && !r.ds)
        .map(|(k, _)| k);
    if *parent == ParentSource::Unknown {
        out.push(
            "parent DS: not checked (set dnssec.parent_nameservers or parent_resolver)".into(),
        );
        return (out, false);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let view = parent::observe(origin, parent, new, old, now).await;
    if let Some(e) = &view.error {
        out.push(format!("parent DS: unknown ({e})"));
        return (out, true);
    }
    if view.ds.is_empty() {
        out.push("parent DS: none (the zone is not secured by its parent)".into());
    } else {
        for ds in &view.ds {
            out.push(format!("parent DS: {ds}"));
        }
    }
    let mut act = false;
    if !view.has_new {
        act = true;
        let since = state
            .as_ref()
            .filter(|s| matches!(s.phase, machine::Phase::SwapDs { .. }))
            .map(|s| format!("; waiting since {}", executor::rfc3339(s.since)))
            .unwrap_or_default();
        match new.registrar_records(origin) {
            Ok(r) => out.push(format!(
                "give the registrar this DS (unless it reads CDS){since}: {}",
                r.ds
            )),
            Err(e) => out.push(format!("the DS cannot be computed: {e}")),
        }
    }
    if view.has_old && view.has_new {
        act = true;
        out.push("the parent still serves the old key's DS: have the registrar remove it".into());
    }
    (out, act)
}

/// Moves key files of a roll that no key state lists into `keys/orphaned/`: a key generated
/// just before a crash, before the state naming it was saved (it was never published). Moved,
/// not deleted: a state restored from an older backup does not list the key in use either, and
/// that key must stay recoverable. Returns where the files went. Keys of zones without a key
/// state are left alone (their state may be restored).
pub(crate) fn sweep_orphan_keys(state_root: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = key_dir(state_root);
    let mut by_zone: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (zone, file) in rolled_key_files(&dir) {
        by_zone.entry(zone).or_default().push(file);
    }
    let orphaned = dir.join("orphaned");
    let mut moved = Vec::new();
    for (zone, files) in by_zone {
        let Ok(origin) = Name::from_ascii(format!("{zone}.")) else {
            continue;
        };
        let Ok(Some(state)) = load_state(state_root, &origin) else {
            continue;
        };
        for file in files {
            if !state.keys.iter().any(|k| k.file == file) {
                let to = orphaned.join(&file);
                let done = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&orphaned)
                    .and_then(|()| std::fs::rename(dir.join(&file), &to));
                if done.is_ok() {
                    moved.push(to);
                }
            }
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_no_state_lists_are_swept_and_only_for_zones_with_a_state() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let keys = key_dir(root);
        std::fs::create_dir_all(&keys).unwrap();
        let origin = Name::from_ascii("example.com.").unwrap();
        let used = keys::generate_entry(&keys, &origin, DnssecAlgorithm::Ed25519, &[], 1).unwrap();
        let orphan =
            keys::generate_entry(&keys, &origin, DnssecAlgorithm::Ed25519, &[used.key_tag], 2)
                .unwrap();
        let state = machine::initial(used.clone(), 1);
        executor::save(root, &origin, &state).unwrap();
        // Another zone's rolled key without its state: kept (the state may be restored).
        let other = Name::from_ascii("example.net.").unwrap();
        let kept = keys::generate_entry(&keys, &other, DnssecAlgorithm::Ed25519, &[], 3).unwrap();
        let moved = sweep_orphan_keys(root);
        let to = keys.join("orphaned").join(&orphan.file);
        assert_eq!(moved, vec![to.clone()]);
        assert!(to.exists() && !keys.join(&orphan.file).exists());
        assert!(keys.join(&used.file).exists());
        assert!(keys.join(&kept.file).exists());
        assert!(sweep_orphan_keys(root).is_empty());
        // And the zone without its state refuses to pick a key.
        let e = zone_keys(root, &other, DnssecAlgorithm::Ed25519).unwrap_err();
        assert!(e.to_string().contains("key state is missing"), "{e}");
    }
}
