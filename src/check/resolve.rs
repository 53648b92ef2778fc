//! DNSSEC-validating lookups for the checks: hickory's validating stub resolver, pointed at
//! the system's upstream (`/etc/resolv.conf`) or at one `--resolver`, with the root trust
//! anchor or the anchors of a `--trust-anchor` file (DNSKEY or DS lines).
//!
//! Queries only the resolver it was given; caches nothing across runs; writes nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData};
use hickory_proto::dnssec::{DigestType, Proof, PublicKeyBuf, TrustAnchors};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::{Resolver as HickoryResolver, TokioResolver};

/// What DNSSEC says about an answer (RFC 4035 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// A chain of signatures from a trust anchor.
    Secure,
    /// Provably unsigned (no DS on the way down).
    Insecure,
    /// Signed, but the signatures do not validate.
    Bogus,
    /// The resolver could not tell.
    Indeterminate,
}

impl Security {
    fn of(p: Proof) -> Security {
        match p {
            Proof::Secure => Security::Secure,
            Proof::Insecure => Security::Insecure,
            Proof::Bogus => Security::Bogus,
            _ => Security::Indeterminate,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Security::Secure => "secure",
            Security::Insecure => "insecure",
            Security::Bogus => "bogus",
            Security::Indeterminate => "indeterminate",
        }
    }
}

/// One RRset as the resolver returned it (empty: the name or type does not exist).
#[derive(Debug, Clone)]
pub struct Answer {
    pub records: Vec<RData>,
    pub security: Security,
}

/// A lookup that produced no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    #[error("{name} {rtype}: DNSSEC validation failed (bogus): {detail}")]
    Bogus {
        name: String,
        rtype: RecordType,
        detail: String,
    },
    #[error("{name} {rtype}: {detail}")]
    Failed {
        name: String,
        rtype: RecordType,
        detail: String,
    },
}

/// Why the resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{path}: {detail}")]
    TrustAnchor { path: PathBuf, detail: String },
    #[error("system resolver configuration (/etc/resolv.conf): {0}")]
    System(String),
    #[error("resolver: {0}")]
    Build(String),
}

/// Where queries go and which keys are trusted.
#[derive(Debug, Clone, Default)]
pub struct ResolverSettings {
    /// Every query to this server; `None`: the system's resolvers.
    pub server: Option<SocketAddr>,
    /// DNSKEY or DS lines replacing the root anchor.
    pub trust_anchor: Option<PathBuf>,
    /// Keys trusted as they are (mxguard's own zone keys), replacing the root anchor too.
    pub trusted_keys: Vec<(Name, PublicKeyBuf)>,
}

/// The validating resolver of one check run.
pub struct Resolver {
    inner: TokioResolver,
    /// The owner names of the trust anchors of a `--trust-anchor` file (empty: the root).
    anchor_names: Vec<Name>,
}

impl Resolver {
    pub async fn new(settings: &ResolverSettings) -> Result<Resolver, SetupError> {
        let (config, mut opts) = match settings.server {
            Some(addr) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                (
                    ResolverConfig::from_parts(None, vec![], vec![ns]),
                    ResolverOpts::default(),
                )
            }
            None => hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| SetupError::System(e.to_string()))?,
        };
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 2;
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        opts.ndots = 0;
        // A fresh view: every run asks again.
        opts.cache_size = 256;
        let (mut anchors, mut anchor_names) = match &settings.trust_anchor {
            None if !settings.trusted_keys.is_empty() => (TrustAnchors::empty(), Vec::new()),
            None => (TrustAnchors::default(), Vec::new()),
            Some(path) => {
                load_anchors(path, settings.server.map(|s| s.to_string()), &config).await?
            }
        };
        for (name, key) in &settings.trusted_keys {
            anchors.insert_with_name(key, name.clone().into());
            if !anchor_names.contains(name) {
                anchor_names.push(name.clone());
            }
        }
        let inner = HickoryResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .with_trust_anchor(Arc::new(anchors))
            .build()
            .map_err(|e| SetupError::Build(e.to_string()))?;
        Ok(Resolver {
            inner,
            anchor_names,
        })
    }

    /// True when `zone`'s own key is a configured trust anchor: its DS at the parent is then
    /// not part of the validation and cannot be checked through it.
    pub fn anchored_at(&self, zone: &Name) -> bool {
        self.anchor_names.iter().any(|n| n == zone)
    }

    /// The RRset of `rtype` at `name` (following CNAMEs as the resolver does).
    pub async fn lookup(&self, name: &Name, rtype: RecordType) -> Result<Answer, LookupError> {
        match self.inner.lookup(name.clone(), rtype).await {
            Ok(l) => {
                let mut security = None::<Security>;
                let mut records = Vec::new();
                for r in l.answers() {
                    // An alias on the way counts too: an insecure CNAME makes the answer
                    // insecure (RFC 7672 §2.2.2).
                    let alias = matches!(r.record_type(), RecordType::CNAME | RecordType::DNAME);
                    if r.record_type() != rtype && !alias {
                        continue;
                    }
                    let s = Security::of(r.proof);
                    security = Some(match security {
                        None => s,
                        Some(prev) => weakest(prev, s),
                    });
                    if !alias || rtype == r.record_type() {
                        records.push(r.data.clone());
                    }
                }
                Ok(Answer {
                    records,
                    security: security.unwrap_or(Security::Indeterminate),
                })
            }
            Err(e) => classify(name, rtype, e),
        }
    }
}

/// The weaker of two proofs (bogus < indeterminate < insecure < secure).
fn weakest(a: Security, b: Security) -> Security {
    let rank = |s| match s {
        Security::Bogus => 0,
        Security::Indeterminate => 1,
        Security::Insecure => 2,
        Security::Secure => 3,
    };
    if rank(a) <= rank(b) { a } else { b }
}

fn classify(name: &Name, rtype: RecordType, e: NetError) -> Result<Answer, LookupError> {
    let failed = |detail: String| LookupError::Failed {
        name: name.to_ascii(),
        rtype,
        detail,
    };
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => {
            // A denial: as secure as the NSEC/NSEC3 records that prove it.
            let security = nr
                .authorities
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .filter(|r| {
                    matches!(
                        r.data,
                        RData::DNSSEC(DNSSECRData::NSEC(_)) | RData::DNSSEC(DNSSECRData::NSEC3(_))
                    )
                })
                .map(|r| Security::of(r.proof))
                .reduce(weakest)
                .unwrap_or(Security::Insecure);
            Ok(Answer {
                records: Vec::new(),
                security,
            })
        }
        NetError::Dns(DnsError::Nsec { proof, .. }) => match Security::of(proof) {
            Security::Bogus => Err(LookupError::Bogus {
                name: name.to_ascii(),
                rtype,
                detail: "the denial of existence does not validate".into(),
            }),
            s => Ok(Answer {
                records: Vec::new(),
                security: s,
            }),
        },
        NetError::Dns(DnsError::DnssecBogus) => Err(LookupError::Bogus {
            name: name.to_ascii(),
            rtype,
            detail: "signatures do not validate".into(),
        }),
        NetError::Dns(DnsError::ResponseCode(code)) => Err(failed(format!("answered {code}"))),
        other => {
            let text = other.to_string();
            let lower = text.to_ascii_lowercase();
            let dnssec =
                lower.contains("dnssec") || lower.contains("rrsig") || lower.contains("proof");
            if dnssec && !lower.contains("timed out") && !lower.contains("timeout") {
                Err(LookupError::Bogus {
                    name: name.to_ascii(),
                    rtype,
                    detail: crate::logfield::untrusted(&text).to_string(),
                })
            } else {
                Err(failed(crate::logfield::untrusted(&text).to_string()))
            }
        }
    }
}

/// Reads a trust-anchor file: DNSKEY lines are anchors as they are; a DS line is turned into
/// the DNSKEY it names, fetched (unvalidated) from the resolver and checked against the digest.
async fn load_anchors(
    path: &Path,
    server: Option<String>,
    config: &ResolverConfig,
) -> Result<(TrustAnchors, Vec<Name>), SetupError> {
    let err = |detail: String| SetupError::TrustAnchor {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let records = crate::zone::anchors::parse_anchor_lines(&text).map_err(err)?;
    if records.is_empty() {
        return Err(err("no DS or DNSKEY records in the file".into()));
    }
    let mut anchors = TrustAnchors::empty();
    let mut names = Vec::new();
    // DS lines need the DNSKEY RRset of their owner, asked without validation.
    let plain =
        HickoryResolver::builder_with_config(config.clone(), TokioRuntimeProvider::default())
            .with_options({
                let mut o = ResolverOpts::default();
                o.timeout = Duration::from_secs(3);
                o.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
                o.ndots = 0;
                o
            })
            .build()
            .map_err(|e| err(e.to_string()))?;
    for r in records {
        let owner = match r {
            crate::zone::anchors::Anchor::Key(owner, key) => {
                anchors.insert_with_name(&key, owner.clone().into());
                owner
            }
            crate::zone::anchors::Anchor::Ds(owner, ds) => {
                let keys = plain
                    .lookup(owner.clone(), RecordType::DNSKEY)
                    .await
                    .map_err(|e| {
                        err(format!(
                            "DS for {owner}: cannot fetch its DNSKEY RRset{}: {e}",
                            server
                                .as_deref()
                                .map(|s| format!(" from {s}"))
                                .unwrap_or_default()
                        ))
                    })?;
                let mut found = false;
                for kr in keys.answers() {
                    let RData::DNSSEC(DNSSECRData::DNSKEY(k)) = &kr.data else {
                        continue;
                    };
                    if ds_matches(&ds, k, &owner) {
                        anchors.insert_with_name(k.public_key(), owner.clone().into());
                        found = true;
                    }
                }
                if !found {
                    return Err(err(format!(
                        "DS {} for {owner} matches no DNSKEY the zone serves",
                        ds.key_tag()
                    )));
                }
                owner
            }
        };
        if !names.contains(&owner) {
            names.push(owner);
        }
    }
    Ok((anchors, names))
}

pub(crate) fn ds_matches(
    ds: &hickory_proto::dnssec::rdata::DS,
    key: &DNSKEY,
    owner: &Name,
) -> bool {
    let digest_type = ds.digest_type();
    if !matches!(
        digest_type,
        DigestType::SHA256 | DigestType::SHA384 | DigestType::SHA1
    ) {
        return false;
    }
    key.to_digest(owner, digest_type)
        .map(|d| d.as_ref() == ds.digest())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weakest_proof_wins() {
        assert_eq!(weakest(Security::Secure, Security::Bogus), Security::Bogus);
        assert_eq!(
            weakest(Security::Insecure, Security::Secure),
            Security::Insecure
        );
    }
}
