//! mxguard: protects a domain's inbound mail in transit.

pub mod dns;
pub mod store;
pub mod zone;
