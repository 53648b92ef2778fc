//! mxguard: protects a domain's inbound mail in transit.
//!
//! TLS-RPT (RFC 8460) receiver core: [`tlsrpt`] is the pure model, parser, body decoding,
//! summary, alert decision and metrics rendering; [`reports`] is the SQLite report store with
//! its single writer thread; [`intake`] is the axum handler the HTTPS server mounts;
//! [`alerts`] evaluates the alert condition after each stored report and POSTs to a webhook.

pub mod alerts;
pub mod intake;
pub mod reports;
pub mod store;
pub mod tlsrpt;
