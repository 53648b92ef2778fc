//! What `mxguard tlsa` and the status page show of one MX's keys: the `3 1 1` records with
//! their role, the roll state in words, why it is held, the last error. Read from the state
//! directory, never written.

use std::path::{Path, PathBuf};

use super::machine::{Phase, Timing};

/// How an MX's certificate is kept (from its `[[mx]]` entry).
pub(crate) struct MxKeys<'a> {
    pub host: &'a str,
    pub rollover: bool,
    pub external: Option<&'a PathBuf>,
    pub prepublish: &'a [String],
    /// With rollover off: the `3 1 1` digest of the certificate's key (the certificate
    /// manager's, read by the caller).
    pub single_key: Option<Vec<u8>>,
}

/// One MX's keys as the operator reads them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct RollView {
    /// (`3 1 1` data, role: current, next, live, pre-published, retiring, rollover off).
    pub records: Vec<(String, &'static str)>,
    pub state: String,
    pub held: Option<String>,
    pub last_error: Option<String>,
}

pub(crate) fn view(root: &Path, mx: &MxKeys<'_>, timing: &Timing, now: u64) -> RollView {
    let mut v = RollView {
        records: Vec::new(),
        state: String::new(),
        held: None,
        last_error: None,
    };
    if let Some(file) = mx.external {
        let st = super::executor::load_external(root, mx.host);
        for k in super::executor::external_records(&st, mx.prepublish, now) {
            let what = if st.live.as_ref() == Some(&k) {
                "live"
            } else if mx.prepublish.contains(&k) {
                "pre-published"
            } else {
                "retiring"
            };
            v.records.push((k, what));
        }
        v.state = format!("external certificate: {}", file.display());
        return v;
    }
    if !mx.rollover {
        if let Some(d) = &mx.single_key {
            v.records
                .push((data_encoding::HEXLOWER.encode(d), "rollover off"));
        }
        v.state = "rollover off: one key".into();
        return v;
    }
    let Some(s) = super::files::load(root, mx.host) else {
        v.state = "rollover not started yet (the daemon starts it)".into();
        return v;
    };
    v.records.push((s.current.clone(), "current"));
    if !s.next.is_empty() && s.next != s.current {
        v.records.push((s.next.clone(), "next"));
    }
    v.state = match &s.phase {
        Phase::Propagating {
            serial,
            seen_everywhere_at,
        } => match seen_everywhere_at {
            None => format!("propagating: waiting until every server serves serial {serial}"),
            Some(at) => format!(
                "propagating: serial {serial} everywhere; stable in {} s",
                (at + timing.hold).saturating_sub(now)
            ),
        },
        Phase::Stable => {
            if s.requested {
                "stable; roll requested".to_string()
            } else {
                format!(
                    "stable; next roll in {} s (key age)",
                    (s.current_since + timing.key_age).saturating_sub(now)
                )
            }
        }
        other => format!("rolling: {other:?}").to_lowercase(),
    };
    v.held = s.held.clone();
    v.last_error = s
        .last_error
        .as_ref()
        .map(|e| format!("{e} (failures: {})", s.failures));
    v
}
