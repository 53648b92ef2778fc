//! mxguard protects a mail domain's inbound mail in transit, from one config file.
//!
//! Architecture, in short — one folder per capability, arrows pointing down:
//! - [`cli`], [`daemon`]: the commands and the daemon's lifecycle (the top).
//! - [`acme`]: certificates (ACME client, local CA, resolver, renewal, the manager task).
//! - [`dane`]: TLSA data, the rollover state machine (the one place that decides *when* MX
//!   keys, TLSA records and MX certificates change) and its executor.
//! - [`mtasts`]: MTA-STS policies and the HTTPS listener that serves them.
//! - [`tlsrpt`]: TLS-RPT reports: parsing, store, HTTPS and SMTP intake, import, alerts.
//! - [`publish`]: the record sink every record producer talks to, and its signed-zone
//!   implementation (the single writer of the served zones).
//! - [`dns`]: the authoritative DNS server over swapped zone snapshots, AXFR/TSIG, NOTIFY.
//! - [`zone`]: zone model, RFC 1982 serial, keys, NSEC/NSEC3 signing, lookups (pure where
//!   possible).
//! - [`config`]: the TOML file, validated (every problem with file and dotted key).
//! - [`state_dir`]: the state directory; the only module that writes files.
//! - [`x509`]: PEM chains and certificate fields; [`duration`]: the one parser of duration
//!   keys; [`logfield`]: network values made safe to log (pure leaves).
pub mod acme;
pub mod changelog;
pub mod check;
pub mod cli;
pub mod config;
mod conn_limit;
pub mod daemon;
pub mod dane;
pub mod dns;
pub mod dnssec;
pub mod duration;
#[doc(hidden)]
pub mod fuzzing;
pub mod logfield;
pub mod mtasts;
pub mod publish;
pub mod state_dir;
pub mod status;
pub mod tlsrpt;
pub mod webpki;
pub mod x509;
pub mod zone;
