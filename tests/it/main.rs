//! Integration tests: the real `mxguard` binary on loopback ports, talked to with real
//! clients (curl, openssl, dig, unbound, knotd, pebble) as a user would.

mod acme;
mod architecture;
mod catalog;
mod check;
mod config_errors;
mod dns;
mod harness;
mod init;
mod ixfr;
mod keyroll;
mod mta_sts;
mod pebble;
mod push;
mod rollover;
mod smtp;
mod status_page;
mod store_crash;
mod tlsrpt_https;
mod tlsrpt_mail;
mod tsig;
mod zone_daemon;
