//! DANE for the MX hosts (RFC 7671, RFC 7672): TLSA record data, the rollover state machine
//! that decides when an MX key and its records change, its executor, and the live check of
//! which key an MX presents.
//!
//! Owns: `rollover/` and `mx-keys/` in the state directory. Must not touch the zone except
//! through the `crate::publish::RecordSink`, and must not order certificates itself (the
//! executor asks the certificate manager in `crate::acme::manager`).
//!
//! - `machine`: the rollover state machine (pure): the one place that decides *when*.
//! - `executor`: runs the machine per MX, persisting each state before acting on it; also the
//!   external-certificate mode. `files`: the roll state, key and request files it keeps.
//! - `tlsa`: TLSA record data (pure). [`probe`]: which key a live MX presents.
//! - `view`: what `mxguard tlsa` and the status page show of an MX's keys (read only).

pub(crate) mod executor;
pub(crate) mod files;
pub(crate) mod machine;
pub mod probe;
pub(crate) mod tlsa;
pub(crate) mod view;
