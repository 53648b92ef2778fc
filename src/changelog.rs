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

/// What the journal holds in memory (one lock: the file and the memory change together).
#[derive(Debug, Default)]
struct Inner {
    recent: VecDeque<ChangeEvent>,
    /// Lines in the file (to know when to rewrite it).
    lines: usize,
    /// The file ends in a torn line (a crash mid-append): end it before appending.
    torn: bool,
}

/// The journal; cheap to share.
#[derive(Debug)]
pub struct ChangeLog {
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
    wake: Arc<Notify>,
}

impl ChangeLog {
    /// Opens the journal in `state_root` (a missing or partly broken file is fine: unreadable
    /// lines are skipped).
    pub fn open(state_root: &Path) -> ChangeLog {
        let path = state_root.join(FILE);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let all = parse(&text);
        ChangeLog {
            inner: Mutex::new(Inner {
                lines: text.lines().count(),
                torn: !text.is_empty() && !text.ends_with('\n'),
                recent: all.into_iter().rev().take(KEEP).rev().collect(),
            }),
            path: Some(path),
            wake: Arc::new(Notify::new()),
        }
    }

    /// A journal kept in memory only (tests, tools).
    pub fn in_memory() -> ChangeLog {
        ChangeLog {
            path: None,
            inner: Mutex::new(Inner::default()),
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
        {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if inner.recent.len() == KEEP {
                inner.recent.pop_front();
            }
            inner.recent.push_back(e.clone());
            if let Some(path) = &self.path
                && let Err(err) = append(path, &e, &mut inner)
            {
                tracing::warn!(file = %path.display(), err = %err, "change journal not written");
            }
        }
        self.wake.notify_one();
    }

    /// The kept changes, oldest first.
    pub fn recent(&self) -> Vec<ChangeEvent> {
        self.inner
            .lock()
            .map(|i| i.recent.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Appends `e` to the file, or rewrites the file with the kept events when it has grown to
/// twice their number.
fn append(path: &Path, e: &ChangeEvent, inner: &mut Inner) -> std::io::Result<()> {
    if inner.lines >= 2 * KEEP {
        let mut text = String::new();
        for x in &inner.recent {
            text.push_str(&serde_json::to_string(x).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        crate::state_dir::write_atomic(path, text.as_bytes(), crate::state_dir::PUBLIC_MODE)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        inner.lines = inner.recent.len();
        inner.torn = false;
        return Ok(());
    }
    let mut line = String::new();
    if inner.torn {
        line.push('\n');
    }
    line.push_str(&serde_json::to_string(e).map_err(std::io::Error::other)?);
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())?;
    f.sync_data()?;
    inner.torn = false;
    inner.lines += 1;
    Ok(())
}

fn parse(text: &str) -> Vec<ChangeEvent> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Every readable event of a journal file, oldest first.
pub fn read(path: &Path) -> Vec<ChangeEvent> {
    std::fs::read_to_string(path)
        .map(|t| parse(&t))
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
        // The next change is not glued to the torn line.
        again.record("policy", "example.com", "policy changed");
        let third = ChangeLog::open(dir.path()).recent();
        assert_eq!(third.len(), 3, "{third:?}");
        assert_eq!(third[2].kind, "policy");
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
