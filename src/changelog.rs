//! The journal of changes mxguard makes to what senders see: rollover steps, certificate
//! installations and deployments, policy changes, reloads. Kept in the state directory
//! (`changes.jsonl`, one JSON object per line, the newest 1,000 kept) so that TLS-RPT reports
//! arriving a day later can be set against them, and in memory for the status page. Recording
//! also wakes whoever waits for changes (the posture checks).
//!
//! A leaf: writes only its own file; knows nothing of who records.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::Notify;

/// The journal file in the state directory.
pub const FILE: &str = "changes.jsonl";
/// Events kept (in memory and, after a rewrite, on disk).
const KEEP: usize = 1000;

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChangeEvent {
    /// Unix seconds.
    pub at: u64,
    /// `rollover`, `certificate`, `policy` or `reload`.
    pub kind: String,
    /// The MX host, certificate name or domain it is about.
    pub subject: String,
    pub detail: String,
}

/// The journal; cheap to share.
#[derive(Debug)]
pub struct ChangeLog {
    path: Option<PathBuf>,
    recent: Mutex<VecDeque<ChangeEvent>>,
    /// Lines in the file (to know when to rewrite it).
    lines: Mutex<usize>,
    wake: Arc<Notify>,
}

impl ChangeLog {
    /// Opens the journal in `state_root` (a missing or partly broken file is fine: unreadable
    /// lines are skipped).
    pub fn open(state_root: &Path) -> ChangeLog {
        let path = state_root.join(FILE);
        let all = read(&path);
        let lines = all.len();
        ChangeLog {
            path: Some(path),
            recent: Mutex::new(all.into_iter().rev().take(KEEP).rev().collect()),
            lines: Mutex::new(lines),
            wake: Arc::new(Notify::new()),
        }
    }

    /// A journal kept in memory only (tests, tools).
    pub fn in_memory() -> ChangeLog {
        ChangeLog {
            path: None,
            recent: Mutex::new(VecDeque::new()),
            lines: Mutex::new(0),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Notified after every recorded change.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Records a change now. A failure to write the file is logged; the change is still
    /// kept in memory and announced.
    pub fn record(&self, kind: &str, subject: &str, detail: impl Into<String>) {
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.record_event(ChangeEvent {
            at,
            kind: kind.to_string(),
            subject: subject.to_string(),
            detail: detail.into(),
        });
    }

    /// Records a change with its own time (imports, tests).
    pub fn record_event(&self, e: ChangeEvent) {
        let snapshot = {
            let Ok(mut r) = self.recent.lock() else {
                return;
            };
            if r.len() == KEEP {
                r.pop_front();
            }
            r.push_back(e.clone());
            r.clone()
        };
        if let Some(path) = &self.path
            && let Err(err) = self.append(path, &e, &snapshot)
        {
            tracing::warn!(file = %path.display(), err = %err, "change journal not written");
        }
        self.wake.notify_one();
    }

    fn append(
        &self,
        path: &Path,
        e: &ChangeEvent,
        snapshot: &VecDeque<ChangeEvent>,
    ) -> std::io::Result<()> {
        let mut lines = self
            .lines
            .lock()
            .map_err(|_| std::io::Error::other("journal lock poisoned"))?;
        if *lines >= 2 * KEEP {
            // Keep the newest KEEP: rewrite the file whole (atomically).
            let mut text = String::new();
            for x in snapshot {
                text.push_str(&serde_json::to_string(x).map_err(std::io::Error::other)?);
                text.push('\n');
            }
            crate::state_dir::write_atomic(path, text.as_bytes(), crate::state_dir::PUBLIC_MODE)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            *lines = snapshot.len();
            return Ok(());
        }
        let mut line = serde_json::to_string(e).map_err(std::io::Error::other)?;
        line.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        f.write_all(line.as_bytes())?;
        f.sync_data()?;
        *lines += 1;
        Ok(())
    }

    /// The kept changes, oldest first.
    pub fn recent(&self) -> Vec<ChangeEvent> {
        self.recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Every readable event of a journal file, oldest first.
pub fn read(path: &Path) -> Vec<ChangeEvent> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_a_restart_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = ChangeLog::open(dir.path());
        log.record("rollover", "mx1.example.com", "key roll starts");
        log.record("certificate", "mx1.example.com", "deployed");
        // A crash mid-append leaves half a line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(b"{\"at\":1,\"kin").unwrap();
        let again = ChangeLog::open(dir.path());
        let r = again.recent();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].kind, "rollover");
        assert_eq!(r[1].detail, "deployed");
    }

    #[test]
    fn the_file_is_kept_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let log = ChangeLog::open(dir.path());
        for i in 0..(2 * KEEP + 5) {
            log.record("policy", "example.com", format!("change {i}"));
        }
        let on_disk = read(&dir.path().join(FILE));
        assert!(on_disk.len() <= 2 * KEEP, "{}", on_disk.len());
        assert_eq!(
            on_disk.last().unwrap().detail,
            format!("change {}", 2 * KEEP + 4)
        );
        assert_eq!(log.recent().len(), KEEP);
    }
}
