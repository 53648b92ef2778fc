//! The rollover's files in the state directory (the layout is in [`super::executor`]'s
//! header): paths, the roll state, the MX key files, and `mxguard rotate` requests. Writes are
//! atomic; [`on_disk`] runs them on the blocking pool for async callers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::executor::RollError;
use crate::dane::machine::{self as rollover, KeyId, RollState};
use crate::dane::probe;
use crate::state_dir::{self as store, StateDir};

/// Where the certificate ordered for the next key waits until it is deployed.
pub(super) fn next_chain_path(root: &Path, host: &str) -> PathBuf {
    root.join("certs").join(host).join("next-chain.pem")
}

pub(crate) fn state_path(root: &Path, host: &str) -> PathBuf {
    root.join("rollover").join(format!("{host}.json"))
}

/// The folder of roll requests.
pub(crate) fn requests_dir(root: &Path) -> PathBuf {
    root.join("rollover").join("requests")
}

/// Notices `mxguard rotate` requests (`rollover/requests/<host>.rotate`) by that folder's
/// modification time, so that the folder is listed only when something was added to it.
#[derive(Default)]
pub(crate) struct RotateRequests {
    seen: Option<SystemTime>,
}

impl RotateRequests {
    /// Hosts with a pending request, when the folder changed since the last call.
    pub(crate) fn poll(&mut self, root: &std::path::Path) -> Vec<String> {
        let dir = requests_dir(root);
        let Ok(modified) = std::fs::metadata(&dir).and_then(|m| m.modified()) else {
            return Vec::new();
        };
        if self.seen == Some(modified) {
            return Vec::new();
        }
        self.seen = Some(modified);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".rotate")
                    .map(str::to_string)
            })
            .collect()
    }
}

pub(crate) fn request_path(root: &Path, host: &str) -> PathBuf {
    requests_dir(root).join(format!("{host}.rotate"))
}

pub(super) fn key_path(root: &Path, host: &str, id: &str) -> PathBuf {
    root.join("mx-keys").join(host).join(format!("{id}.pem"))
}

/// Reads a persisted roll state (`None` when there is none yet or it is unreadable).
pub(crate) fn load(root: &Path, host: &str) -> Option<RollState> {
    let bytes = std::fs::read(state_path(root, host)).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(mx = host, err = %e, "unreadable rollover state; fix or remove it");
            None
        }
    }
}

pub(super) fn save(state: &StateDir, host: &str, s: &RollState) -> Result<(), RollError> {
    store::ensure_dir(&state.path("rollover"))?;
    let json = serde_json::to_vec_pretty(s).map_err(|e| RollError::File {
        path: state_path(state.root(), host),
        reason: e.to_string(),
    })?;
    store::write_atomic(&state_path(state.root(), host), &json, store::PUBLIC_MODE)?;
    Ok(())
}

pub(super) fn save_key(
    state: &StateDir,
    host: &str,
    key: &rcgen::KeyPair,
) -> Result<KeyId, RollError> {
    let id = probe::key_id(&rcgen::PublicKeyData::subject_public_key_info(key));
    save_key_pem(state, host, &id, &key.serialize_pem())?;
    Ok(id)
}

/// Writes the key `id` of `host` (PEM) unless its file exists.
pub(super) fn save_key_pem(
    state: &StateDir,
    host: &str,
    id: &KeyId,
    pem: &str,
) -> Result<(), RollError> {
    let path = key_path(state.root(), host, id);
    store::ensure_dir(path.parent().unwrap_or(state.root()))?;
    if !path.exists() {
        store::write_atomic(&path, pem.as_bytes(), store::SECRET_MODE)?;
    }
    Ok(())
}

/// Runs `f`, file writes of `host`'s roll that wait for the disk, on tokio's blocking pool: no
/// async worker waits, and the writes of MXes beginning together overlap (the file system
/// commits concurrent syncs at once; at a first start there are four synced writes per MX).
pub(super) async fn on_disk<T: Send + 'static>(
    state: &Arc<StateDir>,
    host: &str,
    f: impl FnOnce(&StateDir, &str) -> Result<T, RollError> + Send + 'static,
) -> Result<T, RollError> {
    let (state, host) = (Arc::clone(state), host.to_string());
    let dir = state.root().join("mx-keys").join(&host);
    tokio::task::spawn_blocking(move || f(&state, &host))
        .await
        .map_err(|e| RollError::File {
            path: dir,
            reason: format!("the task writing the files failed: {e}"),
        })?
}

pub(super) fn load_key(root: &Path, host: &str, id: &str) -> Result<rcgen::KeyPair, RollError> {
    let path = key_path(root, host, id);
    let bad = |reason: String| RollError::File {
        path: path.clone(),
        reason,
    };
    let pem = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    rcgen::KeyPair::from_pem(&pem).map_err(|e| bad(e.to_string()))
}

/// Deletes the MX's key files other than `keep` (retired keys whose records are long gone).
pub(super) fn prune_keys(root: &Path, host: &str, keep: &[&KeyId]) {
    let dir = root.join("mx-keys").join(host);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pem"))
        else {
            continue;
        };
        if keep.iter().any(|k| k.as_str() == id) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(mx = host, key = id, "retired key deleted"),
            Err(e) => tracing::warn!(mx = host, key = id, err = %e, "cannot delete a retired key"),
        }
    }
}

/// The `3 1 1` digests of an MX's roll state (`None`: no roll state yet).
pub(crate) fn rolled_digests(root: &Path, host: &str) -> Option<Vec<Vec<u8>>> {
    let s = load(root, host)?;
    Some(
        rollover::published(&s)
            .iter()
            .filter_map(|id| crate::dane::tlsa::hex_decode(id))
            .collect(),
    )
}
