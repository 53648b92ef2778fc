//! The command-line commands other than `run`: each reads the config and the state directory
//! (or the running daemon over DNS) and prints. Owns what the commands print (stdout) and the
//! files `init` writes. Must not change served content: `rotate` and `dnssec-roll` only leave
//! a request that the daemon's rollover or key roll picks up.
//!
//! - [`show`]: `check-config`, `policy`, `ds`, `status`, `tlsa`, `certs`, `rotate`,
//!   `dnssec-roll`, `tsig-keygen`.
//! - [`reports`]: `reports` (summary, list, show, import).
//! - [`init`](mod@init): `init`.
//! - [`check`](mod@check): `check`.
//! - [`dns_policy`]: `dns-policy` (least-privilege snippets for pushed domains).

pub mod check;
pub mod dns_policy;
pub mod init;
pub mod reports;
pub mod show;

pub use check::{CheckOptions, UsageError, check};
pub use dns_policy::print_dns_policy;
pub use init::{InitOptions, init};
pub use reports::{import_reports, list_reports, parse_since, print_report, print_reports};
pub use show::{
    check_config, dnssec_roll, print_certs, print_ds, print_policy, print_tlsa, rotate, status,
    tsig_keygen,
};
