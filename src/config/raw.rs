//! What the user typed: the `Raw*` tables, strict (`deny_unknown_fields`), with defaults as
//! named functions. No validation here (see `validate`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::acme::ChallengeKind;
use crate::dns::SecondarySettings;
use crate::zone::DnssecSettings;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
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
    /// The daemon's own posture checks (`mxguard check`, continuously).
    #[serde(default)]
    pub check: CheckSettings,
    /// A catalog zone (RFC 9432) listing every zone mxguard serves.
    #[serde(default)]
    pub catalog: Option<Catalog>,
    /// Connection limits of the HTTPS and DNS-over-TCP listeners.
    #[serde(default)]
    pub limits: Limits,
}

/// `[limits]`: how many connections the listeners keep, per address and in all, and how long
/// an idle one lives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Limits {
    #[serde(default = "default_https_connections")]
    pub https_connections: usize,
    #[serde(default = "default_https_per_address")]
    pub https_per_address: usize,
    /// A connection must send its first request within this.
    #[serde(default = "default_https_first_request", with = "crate::duration")]
    pub https_first_request: std::time::Duration,
    /// Closed after this long without a request.
    #[serde(default = "default_https_idle", with = "crate::duration")]
    pub https_idle: std::time::Duration,
    #[serde(default = "default_dns_tcp_connections")]
    pub dns_tcp_connections: usize,
    #[serde(default = "default_dns_tcp_per_address")]
    pub dns_tcp_per_address: usize,
    #[serde(default = "default_dns_tcp_idle", with = "crate::duration")]
    pub dns_tcp_idle: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            https_connections: default_https_connections(),
            https_per_address: default_https_per_address(),
            https_first_request: default_https_first_request(),
            https_idle: default_https_idle(),
            dns_tcp_connections: default_dns_tcp_connections(),
            dns_tcp_per_address: default_dns_tcp_per_address(),
            dns_tcp_idle: default_dns_tcp_idle(),
        }
    }
}

fn default_https_connections() -> usize {
    4096
}
fn default_https_per_address() -> usize {
    1024
}
fn default_https_first_request() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}
fn default_https_idle() -> std::time::Duration {
    std::time::Duration::from_secs(20)
}
fn default_dns_tcp_connections() -> usize {
    256
}
fn default_dns_tcp_per_address() -> usize {
    32
}
fn default_dns_tcp_idle() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

/// `[catalog]`: secondaries configured once with this zone as a catalog pick up every zone
/// mxguard serves, and drop removed ones, by themselves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Catalog {
    /// The catalog zone's name, e.g. `catalog.example.net` (not one of the mail domains).
    pub zone: String,
}

/// `[check]`: how often and through what the daemon checks its domains as a sender would.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckSettings {
    /// Between two runs; `0` turns the checks off.
    #[serde(default = "default_check_interval", with = "crate::duration")]
    pub interval: std::time::Duration,
    /// Every query to this resolver (ADDR:PORT); default: the system's resolvers.
    #[serde(default)]
    pub resolver: Option<SocketAddr>,
    /// DS or DNSKEY lines replacing the root trust anchor, or `"zone-keys"`: the keys
    /// mxguard signs its zones with (labs, hidden setups without a registered DS).
    #[serde(default)]
    pub trust_anchor: Option<PathBuf>,
    /// The only root CA trusted for WebPKI; default: the system's store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl Default for CheckSettings {
    fn default() -> Self {
        CheckSettings {
            interval: default_check_interval(),
            resolver: None,
            trust_anchor: None,
            ca_file: None,
        }
    }
}

fn default_check_interval() -> std::time::Duration {
    std::time::Duration::from_secs(15 * 60)
}

/// The `[check] trust_anchor` value that names mxguard's own zone keys.
pub(crate) const ZONE_KEYS: &str = "zone-keys";

/// `[rollover]`: when MX keys roll (RFC 7671 §8.1).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rollover {
    /// Roll an MX key when it is this old (e.g. "90d").
    #[serde(default = "default_key_age", with = "crate::duration")]
    pub key_age: std::time::Duration,
    /// Least time a new key's TLSA record is served everywhere before the key goes live;
    /// the hold is max(2 × records.tlsa_ttl, min_hold).
    #[serde(default = "default_min_hold", with = "crate::duration")]
    pub min_hold: std::time::Duration,
    /// How often the rollover checks secondaries and deadlines.
    #[serde(default = "default_roll_poll", with = "crate::duration")]
    pub poll: std::time::Duration,
    /// Keep the MX key retired last (to roll back by hand); false: delete it once its record
    /// is withdrawn.
    #[serde(default = "default_true")]
    pub keep_retired_key: bool,
}

impl Default for Rollover {
    fn default() -> Self {
        Rollover {
            key_age: default_key_age(),
            min_hold: default_min_hold(),
            poll: default_roll_poll(),
            keep_retired_key: true,
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

/// `[tlsrpt]`: receiving and keeping RFC 8460 reports.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsRpt {
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
pub(crate) struct DnsOptions {
    /// UDP responses kept for reuse per DNS address (shared out among its query tasks) while
    /// the zones are unchanged; 0: none.
    #[serde(default = "default_response_cache")]
    pub response_cache: usize,
    /// UDP responses per second to one client network (IPv4 /24, IPv6 /56) before response
    /// rate limiting starts; 0: no limit.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: u32,
    /// Over the limit, every `rate_limit_slip`-th response is sent truncated (the client asks
    /// again over TCP), the others are dropped; 0: all dropped.
    #[serde(default = "default_rate_limit_slip")]
    pub rate_limit_slip: u32,
    /// UDP sockets per DNS address (`SO_REUSEPORT`, Linux); None: on Linux one per core, at
    /// least 8, elsewhere 1.
    #[serde(default)]
    pub udp_sockets: Option<usize>,
}

impl Default for DnsOptions {
    fn default() -> Self {
        DnsOptions {
            response_cache: default_response_cache(),
            rate_limit: default_rate_limit(),
            rate_limit_slip: default_rate_limit_slip(),
            udp_sockets: None,
        }
    }
}

fn default_rate_limit() -> u32 {
    200
}

fn default_rate_limit_slip() -> u32 {
    2
}

fn default_response_cache() -> usize {
    crate::dns::DEFAULT_RESPONSE_CACHE
}

/// Largest `dns.response_cache`: each entry takes at most about 2 KiB (request key up to 512
/// bytes, response up to 1232, overhead), per DNS address (its query tasks share them).
pub(crate) const MAX_RESPONSE_CACHE: usize = 20_000;

/// TTLs and ports of managed records.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Records {
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
pub(crate) struct RawMx {
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
    #[serde(
        default = "default_reload_timeout",
        deserialize_with = "crate::duration::secs"
    )]
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
pub(crate) struct RawListen {
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
pub(crate) struct RawAcme {
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
    #[serde(
        default = "default_retry_initial",
        deserialize_with = "crate::duration::secs"
    )]
    pub retry_initial: u64,
    /// Longest retry delay in seconds.
    #[serde(
        default = "default_retry_max",
        deserialize_with = "crate::duration::secs"
    )]
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
    /// How long a dns-01 challenge record may take to be served by every authoritative server
    /// before the order fails (and the record is withdrawn).
    #[serde(default = "default_dns01_timeout", with = "crate::duration")]
    pub dns01_timeout: std::time::Duration,
}

fn default_dns01_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(120)
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
            dns01_timeout: default_dns01_timeout(),
        }
    }
}

fn default_directory() -> String {
    "letsencrypt".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDomain {
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
    /// Present: mxguard does not serve this zone; it pushes the records it manages into the
    /// DNS the domain already has.
    #[serde(default)]
    pub push: Option<RawPush>,
}

/// `[domain.push]`: where and how the managed records are pushed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPush {
    /// `rfc2136`, or a DNS provider's API name.
    pub provider: String,
    /// rfc2136: the primary that accepts updates (`ADDR:PORT`).
    #[serde(default)]
    pub server: Option<SocketAddr>,
    #[serde(default)]
    pub tsig_key_name: Option<String>,
    /// The base64 TSIG secret (0600), as `mxguard tsig-keygen` writes it.
    #[serde(default)]
    pub tsig_secret_file: Option<PathBuf>,
    /// `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
    #[serde(default)]
    pub tsig_algorithm: Option<String>,
    /// Provider APIs: the credential file (0600).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Provider APIs with a configurable endpoint (pebble-challtestsrv: its management URL).
    #[serde(default)]
    pub api_url: Option<String>,
    /// Whom to ask whether a change is served (`ADDR:PORT` each); default: the zone's NS
    /// RRset as the primary (rfc2136) or the resolver (provider APIs) answers it.
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
    /// Provider APIs without `nameservers`: the resolver that finds the zone's NS RRset;
    /// default: the system's.
    #[serde(default)]
    pub resolver: Option<SocketAddr>,
}
