//! Importing TLS-RPT reports from mail already received elsewhere: `.eml` files, mbox files,
//! Maildir directories, and bare report files (`.json`, `.json.gz`).
//!
//! Owns: [`import`] (reads the given paths, stores each report through [`Intake::ingest`]),
//! [`ImportSummary`] with its [`ImportSummary::render`] for the CLI, and the pure mbox splitter
//! [`MboxSplitter`]. Must not touch: the report store's SQL (through [`Intake`] only), config,
//! sockets; it only reads the files it is given and never changes them.
//!
//! Idempotent: importing the same mail twice reports the second copy as a duplicate (the store
//! dedupes on organization-name and report-id). One unreadable or report-less item never stops
//! the rest; each is listed with its reason.
//!
//! What a path is taken to be: a directory with `cur/` or `new/` is a Maildir (both are read,
//! `tmp/` is not); another directory contributes its regular files, not recursively; a file
//! whose name ends in `.json` is a JSON report and `.json.gz` / `.gz` a gzip report; a file that
//! starts with `From ` is an mbox (split on `From ` lines, `>From ` unescaped as mboxrd);
//! anything else is one RFC 5322 message, unless its content is plainly a bare report (gzip
//! magic or a JSON object).

use std::path::{Path, PathBuf};

use axum::body::Bytes;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::tlsrpt::intake::{Intake, IntakeError};
use crate::tlsrpt::mailreport::{self, TLSRPT_GZIP, TLSRPT_JSON};
use crate::tlsrpt::store::Stored;

/// Largest single message or report file read.
pub const MAX_ITEM_BYTES: usize = 64 * 1024 * 1024;
/// Messages at most this large are searched on the async thread.
const INLINE_PARSE_MAX: usize = 64 * 1024;

/// What happened to one imported item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    /// Newly stored under this report id.
    Imported { id: i64 },
    /// Already stored under this report id.
    Duplicate { id: i64 },
    /// Not a report, or not a valid one (the reason says which).
    Skipped { reason: String },
    /// Could not be read or stored; trying again may work.
    Failed { reason: String },
}

/// One item: a file, a Maildir entry, or one message of an mbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportItem {
    /// The path, with ` message N` for the N-th message of an mbox.
    pub source: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Every item of one import, in the order read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    pub items: Vec<ImportItem>,
}

impl ImportSummary {
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.items.iter().filter(|i| f(&i.outcome)).count()
    }

    pub fn imported(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Imported { .. }))
    }

    pub fn duplicates(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Duplicate { .. }))
    }

    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skipped { .. }))
    }

    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed { .. }))
    }

    /// One line per item, then the totals: the text the `import` command prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for item in &self.items {
            let line = match &item.outcome {
                Outcome::Imported { id } => format!("{}: imported as report {id}", item.source),
                Outcome::Duplicate { id } => {
                    format!("{}: already stored as report {id}", item.source)
                }
                Outcome::Skipped { reason } => format!("{}: skipped: {reason}", item.source),
                Outcome::Failed { reason } => format!("{}: failed: {reason}", item.source),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str(&format!(
            "{} imported, {} duplicate{}, {} skipped, {} failed\n",
            self.imported(),
            self.duplicates(),
            if self.duplicates() == 1 { "" } else { "s" },
            self.skipped(),
            self.failed()
        ));
        out
    }

    fn push(&mut self, source: String, outcome: Outcome) {
        match &outcome {
            Outcome::Skipped { reason } => {
                tracing::info!(source = %source, reason = %reason, "import skipped")
            }
            Outcome::Failed { reason } => {
                tracing::warn!(source = %source, reason = %reason, "import failed")
            }
            Outcome::Imported { id } | Outcome::Duplicate { id } => {
                tracing::debug!(source = %source, id, "import stored")
            }
        }
        self.items.push(ImportItem { source, outcome });
    }
}

/// Imports every report found under `paths` (see the module doc for what a path may be).
pub async fn import(intake: &Intake, paths: &[PathBuf]) -> ImportSummary {
    let mut summary = ImportSummary::default();
    for path in paths {
        import_path(intake, path, &mut summary).await;
    }
    tracing::info!(
        imported = summary.imported(),
        duplicates = summary.duplicates(),
        skipped = summary.skipped(),
        failed = summary.failed(),
        "import finished"
    );
    summary
}

async fn import_path(intake: &Intake, path: &Path, summary: &mut ImportSummary) {
    let shown = path.display().to_string();
    let meta = match tokio::fs::metadata(path).await {
        Ok(m) => m,
        Err(e) => {
            summary.push(shown, failed_io("cannot read", &e));
            return;
        }
    };
    if !meta.is_dir() {
        import_file(intake, path, summary).await;
        return;
    }
    let maildir = ["cur", "new"].iter().any(|d| path.join(d).is_dir());
    let dirs: Vec<PathBuf> = if maildir {
        ["cur", "new"]
            .iter()
            .map(|d| path.join(d))
            .filter(|d| d.is_dir())
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    for dir in dirs {
        let entries = match list_dir(&dir).await {
            Ok(e) => e,
            Err(e) => {
                summary.push(dir.display().to_string(), failed_io("cannot list", &e));
                continue;
            }
        };
        for (entry, is_dir) in entries {
            if is_dir {
                summary.push(
                    entry.display().to_string(),
                    Outcome::Skipped {
                        reason: "a directory inside a directory (not searched; name it itself)"
                            .to_string(),
                    },
                );
            } else {
                import_file(intake, &entry, summary).await;
            }
        }
    }
}

/// The entries of `dir` without hidden ones, sorted by name, with whether each is a directory.
async fn list_dir(dir: &Path) -> std::io::Result<Vec<(PathBuf, bool)>> {
    let mut read = tokio::fs::read_dir(dir).await?;
    let mut entries = Vec::new();
    while let Some(entry) = read.next_entry().await? {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let is_dir = entry.file_type().await?.is_dir();
        entries.push((entry.path(), is_dir));
    }
    entries.sort();
    Ok(entries)
}

fn failed_io(what: &str, e: &std::io::Error) -> Outcome {
    Outcome::Failed {
        reason: format!("{what}: {e}"),
    }
}

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Report(&'static str),
    Mbox,
    Message,
}

fn kind_of(path: &Path, head: &[u8]) -> Kind {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".json") {
        Kind::Report(TLSRPT_JSON)
    } else if name.ends_with(".gz") || head.starts_with(&[0x1f, 0x8b]) {
        Kind::Report(TLSRPT_GZIP)
    } else if head.starts_with(b"From ") {
        Kind::Mbox
    } else if head
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(head)
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        == Some(&b'{')
    {
        Kind::Report(TLSRPT_JSON)
    } else {
        Kind::Message
    }
}

async fn import_file(intake: &Intake, path: &Path, summary: &mut ImportSummary) {
    let shown = path.display().to_string();
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => {
            summary.push(shown, failed_io("cannot open", &e));
            return;
        }
    };
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let kind = match reader.fill_buf().await {
        Ok(head) => kind_of(path, head),
        Err(e) => {
            summary.push(shown, failed_io("cannot read", &e));
            return;
        }
    };
    if kind == Kind::Mbox {
        import_mbox(intake, &shown, reader, summary).await;
        return;
    }
    let mut data = Vec::new();
    let read = (&mut reader)
        .take(MAX_ITEM_BYTES as u64 + 1)
        .read_to_end(&mut data)
        .await;
    let outcome = match read {
        Err(e) => failed_io("cannot read", &e),
        Ok(_) if data.len() > MAX_ITEM_BYTES => too_large(),
        Ok(_) => match kind {
            Kind::Report(content_type) => store(intake, data, content_type).await,
            _ => import_message(intake, data).await,
        },
    };
    summary.push(shown, outcome);
}

fn too_large() -> Outcome {
    Outcome::Skipped {
        reason: format!("larger than {MAX_ITEM_BYTES} bytes"),
    }
}

async fn import_mbox(
    intake: &Intake,
    shown: &str,
    mut reader: BufReader<tokio::fs::File>,
    summary: &mut ImportSummary,
) {
    let mut splitter = MboxSplitter::new(MAX_ITEM_BYTES);
    let mut line = Vec::with_capacity(1024);
    let mut n = 0;
    loop {
        line.clear();
        let done = match reader.read_until(b'\n', &mut line).await {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                summary.push(
                    format!("{shown} after message {n}"),
                    failed_io("cannot read", &e),
                );
                return;
            }
        };
        let finished = if done {
            splitter.finish()
        } else {
            splitter.push_line(&line)
        };
        if let Some(message) = finished {
            n += 1;
            let outcome = match message {
                Some(data) => import_message(intake, data).await,
                None => too_large(),
            };
            summary.push(format!("{shown} message {n}"), outcome);
        }
        if done {
            return;
        }
    }
}

/// Finds the report in one RFC 5322 message and stores it.
async fn import_message(intake: &Intake, data: Vec<u8>) -> Outcome {
    let found = if data.len() <= INLINE_PARSE_MAX {
        mailreport::find_report(&data)
    } else {
        match tokio::task::spawn_blocking(move || mailreport::find_report(&data)).await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Failed {
                    reason: format!("message search task failed: {e}"),
                };
            }
        }
    };
    match found {
        Ok(report) => store(intake, report.data, report.content_type).await,
        Err(e) => Outcome::Skipped {
            reason: e.to_string(),
        },
    }
}

async fn store(intake: &Intake, body: Vec<u8>, content_type: &str) -> Outcome {
    match intake
        .ingest(Bytes::from(body), Some(content_type), None)
        .await
    {
        Ok(Stored::New { id }) => Outcome::Imported { id },
        Ok(Stored::Duplicate { id }) => Outcome::Duplicate { id },
        Err(
            e @ (IntakeError::Storage(_)
            | IntakeError::Read { .. }
            | IntakeError::ReadTimeout { .. }
            | IntakeError::Busy { .. }),
        ) => Outcome::Failed {
            reason: e.to_string(),
        },
        Err(e) => Outcome::Skipped {
            reason: e.to_string(),
        },
    }
}

/// Splits an mbox fed line by line into messages: a line starting `From ` begins a message
/// (the line itself is dropped), `>From `, `>>From `… lose one `>` (mboxrd), and the blank line
/// before the next `From ` line is dropped. Messages larger than the cap come out as `None`.
/// Pure: no I/O.
#[derive(Debug)]
pub struct MboxSplitter {
    cap: usize,
    current: Option<Vec<u8>>,
    oversize: bool,
}

impl MboxSplitter {
    pub fn new(cap: usize) -> MboxSplitter {
        MboxSplitter {
            cap,
            current: None,
            oversize: false,
        }
    }

    /// Feeds one line (with its line end); returns a finished message when `line` starts the
    /// next one.
    pub fn push_line(&mut self, line: &[u8]) -> Option<Option<Vec<u8>>> {
        if line.starts_with(b"From ") {
            let done = self.take();
            self.current = Some(Vec::new());
            self.oversize = false;
            return done;
        }
        // Text before the first `From ` line is not part of any message.
        let current = self.current.as_mut()?;
        let gt = line.iter().take_while(|&&b| b == b'>').count();
        let line = if gt > 0 && line[gt..].starts_with(b"From ") {
            &line[1..]
        } else {
            line
        };
        if current.len() + line.len() > self.cap {
            self.oversize = true;
            current.clear();
        } else if !self.oversize {
            current.extend_from_slice(line);
        }
        None
    }

    /// Ends the input; returns the last message, if any.
    pub fn finish(&mut self) -> Option<Option<Vec<u8>>> {
        self.take()
    }

    fn take(&mut self) -> Option<Option<Vec<u8>>> {
        let mut message = self.current.take()?;
        if self.oversize {
            return Some(None);
        }
        if message.ends_with(b"\r\n\r\n") {
            message.truncate(message.len() - 2);
        } else if message.ends_with(b"\n\n") {
            message.truncate(message.len() - 1);
        }
        Some(Some(message))
    }
}

/// Splits a whole mbox held in memory (see [`MboxSplitter`]); oversize messages are dropped.
pub fn split_mbox(data: &[u8], cap: usize) -> Vec<Vec<u8>> {
    let mut splitter = MboxSplitter::new(cap);
    let mut out = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        if let Some(Some(m)) = splitter.push_line(line) {
            out.push(m);
        }
    }
    if let Some(Some(m)) = splitter.finish() {
        out.push(m);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] =
        include_bytes!("../../tests/fixtures/tlsrpt/google.com_smtp_tls_report.eml");
    const RFC_JSON: &[u8] = include_bytes!("../../tests/fixtures/tlsrpt/rfc8460.json");
    const GOOGLE_JSON: &[u8] =
        include_bytes!("../../tests/fixtures/tlsrpt/google.com.from-eml.json");

    fn gz(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn mbox_split_and_unescape() {
        let mbox = b"preamble ignored\n\
            From a@b Thu Jan  1 00:00:00 2024\nSubject: one\n\nbody\n>From here\n>>From there\n\n\
            From c@d Thu Jan  1 00:00:00 2024\r\nSubject: two\r\n\r\nx\r\n\r\n\
            From e@f Thu Jan  1 00:00:00 2024\nSubject: three\n\nno trailing newline";
        let messages = split_mbox(mbox, 1 << 20);
        assert_eq!(messages.len(), 3);
        assert_eq!(
            messages[0],
            b"Subject: one\n\nbody\nFrom here\n>From there\n".to_vec()
        );
        assert_eq!(messages[1], b"Subject: two\r\n\r\nx\r\n".to_vec());
        assert_eq!(
            messages[2],
            b"Subject: three\n\nno trailing newline".to_vec()
        );
        assert!(split_mbox(b"", 10).is_empty());
    }

    #[test]
    fn mbox_oversize_message_is_none() {
        let mut s = MboxSplitter::new(20);
        assert_eq!(s.push_line(b"From x\n"), None);
        assert_eq!(s.push_line(b"Subject: a very long line indeed\n"), None);
        assert_eq!(s.push_line(b"From y\n"), Some(None));
        assert_eq!(s.push_line(b"Subject: ok\n"), None);
        assert_eq!(s.finish(), Some(Some(b"Subject: ok\n".to_vec())));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn kinds_by_name_and_content() {
        let p = Path::new;
        assert_eq!(kind_of(p("a.json"), b""), Kind::Report(TLSRPT_JSON));
        assert_eq!(kind_of(p("a.JSON.GZ"), b""), Kind::Report(TLSRPT_GZIP));
        assert_eq!(
            kind_of(p("noext"), b"\x1f\x8b\x08"),
            Kind::Report(TLSRPT_GZIP)
        );
        assert_eq!(
            kind_of(p("noext"), b"  {\"a\":1}"),
            Kind::Report(TLSRPT_JSON)
        );
        assert_eq!(kind_of(p("box"), b"From x@y Mon"), Kind::Mbox);
        assert_eq!(kind_of(p("m.eml"), SAMPLE), Kind::Message);
        assert_eq!(
            kind_of(p("1700000000.M1P2.host:2,S"), b"Return-Path: <>"),
            Kind::Message
        );
    }

    #[tokio::test]
    async fn imports_files_mbox_and_reports_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::tlsrpt::store::ReportsHandle::open(&dir.path().join("r.sqlite3")).unwrap();
        let intake = Intake::new(store, Default::default());
        let files = dir.path().join("in");
        std::fs::create_dir(&files).unwrap();
        std::fs::write(files.join("a.eml"), SAMPLE).unwrap();
        std::fs::write(files.join("b.json"), RFC_JSON).unwrap();
        std::fs::write(files.join("b2.json.gz"), gz(GOOGLE_JSON)).unwrap();
        std::fs::write(
            files.join("c.eml"),
            b"From: x@y\r\nSubject: hi\r\n\r\nhello\r\n",
        )
        .unwrap();
        std::fs::write(files.join("d.json"), b"{\"not\": \"a report\"}").unwrap();
        let mut mbox = b"From someone Thu Jan  1 00:00:00 2024\n".to_vec();
        mbox.extend_from_slice(SAMPLE);
        mbox.extend_from_slice(
            b"\nFrom other Thu Jan  1 00:00:00 2024\nSubject: plain\n\n>From the start\n",
        );
        std::fs::write(dir.path().join("box.mbox"), &mbox).unwrap();

        let paths = vec![
            files.clone(),
            dir.path().join("box.mbox"),
            dir.path().join("missing"),
        ];
        let summary = import(&intake, &paths).await;
        let outcomes: Vec<&Outcome> = summary.items.iter().map(|i| &i.outcome).collect();
        let text = summary.render();
        assert_eq!(summary.items.len(), 8, "{text}");
        let Outcome::Imported { id } = outcomes[0] else {
            panic!("{text}")
        };
        assert!(matches!(outcomes[1], Outcome::Imported { .. }), "{text}");
        // The bare .json.gz is the sample mail's report again.
        assert_eq!(outcomes[2], &Outcome::Duplicate { id: *id }, "{text}");
        assert_eq!(
            outcomes[3],
            &Outcome::Skipped {
                reason: "no TLS-RPT report in message: found text/plain".into()
            }
        );
        assert!(
            matches!(outcomes[4], Outcome::Skipped { reason } if reason.starts_with("invalid report:")),
            "{text}"
        );
        assert_eq!(outcomes[5], &Outcome::Duplicate { id: *id });
        assert!(summary.items[5].source.ends_with("box.mbox message 1"));
        assert!(matches!(outcomes[6], Outcome::Skipped { .. }), "{text}");
        assert!(summary.items[6].source.ends_with("box.mbox message 2"));
        assert!(matches!(outcomes[7], Outcome::Failed { .. }), "{text}");
        assert!(
            text.ends_with("2 imported, 2 duplicates, 3 skipped, 1 failed\n"),
            "{text}"
        );

        // Idempotent: a second run stores nothing new.
        let again = import(&intake, &paths[..2]).await;
        assert_eq!((again.imported(), again.duplicates()), (0, 4));
    }
}
