//! Secondary name servers as the user configures them, validated without I/O, then resolved
//! (TSIG secret read from its file).
//!
//! Owns only these settings types; the config module embeds them.

use std::net::SocketAddr;
use std::path::PathBuf;

use hickory_proto::rr::Name;
use hickory_proto::rr::TSigner;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use serde::{Deserialize, Serialize};

use super::DnsError;
use crate::zone::SettingsProblem;
use crate::zone::settings::problem;

/// TSIG fudge (allowed clock difference), RFC 8945 recommends 300 s.
pub const TSIG_FUDGE: u16 = 300;

/// A secondary server: where NOTIFY goes and who may transfer the zone.
///
/// Without a TSIG key, transfers are allowed from `address`'s IP. With a TSIG key
/// (HMAC-SHA256), transfers signed with that key are allowed from any address, and NOTIFY is
/// signed with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondarySettings {
    /// A label for logs and `status`.
    pub name: String,
    /// NOTIFY target, and the allowed transfer source when no TSIG key is set.
    pub address: SocketAddr,
    /// TSIG key name, e.g. `xfr-key.` (needs `tsig_secret_file`).
    #[serde(default)]
    pub tsig_key_name: Option<String>,
    /// File holding the base64 HMAC-SHA256 secret (as `tsig-keygen` prints it).
    #[serde(default)]
    pub tsig_secret_file: Option<PathBuf>,
}

/// A secondary with its TSIG key loaded.
#[derive(Clone)]
pub struct Secondary {
    pub name: String,
    pub address: SocketAddr,
    pub tsig: Option<TSigner>,
}

impl std::fmt::Debug for Secondary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secondary")
            .field("name", &self.name)
            .field("address", &self.address)
            .field(
                "tsig_key",
                &self.tsig.as_ref().map(|t| t.signer_name().to_string()),
            )
            .finish()
    }
}

impl Secondary {
    /// A secondary without TSIG (source address only).
    pub fn new(name: impl Into<String>, address: SocketAddr) -> Self {
        Secondary {
            name: name.into(),
            address,
            tsig: None,
        }
    }

    /// Adds an HMAC-SHA256 TSIG key.
    pub fn with_tsig(mut self, key_name: &Name, secret: Vec<u8>) -> Result<Self, DnsError> {
        let signer = TSigner::new(
            secret,
            TsigAlgorithm::HmacSha256,
            key_name.clone(),
            TSIG_FUDGE,
        )
        .map_err(|e| DnsError::Settings {
            key: format!("secondary {}", self.name),
            reason: e.to_string(),
        })?;
        self.tsig = Some(signer);
        Ok(self)
    }
}

impl SecondarySettings {
    /// Reports every problem at once; `prefix` is e.g. `secondary[0]`.
    pub fn validate(&self, prefix: &str) -> Vec<SettingsProblem> {
        let mut p = Vec::new();
        if self.name.trim().is_empty() {
            p.push(problem(prefix, "name", "must not be empty"));
        }
        if self.address.port() == 0 {
            p.push(problem(prefix, "address", "needs a port (usually 53)"));
        }
        if self.address.ip().is_unspecified() {
            p.push(problem(
                prefix,
                "address",
                "must be the secondary's own address, not 0.0.0.0 or ::",
            ));
        }
        match (&self.tsig_key_name, &self.tsig_secret_file) {
            (Some(k), _) if Name::from_ascii(k).is_err() || k.trim().is_empty() => {
                p.push(problem(
                    prefix,
                    "tsig_key_name",
                    format!("{k:?} is not a valid DNS name"),
                ));
            }
            (Some(_), None) => p.push(problem(
                prefix,
                "tsig_secret_file",
                "is required when tsig_key_name is set",
            )),
            (None, Some(_)) => p.push(problem(
                prefix,
                "tsig_key_name",
                "is required when tsig_secret_file is set",
            )),
            _ => {}
        }
        p
    }

    /// Reads the TSIG secret (if any) and returns the usable secondary.
    pub fn resolve(&self) -> Result<Secondary, DnsError> {
        let secondary = Secondary::new(self.name.clone(), self.address);
        let (Some(key), Some(file)) = (&self.tsig_key_name, &self.tsig_secret_file) else {
            return Ok(secondary);
        };
        let text = std::fs::read_to_string(file).map_err(|e| DnsError::Secret {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        let secret = base64_decode(&text).ok_or_else(|| DnsError::Secret {
            path: file.clone(),
            reason: "not base64 (expected the secret as tsig-keygen prints it)".into(),
        })?;
        if secret.len() < 16 {
            return Err(DnsError::Secret {
                path: file.clone(),
                reason: "secret shorter than 16 bytes".into(),
            });
        }
        let mut name = Name::from_ascii(key).map_err(|e| DnsError::Settings {
            key: "tsig_key_name".into(),
            reason: e.to_string(),
        })?;
        name.set_fqdn(true);
        secondary.with_tsig(&name, secret)
    }
}

/// Standard base64 with ASCII whitespace ignored (as `tsig-keygen` and BIND key files write it).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    data_encoding::BASE64.decode(&compact).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> SecondarySettings {
        SecondarySettings {
            name: "ns2".into(),
            address: "192.0.2.53:53".parse().unwrap(),
            tsig_key_name: None,
            tsig_secret_file: None,
        }
    }

    #[test]
    fn valid_settings_have_no_problems() {
        assert!(s().validate("secondary[0]").is_empty());
    }

    #[test]
    fn problems_name_dotted_keys() {
        let mut bad = s();
        bad.address = "0.0.0.0:0".parse().unwrap();
        bad.tsig_key_name = Some("xfr.".into());
        let p = bad.validate("secondary[1]");
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "secondary[1].address",
                "secondary[1].address",
                "secondary[1].tsig_secret_file"
            ]
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = toml::from_str::<SecondarySettings>(
            "name = \"a\"\naddress = \"192.0.2.1:53\"\nkey = 1\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn resolve_reads_base64_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("xfr.key");
        std::fs::write(&f, "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0\n").unwrap();
        let mut st = s();
        st.tsig_key_name = Some("xfr-key".into());
        st.tsig_secret_file = Some(f.clone());
        let r = st.resolve().unwrap();
        assert_eq!(r.tsig.unwrap().signer_name().to_string(), "xfr-key.");
        std::fs::write(&f, "!!!").unwrap();
        let e = st.resolve().unwrap_err();
        assert!(
            e.to_string()
                .contains("xfr.key: cannot read TSIG secret: not base64"),
            "{e}"
        );
    }
}
