//! The configuration file: what the user typed (`Raw*`, strict serde with
//! `deny_unknown_fields`), validated without I/O into a `Config`, then resolved (policy files
//! read and checked) into per-domain policies.
//!
//! Every problem names the config file, the dotted key (`domain[1].mx[0]`) and, for syntax
//! errors, the line and column; the validator reports all problems at once. Owns the config
//! model; must not open sockets or touch the state directory.
//!
//! - `raw`: what the user typed. `validate`: one function per section.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::acme::ChallengeKind;
use crate::acme::manager::{CertSpec, Deploy, Role};
use crate::dns::SecondarySettings;
use crate::mtasts::policy::{self, PolicySource, Published};
use crate::zone::DnssecSettings;

/// One problem in the configuration (or a file it names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in.
    pub file: PathBuf,
    /// Line and column (1-based) where known.
    pub position: Option<(usize, usize)>,
    /// The dotted key, e.g. `domain[1].mx[0]`; empty for file-level problems.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An empty file: the message names its own location (e.g. zone errors).
        if self.file.as_os_str().is_empty() {
            return f.write_str(&self.message);
        }
        write!(f, "{}", self.file.display())?;
        if let Some((l, c)) = self.position {
            write!(f, ":{l}:{c}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All problems found in a configuration; displayed one per line.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

mod push;
mod raw;
mod validate;

pub(crate) use raw::*;
use validate::validate;
pub(crate) use validate::validate_rua;

// ---------------------------------------------------------------------------------------------
// Validated.

/// The ACME directory to obtain certificates from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AcmeDirectory {
    /// mxguard's own CA in the state directory: not publicly trusted, for demos and tests.
    Local,
    Url(String),
}

pub(crate) const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub(crate) const LETSENCRYPT_STAGING: &str =
    "https://acme-staging-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone)]
pub(crate) struct Acme {
    pub directory: AcmeDirectory,
    pub ca_file: Option<PathBuf>,
    pub email: Option<String>,
    /// External account binding: key id and HMAC key file.
    pub eab: Option<(String, PathBuf)>,
    pub backoff: crate::acme::renewal::Backoff,
    /// CAA issuer domain, when CAA records are to be published.
    pub caa_issuer: Option<String>,
    pub profile: Option<String>,
    pub dns01_timeout: std::time::Duration,
}

/// An MX host whose certificate mxguard keeps and deploys.
#[derive(Debug, Clone)]
pub(crate) struct MxCert {
    /// STARTTLS address to check the presented key; `None`: `<host>:25`.
    pub verify: Option<SocketAddr>,
    pub rollover: bool,
    /// External-certificate mode: the certificate file another tool keeps.
    pub external: Option<PathBuf>,
    /// External mode: digests to pre-publish.
    pub prepublish: Vec<String>,
    /// DANE-TA issuer certificates (`2 1 1`).
    pub dane_ta: Vec<PathBuf>,
    pub host: String,
    pub challenge: ChallengeKind,
    /// Shared with the MX's certificate spec.
    pub deploy: std::sync::Arc<Deploy>,
}

#[derive(Debug, Clone)]
pub(crate) struct Domain {
    /// Lowercase, no trailing dot.
    pub name: String,
    /// Lowercase, no trailing dot.
    pub mx: Vec<String>,
    pub policy_file: PathBuf,
    /// Shared with the zone publisher, which names the file in messages.
    pub zone_file: std::sync::Arc<std::path::Path>,
    pub tls_rpt: Vec<String>,
    pub challenge: ChallengeKind,
    pub tlsa_https: bool,
    /// Push mode: the records go into the domain's own DNS; mxguard serves no zone for it.
    /// Boxed: most domains have none, and inline it took about 270 bytes of each of them.
    pub push: Option<Box<crate::publish::push::PushSettings>>,
}

impl Domain {
    /// The HTTPS host senders fetch the policy from.
    pub(crate) fn mta_sts_host(&self) -> String {
        format!("mta-sts.{}", self.name)
    }

    /// The `_smtp._tls` TXT data, if report URIs are configured.
    pub(crate) fn tls_rpt_record(&self) -> Option<String> {
        (!self.tls_rpt.is_empty()).then(|| format!("v=TLSRPTv1; rua={}", self.tls_rpt.join(",")))
    }
}

/// The `[[mx]]` tables by host, so that a domain's are found without a scan of all of them
/// (a scan per domain is O(N²) with N domains).
pub(crate) struct MxIndex<'a> {
    mx: &'a [MxCert],
    at: std::collections::HashMap<&'a str, usize>,
}

impl<'a> MxIndex<'a> {
    /// The `[[mx]]` tables of `d`'s MX hosts, each once, in the order of the config.
    pub(crate) fn of(&self, d: &Domain) -> Vec<&'a MxCert> {
        let mut at: Vec<usize> =
            d.mx.iter()
                .filter_map(|h| self.at.get(h.as_str()).copied())
                .collect();
        at.sort_unstable();
        at.dedup();
        at.into_iter().map(|i| &self.mx[i]).collect()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Listen {
    pub https: SocketAddr,
    pub http: Option<SocketAddr>,
    pub dns: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

/// A validated configuration; paths are absolute or relative to the working directory.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub file: PathBuf,
    pub state_dir: PathBuf,
    pub listen: Listen,
    pub acme: Acme,
    pub domains: Vec<Domain>,
    pub mx: Vec<MxCert>,
    pub dnssec: DnssecSettings,
    pub secondaries: Vec<SecondarySettings>,
    pub dns: DnsOptions,
    pub records: Records,
    pub tlsrpt: TlsRpt,
    pub rollover: Rollover,
    pub check: CheckSettings,
    /// The catalog zone's name (lowercase, no trailing dot), if any.
    pub catalog: Option<String>,
    pub limits: Limits,
}

impl Config {
    /// The one reload contract: the keys that take effect only on restart (listeners, the
    /// state directory, the ACME account, secondaries, DNS server and TLS-RPT settings, TLSA
    /// port and TTL, rollover timing). Where `new` differs from the running `self` in one of
    /// them, `new` keeps the running value and the key is returned, so the daemon can warn for
    /// each and apply the rest.
    pub(crate) fn keep_restart_only(&self, new: &mut Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        macro_rules! keep {
            ($($key:literal => $($field:ident).+),* $(,)?) => {$(
                if new.$($field).+ != self.$($field).+ {
                    changed.push($key);
                    new.$($field).+ = self.$($field).+.clone();
                }
            )*};
        }
        keep!(
            "state_dir" => state_dir,
            "listen.https" => listen.https,
            "listen.http" => listen.http,
            "listen.dns" => listen.dns,
            "listen.admin" => listen.admin,
            "acme.directory" => acme.directory,
            "acme.ca_file" => acme.ca_file,
            "acme.email" => acme.email,
            "acme.eab_kid" => acme.eab,
            "acme.profile" => acme.profile,
            "acme.dns01_timeout" => acme.dns01_timeout,
            "acme.retry_initial" => acme.backoff,
            "secondary" => secondaries,
            "dns" => dns,
            "records.tlsa_ttl" => records.tlsa_ttl,
            "records.tlsa_port" => records.tlsa_port,
            "rollover" => rollover,
            "tlsrpt" => tlsrpt,
            "limits" => limits,
        );
        changed
    }

    /// Reads and validates a config file (no policy files yet: see [`Config::load_policies`]).
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem {
                file: path.to_path_buf(),
                position: None,
                key: String::new(),
                message: format!("cannot read config file: {e}"),
            }],
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates config text; `path` locates relative paths and names errors.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw = parse_raw(path, text)?;
        validate(path, raw)
    }

    /// Problem about this config file at a dotted key.
    pub(crate) fn problem(&self, key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            file: self.file.clone(),
            position: None,
            key: key.into(),
            message: message.into(),
        }
    }

    /// The `[[mx]]` tables, to be found by host.
    pub(crate) fn mx_index(&self) -> MxIndex<'_> {
        MxIndex {
            mx: &self.mx,
            at: self
                .mx
                .iter()
                .enumerate()
                .map(|(i, m)| (m.host.as_str(), i))
                .collect(),
        }
    }

    /// The certificates mxguard keeps: `mta-sts.<domain>` for each domain, then each `[[mx]]`.
    pub(crate) fn cert_specs(&self) -> Vec<CertSpec> {
        let mut v = Vec::with_capacity(self.domains.len() + self.mx.len());
        v.extend(self.domains.iter().map(|d| CertSpec {
            name: d.mta_sts_host(),
            challenge: d.challenge,
            role: Role::Https,
        }));
        v.extend(self.mx.iter().map(|m| CertSpec {
            name: m.host.clone(),
            challenge: m.challenge,
            role: match &m.external {
                Some(file) => Role::ExternalMx(Box::new(crate::acme::manager::ExternalRole {
                    file: file.clone(),
                    prepublish: m.prepublish.clone(),
                })),
                None => Role::Mx(Box::new(crate::acme::manager::MxRole {
                    deploy: m.deploy.clone(),
                    verify: m.verify,
                    rollover: m.rollover,
                })),
            },
        }));
        v
    }

    /// Reads, parses and validates every domain's policy source, returning the published
    /// policies by domain plus warnings, or every problem found.
    pub(crate) fn load_policies(&self) -> Result<LoadedPolicies, ConfigError> {
        let mut problems = Vec::new();
        let mut policies = BTreeMap::new();
        let mut warnings = Vec::new();
        for (i, d) in self.domains.iter().enumerate() {
            let key = format!("domain[{i}].policy");
            let text = match std::fs::read_to_string(&d.policy_file) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(self.problem(
                        &key,
                        format!(
                            "cannot read policy file {}: {e} (create it, e.g. with `mxguard init`, or fix the path)",
                            d.policy_file.display()
                        ),
                    ));
                    continue;
                }
            };
            let src: PolicySource = match parse_toml(&d.policy_file, &text) {
                Ok(s) => s,
                Err(mut e) => {
                    problems.append(&mut e.problems);
                    continue;
                }
            };
            match policy::validate(&src, &d.mx) {
                Ok(v) => {
                    for w in v.warnings {
                        warnings.push(Problem {
                            file: d.policy_file.clone(),
                            position: None,
                            key: w.key,
                            message: w.message,
                        });
                    }
                    policies.insert(d.name.clone(), Published::new(&v.policy));
                }
                Err(ps) => problems.extend(ps.into_iter().map(|p| Problem {
                    file: d.policy_file.clone(),
                    position: None,
                    key: p.key,
                    message: format!(
                        "{} (policy of domain[{i}] {} in {})",
                        p.message,
                        d.name,
                        self.file.display()
                    ),
                })),
            }
        }
        for (i, d) in self.domains.iter().enumerate() {
            for (j, uri) in d.tls_rpt.iter().enumerate() {
                if uri.starts_with("mailto:")
                    && crate::tlsrpt::mailreport::report_address_behind_mx(uri, &d.mx, &d.name)
                {
                    warnings.push(self.problem(
                        format!("domain[{i}].tls_rpt[{j}]"),
                        format!(
                            "{uri} is delivered through the MX hosts the reports are about: reports of TLS failures there may not arrive; prefer an https: URI or an address at another domain"
                        ),
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(LoadedPolicies { policies, warnings })
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// Policies of every domain, ready to serve and announce.
#[derive(Debug, Clone)]
pub(crate) struct LoadedPolicies {
    pub policies: BTreeMap<String, Published>,
    pub warnings: Vec<Problem>,
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, col)
}

/// Deserializes TOML text into `T`, naming file, line, column and dotted key on error.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    let syntax = |e: toml::de::Error, key: String| Problem {
        file: path.to_path_buf(),
        position: e.span().map(|s| line_col(text, s.start)),
        key,
        message: e.message().trim().to_string(),
    };
    let de = toml::de::Deserializer::parse(text).map_err(|e| ConfigError {
        problems: vec![syntax(e, String::new())],
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        ConfigError {
            problems: vec![syntax(e.into_inner(), key)],
        }
    })
}

fn parse_raw(path: &Path, text: &str) -> Result<RawConfig, ConfigError> {
    parse_toml(path, text)
}

impl Config {
    /// The rollover timing: hold = max(2 × TLSA TTL, min_hold).
    pub(crate) fn roll_timing(&self) -> crate::dane::machine::Timing {
        crate::dane::machine::Timing {
            hold: (2 * u64::from(self.records.tlsa_ttl)).max(self.rollover.min_hold.as_secs()),
            key_age: self.rollover.key_age.as_secs(),
            retry_initial: self.acme.backoff.base.as_secs(),
            retry_max: self.acme.backoff.cap.as_secs(),
        }
    }
}

#[cfg(test)]
mod tests;
