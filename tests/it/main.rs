//! Integration tests: one binary, real servers on loopback, real clients and peers.

mod dns;
