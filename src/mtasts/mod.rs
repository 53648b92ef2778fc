//! MTA-STS (RFC 8461): the policy model and the HTTPS listener that serves it.
//!
//! Owns: rendering and identifying policies (`policy`, pure) and serving them at
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt` (`http`, which also hosts the plain
//! HTTP listener for ACME http-01 and the admin listener). Must not touch DNS records (the
//! daemon publishes the policy id through the record sink) or certificates (it serves what the
//! resolver in `crate::acme::tls` holds).

pub(crate) mod http;
pub(crate) mod policy;
pub(crate) mod texts;
