//! DNSSEC settings as the user writes them in the TOML config, validated without I/O.
//!
//! Owns only the shape, defaults and validation of these settings; the config module embeds
//! them. Durations are written as text: `"14d"`, `"36h"`, `"90m"`, `"30s"` (or a bare number of
//! seconds).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The signing algorithm of the zone's combined signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DnssecAlgorithm {
    /// ECDSA P-256 with SHA-256 (algorithm 13), the default.
    #[default]
    #[serde(rename = "ecdsap256sha256")]
    EcdsaP256Sha256,
    /// Ed25519 (algorithm 15).
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl DnssecAlgorithm {
    /// The DNSSEC algorithm as hickory names it.
    pub fn to_hickory(self) -> hickory_proto::dnssec::Algorithm {
        match self {
            DnssecAlgorithm::EcdsaP256Sha256 => hickory_proto::dnssec::Algorithm::ECDSAP256SHA256,
            DnssecAlgorithm::Ed25519 => hickory_proto::dnssec::Algorithm::ED25519,
        }
    }

    /// A short lowercase name, used in key file names.
    pub fn as_str(self) -> &'static str {
        match self {
            DnssecAlgorithm::EcdsaP256Sha256 => "ecdsap256sha256",
            DnssecAlgorithm::Ed25519 => "ed25519",
        }
    }
}

/// How the zone is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnssecSettings {
    /// Algorithm of the combined signing key (CSK).
    #[serde(default)]
    pub algorithm: DnssecAlgorithm,
    /// Authenticated denial with NSEC3 (RFC 9276: SHA-1, 0 extra iterations, empty salt, no
    /// opt-out) instead of NSEC.
    #[serde(default)]
    pub nsec3: bool,
    /// How long new signatures are valid.
    #[serde(default = "default_signature_validity", with = "crate::duration")]
    pub signature_validity: Duration,
    /// Re-sign when this much validity or less remains.
    #[serde(default = "default_refresh", with = "crate::duration")]
    pub refresh: Duration,
    /// How far signature inception is backdated, for validators with slow clocks.
    #[serde(default = "default_inception_offset", with = "crate::duration")]
    pub inception_offset: Duration,
    /// TTL of DNSKEY, CDS and CDNSKEY.
    #[serde(default = "default_dnskey_ttl")]
    pub dnskey_ttl: u32,
    /// Roll each zone's key when it is this old (`0`: only on `mxguard dnssec-roll` or an
    /// algorithm change).
    #[serde(default, with = "crate::duration")]
    pub key_lifetime: Duration,
    /// Added to every wait of a key roll, after every server serves the change.
    #[serde(default = "default_propagation_delay", with = "crate::duration")]
    pub propagation_delay: Duration,
    /// The parent zone's authoritative servers, asked directly for the DS during a roll.
    #[serde(default)]
    pub parent_nameservers: Vec<std::net::SocketAddr>,
    /// A resolver that finds the parent zone's servers (asked on port 53) when
    /// `parent_nameservers` is empty.
    #[serde(default)]
    pub parent_resolver: Option<std::net::SocketAddr>,
}

pub fn default_signature_validity() -> Duration {
    Duration::from_secs(14 * 86400)
}

pub fn default_refresh() -> Duration {
    Duration::from_secs(7 * 86400)
}

pub fn default_inception_offset() -> Duration {
    Duration::from_secs(3600)
}

pub fn default_dnskey_ttl() -> u32 {
    3600
}

pub fn default_propagation_delay() -> Duration {
    Duration::from_secs(3600)
}

impl Default for DnssecSettings {
    fn default() -> Self {
        DnssecSettings {
            algorithm: DnssecAlgorithm::default(),
            nsec3: false,
            signature_validity: default_signature_validity(),
            refresh: default_refresh(),
            inception_offset: default_inception_offset(),
            dnskey_ttl: default_dnskey_ttl(),
            key_lifetime: Duration::ZERO,
            propagation_delay: default_propagation_delay(),
            parent_nameservers: Vec::new(),
            parent_resolver: None,
        }
    }
}

/// One problem found by a `validate()`, prefixed by its dotted config key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsProblem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for SettingsProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

pub(crate) fn problem(prefix: &str, key: &str, message: impl Into<String>) -> SettingsProblem {
    let key = if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    };
    SettingsProblem {
        key,
        message: message.into(),
    }
}

impl DnssecSettings {
    /// Reports every problem at once; `prefix` is this table's dotted key (e.g. `dnssec`).
    pub fn validate(&self, prefix: &str) -> Vec<SettingsProblem> {
        let mut problems = Vec::new();
        let day = Duration::from_secs(86400);
        if self.signature_validity < 2 * day {
            problems.push(problem(
                prefix,
                "signature_validity",
                "must be at least 2d so that secondaries and caches can keep up",
            ));
        }
        if self.signature_validity > 180 * day {
            problems.push(problem(
                prefix,
                "signature_validity",
                "must be at most 180d",
            ));
        }
        if self.refresh < Duration::from_secs(3600) {
            problems.push(problem(prefix, "refresh", "must be at least 1h"));
        }
        if self.refresh >= self.signature_validity {
            problems.push(problem(
                prefix,
                "refresh",
                "must be shorter than signature_validity, or every build would re-sign",
            ));
        }
        if self.inception_offset > day {
            problems.push(problem(prefix, "inception_offset", "must be at most 1d"));
        }
        if self.dnskey_ttl == 0 || self.dnskey_ttl > 86400 {
            problems.push(problem(
                prefix,
                "dnskey_ttl",
                "must be between 1 and 86400 seconds",
            ));
        }
        if !self.key_lifetime.is_zero() && self.key_lifetime < 7 * day {
            problems.push(problem(
                prefix,
                "key_lifetime",
                "must be 0 (no scheduled roll) or at least 7d: a roll takes several TTLs",
            ));
        }
        if !self.key_lifetime.is_zero()
            && self.parent_nameservers.is_empty()
            && self.parent_resolver.is_none()
        {
            problems.push(problem(
                prefix,
                "key_lifetime",
                "scheduled rolls wait for the parent's DS: set dnssec.parent_nameservers or dnssec.parent_resolver",
            ));
        }
        if self.propagation_delay > day {
            problems.push(problem(prefix, "propagation_delay", "must be at most 1d"));
        }
        problems
    }

    /// The same signing (denial, window, TTL): what the signed zones depend on besides their
    /// keys. The algorithm and the roll settings are not part of it: keys change only
    /// through a key roll.
    pub fn same_signing(&self, other: &DnssecSettings) -> bool {
        self.nsec3 == other.nsec3
            && self.signature_validity == other.signature_validity
            && self.refresh == other.refresh
            && self.inception_offset == other.inception_offset
            && self.dnskey_ttl == other.dnskey_ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_documentation() {
        let s = DnssecSettings::default();
        assert!(s.validate("dnssec").is_empty());
        assert_eq!(s.signature_validity, Duration::from_secs(14 * 86400));
        assert_eq!(s.refresh, Duration::from_secs(7 * 86400));
        assert_eq!(s.inception_offset, Duration::from_secs(3600));
    }

    #[test]
    fn durations_parse_and_round_trip() {
        assert_eq!(
            crate::duration::parse("14d").unwrap(),
            Duration::from_secs(14 * 86400)
        );
        assert_eq!(
            crate::duration::parse("90").unwrap(),
            Duration::from_secs(90)
        );
        assert!(crate::duration::parse("3 fortnights").is_err());
        assert_eq!(
            crate::duration::format(&Duration::from_secs(36 * 3600)),
            "36h"
        );
    }

    #[test]
    fn validate_names_dotted_keys() {
        let s = DnssecSettings {
            refresh: Duration::from_secs(20 * 86400),
            ..DnssecSettings::default()
        };
        let p = s.validate("dnssec");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "dnssec.refresh");
        assert!(
            p[0].to_string()
                .starts_with("dnssec.refresh: must be shorter")
        );
    }
}
