//! Certificates: the ACME client, the local CA and certificate resolver, the renewal schedule
//! and the certificate manager that keeps every certificate mxguard owns issued, renewed,
//! installed and deployed.
//!
//! Owns: `certs/<name>/` and the ACME account in the state directory, the certificates the
//! HTTPS and SMTP listeners present. Must not touch: DNS records except through the
//! `crate::publish::RecordSink` (dns-01 through the daemon's responder, CAA), and must not
//! decide when an MX key changes (the rollover state machine in [`crate::dane`] does).
//!
//! - `client` (re-exported here): ACME orders with our own key and CSR, challenges through a
//!   `Responder`.
//! - `renewal`: when to renew and retry (pure).
//! - `manager`: the certificate manager task; it also drives the DANE rollover executor.
//! - `tls`: the swappable certificate resolver, rustls configs and the local CA.
//! - `deploy`: chain and key written for the MTA, the reload command in its process group.
//! - `report`: what `mxguard certs` and `status` show (read-only).

pub(crate) mod client;
pub(crate) mod deploy;
pub(crate) mod issuer;
pub(crate) mod manager;
pub(crate) mod renewal;
pub(crate) mod report;
pub(crate) mod tls;

pub(crate) use client::*;
