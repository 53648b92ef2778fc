//! mxguard: protects a domain's inbound mail in transit.

pub mod store;
