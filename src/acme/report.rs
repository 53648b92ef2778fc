//! What `mxguard certs` and `mxguard status` show of every certificate: read from the state
//! directory, never written.

use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

use super::manager::*;
use crate::acme::{self, renewal};

/// A summary of one certificate, for `mxguard certs` and `status`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CertReport {
    pub name: String,
    pub sans: Vec<String>,
    pub challenge: &'static str,
    pub key: String,
    pub issuer: Option<String>,
    pub not_after: Option<String>,
    pub next_renewal: Option<String>,
    /// Consecutive failed attempts since the last success (`next_renewal` is then the retry).
    pub attempts: u32,
    pub last_error: Option<String>,
    pub deploy_error: Option<String>,
    pub near_expiry: bool,
}

pub(super) fn rfc3339(t: u64) -> String {
    time::OffsetDateTime::from(from_unix(t))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Reads the stored state of every certificate in `specs` (no lock needed).
pub(crate) fn report(state_root: &Path, specs: &[CertSpec], now: SystemTime) -> Vec<CertReport> {
    specs
        .iter()
        .map(|spec| {
            if let Role::ExternalMx(ext) = &spec.role {
                let file = &ext.file;
                let leaf = std::fs::read_to_string(file)
                    .ok()
                    .and_then(|pem| parse_chain(&pem).into_iter().next());
                let key = leaf
                    .as_ref()
                    .and_then(|c| spki_of_cert(c))
                    .map(|spki| format!("SPKI sha256 {}", sha256_hex(&spki)))
                    .unwrap_or_else(|| format!("unreadable ({})", file.display()));
                let validity = leaf.as_ref().and_then(|c| validity(c));
                return CertReport {
                    name: spec.name.clone(),
                    sans: spec.sans().to_vec(),
                    challenge: "external",
                    key,
                    issuer: Some(format!("external: {}", file.display())),
                    not_after: validity.map(|(_, na)| rfc3339(unix(na))),
                    next_renewal: None,
                    last_error: None,
                    attempts: 0,
                    deploy_error: None,
                    near_expiry: validity.is_some_and(|(nb, na)| renewal::near_expiry(nb, na, now)),
                };
            }
            let st: CertState =
                std::fs::read(acme::cert_path(state_root, &spec.name, "state.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
            let key = std::fs::read_to_string(acme::cert_path(state_root, &spec.name, "key.pem"))
                .ok()
                .and_then(|pem| rcgen::KeyPair::from_pem(&pem).ok())
                .map(|k| {
                    format!(
                        "ECDSA P-256, SPKI sha256 {}",
                        sha256_hex(&rcgen::PublicKeyData::subject_public_key_info(&k))
                    )
                })
                .unwrap_or_else(|| "none yet".into());
            let near = match (st.not_before, st.not_after) {
                (Some(a), Some(b)) => renewal::near_expiry(from_unix(a), from_unix(b), now),
                _ => false,
            };
            CertReport {
                name: spec.name.clone(),
                sans: spec.sans().to_vec(),
                challenge: spec.challenge.as_str(),
                key,
                issuer: st.issuer.clone(),
                not_after: st.not_after.map(rfc3339),
                next_renewal: st.next_attempt.map(rfc3339),
                attempts: st.attempts,
                last_error: st.last_error.clone(),
                deploy_error: st.deploy_error.clone(),
                near_expiry: near,
            }
        })
        .collect()
}
