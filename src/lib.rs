//! mxguard: protects a domain's inbound mail in transit.
//!
//! - [`store`]: the only module that writes files (atomic, 0600 secrets).
//! - [`zone`]: the authoritative zone — zone file + managed records, RFC 1982 serial, CSK,
//!   NSEC/NSEC3 signing, lookup logic (pure where possible).
//! - [`dns`]: the authoritative DNS server over an atomically swapped zone set, AXFR/TSIG,
//!   NOTIFY to secondaries.

pub mod dns;
pub mod store;
pub mod zone;
