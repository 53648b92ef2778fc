//! Errors of the zone module; every variant names the offending input.

use std::fmt;
use std::path::PathBuf;

use crate::state_dir::StoreError;

/// Where a piece of zone data came from: a file and, when known, a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub line: Option<usize>,
}

impl Location {
    pub fn new(path: impl Into<PathBuf>, line: Option<usize>) -> Self {
        Location {
            path: path.into(),
            line,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}", self.path.display(), line),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// An error building, signing or persisting a zone.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("{path}: cannot read zone file: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{at}: cannot parse zone file: {message}")]
    Parse { at: Location, message: String },
    #[error("{at}: {name} is outside the zone {origin}; remove it or fix $ORIGIN")]
    OutOfZone {
        at: Location,
        name: String,
        origin: String,
    },
    #[error("{path}: the zone {origin} has no {rtype} record at its apex; add one")]
    MissingApex {
        path: PathBuf,
        origin: String,
        rtype: String,
    },
    #[error("{at}: {name} has {rtype}, which is only allowed at the zone apex {origin}")]
    NotAtApex {
        at: Location,
        name: String,
        rtype: String,
        origin: String,
    },
    #[error("{at}: CNAME at the zone apex {name} is not allowed (the apex has SOA and NS)")]
    CnameAtApex { at: Location, name: String },
    #[error("{at}: {name} has a CNAME beside other data ({other}); a CNAME must stand alone")]
    CnameAndOtherData {
        at: Location,
        name: String,
        other: String,
    },
    #[error("{at}: {name} {rtype}: {reason}")]
    Unsupported {
        at: Location,
        name: String,
        rtype: String,
        reason: String,
    },
    #[error(
        "{at}: {name} {rtype} is also managed by mxguard ({source_label}); remove it from the zone file"
    )]
    ManagedCollision {
        at: Location,
        name: String,
        rtype: String,
        source_label: String,
    },
    #[error("{source_label}: managed record {name} {rtype} is invalid: {reason}")]
    ManagedInvalid {
        source_label: String,
        name: String,
        rtype: String,
        reason: String,
    },
    #[error("{path}: invalid DNSSEC key: {reason}")]
    Key { path: PathBuf, reason: String },
    /// A loaded key (checked when it was read) failed in use; named by its tag.
    #[error("DNSSEC key {key_tag} ({algorithm}): {reason}")]
    KeyInUse {
        key_tag: u16,
        algorithm: &'static str,
        reason: String,
    },
    #[error("{path}: invalid signing state: {reason}; delete it to start a new serial sequence")]
    State { path: PathBuf, reason: String },
    #[error("zone {origin}: cannot sign {name} {rtype}: {reason}")]
    Sign {
        origin: String,
        name: String,
        rtype: String,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}
