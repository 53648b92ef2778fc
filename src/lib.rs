//! mxguard protects a mail domain's inbound mail in transit, from one config file.
//!
//! Architecture, in short:
//! - [`config`]: the TOML file, validated (every problem with file and dotted key).
//! - [`policy`]: MTA-STS policies (RFC 8461), pure: validation, rendering, id, TXT record.
//! - [`store`]: the state directory; the only module that writes files (atomic, 0600 keys).
//! - [`tls`]: the swappable certificate resolver and the local CA.
//! - [`http`]: the HTTPS policy listener and the plain HTTP challenge listener.
//! - [`zone`]: the authoritative zone — zone file + managed records, RFC 1982 serial, CSK,
//!   NSEC/NSEC3 signing, lookup logic (pure where possible).
//! - [`publish`]: the single writer of the served zones (managed records, signing, swap,
//!   secondaries); [`tlsa`]: TLSA record data.
//! - [`dns`]: the authoritative DNS server over an atomically swapped zone set, AXFR/TSIG,
//!   NOTIFY to secondaries.
//! - [`acme`], [`renewal`], [`certs`]: ACME orders, the renewal schedule, the certificate
//!   manager (issue, renew, install, deploy to the MTA).
//! - [`tlsrpt`]: TLS-RPT (RFC 8460), pure: model, parser, body decoding, summary, alert
//!   decision, metrics rendering; [`reports`]: the SQLite report store with its single writer
//!   thread; [`intake`]: the HTTPS POST handler; [`alerts`]: the alert task and webhook.
//! - [`rollover`]: the DANE TLSA rollover state machine (pure); [`roll`]: its executor in
//!   the certificate manager; [`mxcheck`]: which key a live MX presents.
//! - [`mailreport`]: finding the report in a report mail (pure); [`smtp`]: the optional SMTP
//!   listener for `rua=mailto:` reports; [`import`]: importing .eml, mbox and Maildir.
//! - [`app`]: the daemon and CLI commands; the one place that decides when content changes.
pub mod acme;
pub mod alerts;
pub mod app;
pub mod certs;
pub mod config;
pub mod dns;
pub mod http;
pub mod import;
pub mod intake;
pub mod mailreport;
pub mod mxcheck;
pub mod policy;
pub mod publish;
pub mod renewal;
pub mod reports;
pub mod roll;
pub mod rollover;
pub mod smtp;
pub mod store;
pub mod tls;
pub mod tlsa;
pub mod tlsrpt;
pub mod zone;
