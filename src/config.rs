//! The configuration file: what the user typed (`Raw*`, strict serde with
//! `deny_unknown_fields`), validated without I/O into a [`Config`], then resolved (policy files
//! read and checked) into per-domain policies.
//!
//! Every problem names the config file, the dotted key (`domain[1].mx[0]`) and, for syntax
//! errors, the line and column; the validator reports all problems at once. This module does
//! not open sockets or touch the state directory.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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

// ---------------------------------------------------------------------------------------------
// What the user typed.

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where keys, certificates, serials and reports live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub listen: RawListen,
    #[serde(default)]
    pub acme: RawAcme,
    #[serde(default)]
    pub domain: Vec<RawDomain>,
    /// MX hosts whose certificates mxguard obtains and deploys to the MTA.
    #[serde(default)]
    pub mx: Vec<RawMx>,
    /// How the zones are signed.
    #[serde(default)]
    pub dnssec: DnssecSettings,
    /// Secondary servers: NOTIFY targets allowed to transfer the zones.
    #[serde(default)]
    pub secondary: Vec<SecondarySettings>,
    /// How the DNS server answers.
    #[serde(default)]
    pub dns: DnsOptions,
    /// TTLs and ports of the records mxguard manages.
    #[serde(default)]
    pub records: Records,
    /// TLS-RPT intake, storage, alerts.
    #[serde(default)]
    pub tlsrpt: TlsRpt,
    /// DANE key rollover timing.
    #[serde(default)]
    pub rollover: Rollover,
}

/// `[rollover]`: when MX keys roll (RFC 7671 §8.1).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollover {
    /// Roll an MX key when it is this old (e.g. "90d").
    #[serde(
        default = "default_key_age",
        with = "crate::zone::settings::duration_text"
    )]
    pub key_age: std::time::Duration,
    /// Least time a new key's TLSA record is served everywhere before the key goes live;
    /// the hold is max(2 × records.tlsa_ttl, min_hold).
    #[serde(
        default = "default_min_hold",
        with = "crate::zone::settings::duration_text"
    )]
    pub min_hold: std::time::Duration,
    /// How often the rollover checks secondaries and deadlines.
    #[serde(
        default = "default_roll_poll",
        with = "crate::zone::settings::duration_text"
    )]
    pub poll: std::time::Duration,
}

impl Default for Rollover {
    fn default() -> Self {
        Rollover {
            key_age: default_key_age(),
            min_hold: default_min_hold(),
            poll: default_roll_poll(),
        }
    }
}

fn default_key_age() -> std::time::Duration {
    std::time::Duration::from_secs(90 * 86_400)
}
fn default_min_hold() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
}
fn default_roll_poll() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

impl Config {
    /// The rollover timing: hold = max(2 × TLSA TTL, min_hold).
    pub fn roll_timing(&self) -> crate::dane::machine::Timing {
        crate::dane::machine::Timing {
            hold: (2 * u64::from(self.records.tlsa_ttl)).max(self.rollover.min_hold.as_secs()),
            key_age: self.rollover.key_age.as_secs(),
            retry_initial: self.acme.backoff.base.as_secs(),
            retry_max: self.acme.backoff.cap.as_secs(),
        }
    }
}

/// `[tlsrpt]`: receiving and keeping RFC 8460 reports.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsRpt {
    /// Accept reports by HTTPS POST on every `mta-sts.<domain>` host.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Days reports are kept (by the end of their date range).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    #[serde(default)]
    pub intake: crate::tlsrpt::intake::IntakeSettings,
    #[serde(default)]
    pub alerts: crate::tlsrpt::alert::AlertSettings,
    /// An SMTP listener for `rua=mailto:` reports (absent: no SMTP).
    #[serde(default)]
    pub smtp: Option<crate::tlsrpt::smtp::SmtpSettings>,
}

impl Default for TlsRpt {
    fn default() -> Self {
        TlsRpt {
            enabled: true,
            retention_days: default_retention_days(),
            intake: Default::default(),
            alerts: Default::default(),
            smtp: None,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_retention_days() -> u32 {
    400
}

/// `[dns]`: how the authoritative server answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsOptions {
    /// UDP responses each query task keeps for reuse while the zones are unchanged; 0: none.
    #[serde(default = "default_response_cache")]
    pub response_cache: usize,
}

impl Default for DnsOptions {
    fn default() -> Self {
        DnsOptions {
            response_cache: default_response_cache(),
        }
    }
}

fn default_response_cache() -> usize {
    crate::dns::DEFAULT_RESPONSE_CACHE
}

/// Largest `dns.response_cache`: each entry takes at most about 2 KiB (request key up to 512
/// bytes, response up to 1232, overhead), per query task (up to 4 per DNS address).
pub const MAX_RESPONSE_CACHE: usize = 20_000;

/// TTLs and ports of managed records.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Records {
    /// TTL of the `_mta-sts`, `_smtp._tls` and CAA records.
    #[serde(default = "default_record_ttl")]
    pub ttl: u32,
    /// TTL of TLSA records (key rollovers wait at least twice this).
    #[serde(default = "default_record_ttl")]
    pub tlsa_ttl: u32,
    /// SMTP port of the TLSA records (`_<port>._tcp.<mx>`).
    #[serde(default = "default_tlsa_port")]
    pub tlsa_port: u16,
}

impl Default for Records {
    fn default() -> Self {
        Records {
            ttl: default_record_ttl(),
            tlsa_ttl: default_record_ttl(),
            tlsa_port: default_tlsa_port(),
        }
    }
}

fn default_record_ttl() -> u32 {
    300
}
fn default_tlsa_port() -> u16 {
    25
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMx {
    /// The MX host name (must be an MX of a configured domain).
    pub host: String,
    /// Challenge for this certificate; default `acme.challenge`.
    #[serde(default)]
    pub challenge: Option<ChallengeKind>,
    /// Where the full chain (PEM) is written for the MTA.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Where the private key (PEM) is written for the MTA.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// External-certificate mode: another tool (e.g. certbot --reuse-key) keeps this
    /// certificate; mxguard watches it and publishes TLSA for its key instead of issuing.
    #[serde(default)]
    pub external_cert: Option<PathBuf>,
    /// External mode: `3 1 1` digests (hex SHA-256 of the SPKI) of keys to pre-publish
    /// before the other tool switches to them.
    #[serde(default)]
    pub prepublish: Vec<String>,
    /// Opt-in DANE-TA: PEM files of the issuing CA's intermediates; `2 1 1` records are
    /// published for each. CAs rotate intermediates: list all current ones.
    #[serde(default)]
    pub dane_ta: Vec<PathBuf>,
    /// `user[:group]` owning both files; default: the daemon's user.
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default = "default_cert_mode")]
    pub cert_mode: String,
    #[serde(default = "default_key_mode")]
    pub key_mode: String,
    /// Command run after the files are replaced, e.g. ["systemctl", "reload", "postfix"].
    #[serde(default)]
    pub reload: Vec<String>,
    /// Seconds the reload command may take.
    #[serde(default = "default_reload_timeout")]
    pub reload_timeout: u64,
    /// Where to connect (STARTTLS) to check which key the MX presents; default `<host>:25`.
    #[serde(default)]
    pub verify: Option<String>,
    /// Roll this MX's key with TLSA pre-publication (needs listen.dns); default true.
    #[serde(default = "default_true")]
    pub rollover: bool,
}

fn default_cert_mode() -> String {
    "0644".into()
}
fn default_key_mode() -> String {
    "0600".into()
}
fn default_reload_timeout() -> u64 {
    30
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/mxguard")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    /// HTTPS listener serving the MTA-STS policies.
    #[serde(default = "default_https")]
    pub https: SocketAddr,
    /// Plain HTTP listener: ACME http-01 challenges only, never the policy.
    #[serde(default = "default_http")]
    pub http: Option<SocketAddr>,
    /// Authoritative DNS (UDP and TCP).
    #[serde(default = "default_dns")]
    pub dns: Option<SocketAddr>,
    /// Admin listener: Prometheus metrics at `/metrics` (plain HTTP; keep it on loopback).
    #[serde(default = "default_admin")]
    pub admin: Option<SocketAddr>,
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            https: default_https(),
            http: default_http(),
            dns: default_dns(),
            admin: default_admin(),
        }
    }
}

fn default_admin() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 9425)))
}

fn default_https() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 443))
}
fn default_http() -> Option<SocketAddr> {
    Some(SocketAddr::from(([0, 0, 0, 0], 80)))
}
fn default_dns() -> Option<SocketAddr> {
    Some(SocketAddr::from(([0, 0, 0, 0], 53)))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    /// `letsencrypt`, `letsencrypt-staging`, `local` (mxguard's own CA) or a directory URL.
    #[serde(default = "default_directory")]
    pub directory: String,
    /// Extra PEM roots to trust for the directory's own TLS (test CAs such as Pebble).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Contact address for the ACME account.
    #[serde(default)]
    pub email: Option<String>,
    /// Default challenge: `dns-01` (in mxguard's own zone), `http-01` or `tls-alpn-01`.
    #[serde(default = "default_challenge")]
    pub challenge: ChallengeKind,
    /// External account binding key id (CAs that require EAB).
    #[serde(default)]
    pub eab_kid: Option<String>,
    /// File holding the base64url EAB HMAC key.
    #[serde(default)]
    pub eab_hmac_key_file: Option<PathBuf>,
    /// Seconds before the first retry of a failed order or deployment (doubles per attempt).
    #[serde(default = "default_retry_initial")]
    pub retry_initial: u64,
    /// Longest retry delay in seconds.
    #[serde(default = "default_retry_max")]
    pub retry_max: u64,
    /// Publish `CAA 0 issue "<caa_issuer>; accounturi=…; validationmethods=…"` at every zone
    /// apex (RFC 8659, RFC 8657).
    #[serde(default)]
    pub caa: bool,
    /// The CA's CAA issuer domain; default from the directory (letsencrypt.org).
    #[serde(default)]
    pub caa_issuer: Option<String>,
    /// Certificate profile to order (e.g. "tlsserver", "shortlived"), where the CA offers
    /// profiles; otherwise the CA's default is ordered and a warning logged.
    #[serde(default)]
    pub profile: Option<String>,
}

fn default_retry_initial() -> u64 {
    crate::acme::renewal::BACKOFF_BASE.as_secs()
}
fn default_retry_max() -> u64 {
    crate::acme::renewal::BACKOFF_CAP.as_secs()
}

fn default_challenge() -> ChallengeKind {
    ChallengeKind::Dns01
}

impl Default for RawAcme {
    fn default() -> Self {
        RawAcme {
            directory: default_directory(),
            ca_file: None,
            email: None,
            challenge: default_challenge(),
            eab_kid: None,
            eab_hmac_key_file: None,
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            caa: false,
            caa_issuer: None,
            profile: None,
        }
    }
}

fn default_directory() -> String {
    "letsencrypt".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDomain {
    /// The mail domain, e.g. `example.com`.
    pub name: String,
    /// The domain's MX hosts.
    pub mx: Vec<String>,
    /// Policy source file; default `policies/<name>.toml` beside the config file.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// Zone file; default `zones/<name>.zone` beside the config file.
    #[serde(default)]
    pub zone: Option<PathBuf>,
    /// TLS-RPT report URIs (`mailto:` or `https:`) for `_smtp._tls.<name>`; none: no record.
    #[serde(default)]
    pub tls_rpt: Vec<String>,
    /// Challenge for the `mta-sts.<name>` certificate; default `acme.challenge`.
    #[serde(default)]
    pub challenge: Option<ChallengeKind>,
    /// Also publish `_443._tcp.mta-sts.<name> TLSA 3 1 1` for the policy host's key.
    #[serde(default)]
    pub tlsa_https: bool,
}

// ---------------------------------------------------------------------------------------------
// Validated.

/// The ACME directory to obtain certificates from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcmeDirectory {
    /// mxguard's own CA in the state directory: not publicly trusted, for demos and tests.
    Local,
    Url(String),
}

pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone)]
pub struct Acme {
    pub directory: AcmeDirectory,
    pub ca_file: Option<PathBuf>,
    pub email: Option<String>,
    pub challenge: ChallengeKind,
    /// External account binding: key id and HMAC key file.
    pub eab: Option<(String, PathBuf)>,
    pub backoff: crate::acme::renewal::Backoff,
    /// CAA issuer domain, when CAA records are to be published.
    pub caa_issuer: Option<String>,
    pub profile: Option<String>,
}

/// An MX host whose certificate mxguard keeps and deploys.
#[derive(Debug, Clone)]
pub struct MxCert {
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
    pub deploy: Deploy,
}

#[derive(Debug, Clone)]
pub struct Domain {
    /// Lowercase, no trailing dot.
    pub name: String,
    /// Lowercase, no trailing dot.
    pub mx: Vec<String>,
    pub policy_file: PathBuf,
    pub zone_file: PathBuf,
    pub tls_rpt: Vec<String>,
    pub challenge: ChallengeKind,
    pub tlsa_https: bool,
}

impl Domain {
    /// The HTTPS host senders fetch the policy from.
    pub fn mta_sts_host(&self) -> String {
        format!("mta-sts.{}", self.name)
    }

    /// The `_smtp._tls` TXT data, if report URIs are configured.
    pub fn tls_rpt_record(&self) -> Option<String> {
        (!self.tls_rpt.is_empty()).then(|| format!("v=TLSRPTv1; rua={}", self.tls_rpt.join(",")))
    }
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub https: SocketAddr,
    pub http: Option<SocketAddr>,
    pub dns: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

/// A validated configuration; paths are absolute or relative to the working directory.
#[derive(Debug, Clone)]
pub struct Config {
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
}

impl Config {
    /// Reads and validates a config file (no policy files yet: see [`Config::load_policies`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
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
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw = parse_raw(path, text)?;
        validate(path, raw)
    }

    /// Problem about this config file at a dotted key.
    pub fn problem(&self, key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            file: self.file.clone(),
            position: None,
            key: key.into(),
            message: message.into(),
        }
    }

    /// The certificates mxguard keeps: `mta-sts.<domain>` for each domain, then each `[[mx]]`.
    pub fn cert_specs(&self) -> Vec<CertSpec> {
        let mut v: Vec<CertSpec> = self
            .domains
            .iter()
            .map(|d| CertSpec {
                name: d.mta_sts_host(),
                sans: vec![d.mta_sts_host()],
                challenge: d.challenge,
                role: Role::Https {
                    host: d.mta_sts_host(),
                },
            })
            .collect();
        v.extend(self.mx.iter().map(|m| CertSpec {
            name: m.host.clone(),
            sans: vec![m.host.clone()],
            challenge: m.challenge,
            role: match &m.external {
                Some(file) => Role::ExternalMx {
                    file: file.clone(),
                    prepublish: m.prepublish.clone(),
                },
                None => Role::Mx(crate::acme::manager::MxRole {
                    deploy: m.deploy.clone(),
                    verify: m.verify,
                    rollover: m.rollover,
                }),
            },
        }));
        v
    }

    /// Reads, parses and validates every domain's policy source, returning the published
    /// policies by domain plus warnings, or every problem found.
    pub fn load_policies(&self) -> Result<LoadedPolicies, ConfigError> {
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
pub struct LoadedPolicies {
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
pub fn parse_toml<T: serde::de::DeserializeOwned>(
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

fn validate(path: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let mut problems = Vec::new();
    let mut problem = |key: String, message: String| {
        problems.push(Problem {
            file: path.to_path_buf(),
            position: None,
            key,
            message,
        })
    };

    let directory = match raw.acme.directory.as_str() {
        "local" => AcmeDirectory::Local,
        "letsencrypt" => AcmeDirectory::Url(LETSENCRYPT.into()),
        "letsencrypt-staging" => AcmeDirectory::Url(LETSENCRYPT_STAGING.into()),
        url if url.starts_with("https://") => AcmeDirectory::Url(url.into()),
        other => {
            problem(
                "acme.directory".into(),
                format!(
                    "{other:?} is not a directory: use letsencrypt, letsencrypt-staging, local or an https:// URL"
                ),
            );
            AcmeDirectory::Local
        }
    };
    if let Some(email) = &raw.acme.email
        && (!email.contains('@') || email.contains(char::is_whitespace))
    {
        problem(
            "acme.email".into(),
            format!("{email:?} is not an email address"),
        );
    }

    if raw.domain.is_empty() {
        problem(
            "domain".into(),
            "no [[domain]] configured: add one (e.g. `mxguard init --domain example.com --mx mx1.example.com`)".into(),
        );
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut domains = Vec::new();
    for (i, d) in raw.domain.iter().enumerate() {
        let name = match policy::normalize_hostname(&d.name) {
            Ok(n) => n,
            Err(e) => {
                problem(format!("domain[{i}].name"), e);
                continue;
            }
        };
        if let Some(first) = seen.insert(name.clone(), i) {
            problem(
                format!("domain[{i}].name"),
                format!(
                    "duplicate domain {name}: already configured as domain[{first}]; remove one"
                ),
            );
        }
        if d.mx.is_empty() {
            problem(
                format!("domain[{i}].mx"),
                "no MX hosts: list the domain's MX hosts, e.g. mx = [\"mx1.example.com\"]".into(),
            );
        }
        let mut mx = Vec::new();
        for (j, host) in d.mx.iter().enumerate() {
            match policy::normalize_hostname(host) {
                Ok(h) => mx.push(h),
                Err(e) => problem(format!("domain[{i}].mx[{j}]"), e),
            }
        }
        for (j, uri) in d.tls_rpt.iter().enumerate() {
            if let Err(e) = validate_rua(uri) {
                problem(format!("domain[{i}].tls_rpt[{j}]"), e);
            }
        }
        let policy_file = resolve(
            d.policy
                .as_deref()
                .unwrap_or(&PathBuf::from(format!("policies/{name}.toml"))),
        );
        let zone_file = resolve(
            d.zone
                .as_deref()
                .unwrap_or(&PathBuf::from(format!("zones/{name}.zone"))),
        );
        domains.push(Domain {
            name,
            mx,
            policy_file,
            zone_file,
            tls_rpt: d.tls_rpt.clone(),
            challenge: d.challenge.unwrap_or(raw.acme.challenge),
            tlsa_https: d.tlsa_https,
        });
    }

    let mut mx_certs = Vec::new();
    let mut seen_mx: BTreeMap<String, usize> = BTreeMap::new();
    for (i, m) in raw.mx.iter().enumerate() {
        let host = match policy::normalize_hostname(&m.host) {
            Ok(h) => h,
            Err(e) => {
                problem(format!("mx[{i}].host"), e);
                continue;
            }
        };
        if !domains.iter().any(|d| d.mx.contains(&host)) {
            problem(
                format!("mx[{i}].host"),
                format!(
                    "{host} is not an MX host of any configured domain: add it to a domain's mx list"
                ),
            );
        }
        if let Some(first) = seen_mx.insert(host.clone(), i) {
            problem(
                format!("mx[{i}].host"),
                format!("{host} is already configured as mx[{first}]"),
            );
        }
        let mut mode = |key: &str, v: &str| match u32::from_str_radix(v, 8) {
            Ok(m) if m <= 0o777 => m,
            _ => {
                problem(
                    format!("mx[{i}].{key}"),
                    format!("{v:?} is not a file mode: use octal such as \"0640\""),
                );
                0o600
            }
        };
        let cert_mode = mode("cert_mode", &m.cert_mode);
        let key_mode = mode("key_mode", &m.key_mode);
        if key_mode & 0o007 != 0 {
            problem(
                format!("mx[{i}].key_mode"),
                format!(
                    "{} makes the private key readable by everyone: use 0600 or 0640",
                    m.key_mode
                ),
            );
        }
        let owner = match &m.owner {
            Some(o) => match crate::acme::manager::resolve_owner(o) {
                Ok(x) => Some(x),
                Err(e) => {
                    problem(format!("mx[{i}].owner"), e);
                    None
                }
            },
            None => None,
        };
        if m.reload_timeout == 0 {
            problem(
                format!("mx[{i}].reload_timeout"),
                "must be at least 1 second".into(),
            );
        }
        let verify = match &m.verify {
            Some(v) => match v.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    problem(
                        format!("mx[{i}].verify"),
                        format!("{v:?} is not an address:port such as \"192.0.2.25:25\""),
                    );
                    None
                }
            },
            None => None,
        };
        if (m.rollover || m.external_cert.is_some()) && raw.listen.dns.is_none() {
            problem(
                format!("mx[{i}].rollover"),
                "key rollover publishes TLSA records in mxguard's zone: set listen.dns, or rollover = false".into(),
            );
        }
        let external = m.external_cert.as_deref().map(resolve);
        match (&external, &m.cert_file, &m.key_file) {
            (Some(_), None, None) => {
                if !m.reload.is_empty() {
                    problem(
                        format!("mx[{i}].reload"),
                        "with external_cert the other tool reloads the MTA: remove reload".into(),
                    );
                }
            }
            (Some(_), _, _) => problem(
                format!("mx[{i}].external_cert"),
                "external_cert excludes cert_file and key_file: mxguard either keeps the certificate or watches it".into(),
            ),
            (None, Some(_), Some(_)) => {}
            (None, _, _) => problem(
                format!("mx[{i}]"),
                "set cert_file and key_file (mxguard keeps the certificate) or external_cert (another tool does)".into(),
            ),
        }
        if external.is_none() && !m.prepublish.is_empty() {
            problem(
                format!("mx[{i}].prepublish"),
                "prepublish is for external_cert; mxguard pre-publishes its own keys".into(),
            );
        }
        for (j, d) in m.prepublish.iter().enumerate() {
            if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                problem(
                    format!("mx[{i}].prepublish[{j}]"),
                    format!(
                        "{d:?} is not a SHA-256 hex digest (64 hex digits) of a SubjectPublicKeyInfo"
                    ),
                );
            }
        }
        mx_certs.push(MxCert {
            verify,
            rollover: m.rollover,
            external,
            prepublish: m
                .prepublish
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            dane_ta: m.dane_ta.iter().map(|f| resolve(f)).collect(),
            host,
            challenge: m.challenge.unwrap_or(raw.acme.challenge),
            deploy: Deploy {
                cert_file: m.cert_file.as_deref().map(resolve).unwrap_or_default(),
                key_file: m.key_file.as_deref().map(resolve).unwrap_or_default(),
                owner,
                cert_mode,
                key_mode,
                reload: m.reload.clone(),
                reload_timeout: std::time::Duration::from_secs(m.reload_timeout),
            },
        });
    }
    if raw.acme.retry_initial == 0 || raw.acme.retry_initial > raw.acme.retry_max {
        problem(
            "acme.retry_initial".into(),
            format!(
                "{} must be at least 1 and at most acme.retry_max ({})",
                raw.acme.retry_initial, raw.acme.retry_max
            ),
        );
    }
    let eab = match (&raw.acme.eab_kid, &raw.acme.eab_hmac_key_file) {
        (Some(k), Some(f)) => Some((k.clone(), resolve(f))),
        (None, None) => None,
        _ => {
            problem(
                "acme.eab_kid".into(),
                "external account binding needs both eab_kid and eab_hmac_key_file".into(),
            );
            None
        }
    };

    for p in raw.dnssec.validate("dnssec") {
        problem(p.key.clone(), p.message.clone());
    }
    for (i, sec) in raw.secondary.iter().enumerate() {
        for p in sec.validate(&format!("secondary[{i}]")) {
            problem(p.key.clone(), p.message.clone());
        }
        if let Some(f) = &sec.tsig_secret_file {
            let f = resolve(f);
            if !f.exists() {
                problem(
                    format!("secondary[{i}].tsig_secret_file"),
                    format!(
                        "{} does not exist: create it (e.g. with tsig-keygen) or fix the path",
                        f.display()
                    ),
                );
            }
        }
    }
    if !raw.secondary.is_empty() && raw.listen.dns.is_none() {
        problem(
            "secondary".into(),
            "secondaries need the DNS listener: set listen.dns".into(),
        );
    }
    if raw.dns.response_cache > MAX_RESPONSE_CACHE {
        problem(
            "dns.response_cache".into(),
            format!("at most {MAX_RESPONSE_CACHE} responses (0 turns the cache off)"),
        );
    }
    if raw.records.ttl == 0 || raw.records.tlsa_ttl == 0 {
        problem("records".into(), "TTLs must be at least 1 second".into());
    }
    let caa_issuer = if raw.acme.caa {
        match (&raw.acme.caa_issuer, &directory) {
            (Some(i), _) => Some(i.clone()),
            (None, AcmeDirectory::Url(u)) if u.contains("letsencrypt.org") => {
                Some("letsencrypt.org".to_string())
            }
            _ => {
                problem(
                    "acme.caa_issuer".into(),
                    "set the CA's CAA issuer domain (e.g. \"letsencrypt.org\") to publish CAA"
                        .into(),
                );
                None
            }
        }
    } else {
        None
    };

    for p in raw.tlsrpt.intake.validate("tlsrpt.intake") {
        problem(String::new(), p);
    }
    for p in raw.tlsrpt.alerts.validate("tlsrpt.alerts") {
        problem(p.key.clone(), p.problem.clone());
    }
    if let Some(smtp) = &raw.tlsrpt.smtp {
        for p in smtp.validate("tlsrpt.smtp") {
            problem(String::new(), p);
        }
        if !raw.tlsrpt.enabled {
            problem(
                "tlsrpt.smtp".into(),
                "the SMTP intake stores into the report database: set tlsrpt.enabled = true".into(),
            );
        }
    }
    if raw.tlsrpt.retention_days == 0 {
        problem(
            "tlsrpt.retention_days".into(),
            "must be at least 1 day".into(),
        );
    }
    let mut addrs: Vec<(&str, SocketAddr)> = vec![("listen.https", raw.listen.https)];
    if let Some(a) = raw.listen.http {
        addrs.push(("listen.http", a));
    }
    if let Some(a) = raw.listen.admin {
        addrs.push(("listen.admin", a));
    }
    if let Some(smtp) = &raw.tlsrpt.smtp {
        addrs.push(("tlsrpt.smtp.listen", smtp.listen));
    }
    for (i, (ka, a)) in addrs.iter().enumerate() {
        for (kb, b) in &addrs[i + 1..] {
            if a == b && a.port() != 0 {
                problem(
                    kb.to_string(),
                    format!(
                        "{b} is also used by {ka}: give each TCP listener its own address or port"
                    ),
                );
            }
        }
    }

    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    Ok(Config {
        file: path.to_path_buf(),
        state_dir: resolve(&raw.state_dir),
        listen: Listen {
            https: raw.listen.https,
            http: raw.listen.http,
            dns: raw.listen.dns,
            admin: raw.listen.admin,
        },
        acme: Acme {
            directory,
            ca_file: raw.acme.ca_file.as_deref().map(resolve),
            email: raw.acme.email,
            challenge: raw.acme.challenge,
            eab,
            backoff: crate::acme::renewal::Backoff {
                base: std::time::Duration::from_secs(raw.acme.retry_initial),
                cap: std::time::Duration::from_secs(raw.acme.retry_max),
            },
            caa_issuer,
            profile: raw.acme.profile,
        },
        domains,
        mx: mx_certs,
        dnssec: raw.dnssec,
        secondaries: raw
            .secondary
            .into_iter()
            .map(|mut s| {
                s.tsig_secret_file = s.tsig_secret_file.as_deref().map(resolve);
                s
            })
            .collect(),
        dns: raw.dns,
        records: raw.records,
        tlsrpt: raw.tlsrpt,
        rollover: raw.rollover,
    })
}

/// A TLS-RPT `rua` URI (RFC 8460 §3): `mailto:` with an address or `https:` with a host.
pub fn validate_rua(uri: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{uri:?} is not a TLS-RPT report URI: {why}"));
    if uri.contains([',', ';', ' ', '"']) {
        return bad("it must not contain commas, semicolons, spaces or quotes");
    }
    if let Some(addr) = uri.strip_prefix("mailto:") {
        match addr.split_once('@') {
            Some((l, d)) if !l.is_empty() && policy::normalize_hostname(d).is_ok() => Ok(()),
            _ => bad("expected mailto:user@example.com"),
        }
    } else if let Some(rest) = uri.strip_prefix("https://") {
        let host = rest.split(['/', ':']).next().unwrap_or("");
        if policy::normalize_hostname(host).is_ok() {
            Ok(())
        } else {
            bad("expected https://host/path")
        }
    } else {
        bad("use mailto: or https:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/mxguard/mxguard.toml"), text)
    }

    const GOOD: &str = r#"
state_dir = "state"
[listen]
https = "127.0.0.1:8443"
http = "127.0.0.1:8080"
dns = "127.0.0.1:8053"
[acme]
directory = "local"
[[domain]]
name = "Example.COM."
mx = ["mx1.example.com"]
tls_rpt = ["mailto:tlsrpt@example.com", "https://mta-sts.example.com/tlsrpt"]
"#;

    #[test]
    fn good_config_resolves_paths_relative_to_config_file() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.state_dir, Path::new("/etc/mxguard/state"));
        assert_eq!(c.domains[0].name, "example.com");
        assert_eq!(
            c.domains[0].policy_file,
            Path::new("/etc/mxguard/policies/example.com.toml")
        );
        assert_eq!(
            c.domains[0].tls_rpt_record().unwrap(),
            "v=TLSRPTv1; rua=mailto:tlsrpt@example.com,https://mta-sts.example.com/tlsrpt"
        );
    }

    #[test]
    fn unknown_key_names_key_line_and_column() {
        let e = parse("[listen]\nhttps = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("/etc/mxguard/mxguard.toml:3:1: listen"),
            "{s}"
        );
        assert!(s.contains("unknown field `bogus`"), "{s}");
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let e = parse(
            "[acme]\ndirectory = \"ftp://x\"\n[[domain]]\nname = \"a.example\"\nmx = [\"bad host\"]\ntls_rpt = [\"http://x\"]\n",
        )
        .unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["acme.directory", "domain[0].mx[0]", "domain[0].tls_rpt[0]"]
        );
    }

    #[test]
    fn response_cache_default_and_bound() {
        assert_eq!(
            parse(GOOD).unwrap().dns.response_cache,
            crate::dns::DEFAULT_RESPONSE_CACHE
        );
        let off = format!("{GOOD}[dns]\nresponse_cache = 0\n");
        assert_eq!(parse(&off).unwrap().dns.response_cache, 0);
        let huge = format!("{GOOD}[dns]\nresponse_cache = 20001\n");
        let e = parse(&huge).unwrap_err().to_string();
        assert!(
            e.contains("dns.response_cache") && e.contains("at most 20000"),
            "{e}"
        );
    }

    #[test]
    fn rua_validation() {
        assert!(validate_rua("mailto:a@example.com").is_ok());
        assert!(validate_rua("https://r.example.com/x").is_ok());
        assert!(validate_rua("mailto:example.com").is_err());
        assert!(validate_rua("https://a.example.com,mailto:b@example.com").is_err());
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
