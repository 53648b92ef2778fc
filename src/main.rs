//! The `mxguard` command line: parses arguments, sets up logging, calls into [`mxguard::app`]
//! and maps errors to exit codes (0 ok, 1 runtime failure, 2 usage or configuration error).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mxguard::config::ConfigError;

#[derive(Parser)]
#[command(
    name = "mxguard",
    version,
    about = "MTA-STS, DANE, DNSSEC and TLS-RPT for a mail domain, from one config file"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a config, a policy and a zone skeleton for a domain (adds the domain to an
    /// existing config).
    Init(mxguard::cli::InitOptions),
    /// Run the daemon.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Load and validate the configuration and everything it names; exit 2 on any problem.
    CheckConfig {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// TLS-RPT reports: summary per domain and policy type, or one report.
    Reports {
        /// The config (required; accepted before or after the subcommand).
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        /// Only this policy domain.
        #[arg(long, global = true)]
        domain: Option<String>,
        /// Reports ending within this period (e.g. 7d, 24h).
        #[arg(long, default_value = "7d", global = true)]
        since: String,
        /// Machine-readable output.
        #[arg(long, global = true)]
        json: bool,
        /// Every row of each breakdown (default: the top 10).
        #[arg(long)]
        all: bool,
        #[command(subcommand)]
        action: Option<ReportsAction>,
    },
    /// Per MX: current and next TLSA records, the roll state and its next deadline.
    Tlsa {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Start a key roll now for one MX (or every MX).
    Rotate {
        #[arg(short, long)]
        config: PathBuf,
        mx: Option<String>,
    },
    /// Start a DNSSEC key roll of one zone (double signature, waiting for the parent's DS).
    DnssecRoll {
        #[arg(short, long)]
        config: PathBuf,
        domain: String,
        /// The new key's algorithm (default: `dnssec.algorithm`).
        #[arg(long, value_parser = ["ed25519", "ecdsap256sha256"])]
        algorithm: Option<String>,
    },
    /// Print the DS and DNSKEY records to give the registrar.
    Ds {
        #[arg(short, long)]
        config: PathBuf,
        /// Only this domain.
        domain: Option<String>,
    },
    /// Per zone the serial served and each secondary's serial; certificate summary.
    Status {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Every certificate mxguard keeps: key, SANs, not-after, next renewal, last error.
    Certs {
        #[arg(short, long)]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check the posture as a sender sees it: DNSSEC-validated MX, MTA-STS, TLSA, TLS-RPT,
    /// CAA and DS records, the policy over HTTPS, STARTTLS on every MX. Exit 0 when everything
    /// configured works, 1 when a check fails, 2 on usage errors.
    Check(mxguard::cli::CheckOptions),
    /// A new HMAC-SHA256 TSIG secret for a `tsig_secret_file`: printed, or written to --out
    /// (0600) with the Knot and BIND snippets for the peer.
    TsigKeygen {
        /// The key name, e.g. xfr-key.
        name: String,
        /// Write the secret to this file (0600; refuses an existing file).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// For pushed domains: the names and types mxguard updates, and least-privilege Knot and
    /// BIND snippets (ACL / update-policy, TSIG key) for the primary.
    DnsPolicy {
        #[arg(short, long)]
        config: PathBuf,
        /// Only this domain.
        domain: Option<String>,
    },
    /// Print the rendered MTA-STS policy and the DNS records announcing it.
    Policy {
        #[arg(short, long)]
        config: PathBuf,
        /// Only this domain.
        domain: Option<String>,
    },
}

#[derive(Subcommand)]
enum ReportsAction {
    /// One line per stored report: id, organization, period, domains, sessions.
    List,
    /// One stored report, with the raw JSON as received.
    Show { id: i64 },
    /// Import reports from .eml files, mbox files, Maildir directories or report files
    /// (.json, .json.gz); duplicates are skipped.
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

/// Runs an async command on a multi-threaded tokio runtime.
fn block_on(fut: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(fut))
}

/// Commands that print: a closed pipe (`| head`) ends the process quietly, as for any Unix
/// tool, instead of a panic in `println!`. The daemon keeps ignoring SIGPIPE (sockets).
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called before any thread is started; SIG_DFL is a valid disposition.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
}

/// The heap: jemalloc (on Linux) with one arena that returns freed pages to the system at
/// once. With glibc's malloc, 10,000 domains in `benches/scale.sh` left about 14 MB of free
/// chunks resident between the zones' long-lived data (zones are rebuilt as their records
/// roll, each into new memory): the heap was 87 MB for 64 MB in use, and `malloc_trim` returns
/// only whole free pages. One arena: the threads seldom allocate at the same time (the UDP
/// path allocates next to nothing per query, and zones are built on one thread), and each
/// arena keeps its own partly used pages. At once: with a decay of one second (and no
/// background thread) the pages freed in the last second before the daemon went idle stayed
/// resident, 75.4 against 73.5 MiB at 10,000 domains. The price is CPU while much is freed: a
/// restart on the 10,000-domain state took 13.6 s of CPU against 9.6 s with the one second.
#[cfg(target_os = "linux")]
#[global_allocator]
static HEAP: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (before `main`): the documented way to
/// set them in the program is this symbol (`malloc_conf`, with the crate's `_rjem_` prefix).
/// `_RJEM_MALLOC_CONF` in the environment (the prefixed `MALLOC_CONF`) overrides them.
/// Each thread's cache of freed blocks is kept small (blocks up to 4 KiB, 20 of each small
/// size, 4 of each larger): with jemalloc's defaults the caches held 0.75 MiB of a 100-domain
/// daemon's 3.2 MiB of heap and stacks, with these 0.4 MiB, and neither `benches/dns.sh` nor
/// `benches/tlsrpt.sh` changed beyond the noise (no caches at all cost the TLS-RPT intake a
/// fifth of its reports per second).
#[cfg(target_os = "linux")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_OPTIONS: Option<&'static std::ffi::c_char> =
    // SAFETY: a pointer to the first byte of a static NUL-terminated string, valid forever.
    Some(unsafe {
        &*c"narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0,tcache_max:4096,tcache_nslots_small_max:20,tcache_nslots_large:4".as_ptr()
    });

/// C code in the process (SQLite for the report store) allocates from glibc's malloc: one
/// arena there too, not one per thread that touches it.
fn one_heap_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called before any thread is started; mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for every rustls user (HTTPS listener, ACME client).
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hickory_server=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if matches!(cli.command, Command::Run { .. }) {
        one_heap_arena();
    } else {
        restore_sigpipe();
    }
    let result = match cli.command {
        Command::Check(opts) => {
            let mut ok = true;
            let r = block_on(async {
                ok = mxguard::cli::check(&opts).await?;
                Ok(())
            });
            match r {
                Ok(()) if ok => return ExitCode::SUCCESS,
                Ok(()) => return ExitCode::from(1),
                Err(e) if e.downcast_ref::<mxguard::cli::UsageError>().is_some() => {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(2);
                }
                Err(e) => Err(e),
            }
        }
        Command::Init(opts) => mxguard::cli::init(&opts).map(|paths| {
            for p in paths {
                println!("wrote {}", p.display());
            }
        }),
        Command::Run { config } => block_on(mxguard::daemon::run(&config)),
        Command::CheckConfig { config } => {
            mxguard::cli::check_config(&config).map_err(anyhow::Error::from)
        }
        Command::Reports {
            config,
            domain,
            since,
            json,
            all,
            action,
        } => match config {
            None => {
                eprintln!("error: reports needs -c CONFIG");
                return ExitCode::from(2);
            }
            Some(config) => match action {
                Some(ReportsAction::List) => {
                    mxguard::cli::list_reports(&config, domain.as_deref(), &since, json)
                }
                Some(ReportsAction::Show { id }) => mxguard::cli::print_report(&config, id),
                Some(ReportsAction::Import { paths }) => {
                    block_on(mxguard::cli::import_reports(&config, &paths, json))
                }
                None => mxguard::cli::print_reports(&config, domain.as_deref(), &since, json, all),
            },
        },
        Command::DnsPolicy { config, domain } => {
            mxguard::cli::print_dns_policy(&config, domain.as_deref())
        }
        Command::TsigKeygen { name, out } => mxguard::cli::tsig_keygen(&name, out.as_deref()),
        Command::Tlsa { config } => mxguard::cli::print_tlsa(&config),
        Command::Rotate { config, mx } => mxguard::cli::rotate(&config, mx.as_deref()),
        Command::DnssecRoll {
            config,
            domain,
            algorithm,
        } => mxguard::cli::dnssec_roll(&config, &domain, algorithm.as_deref()),
        Command::Ds { config, domain } => mxguard::cli::print_ds(&config, domain.as_deref()),
        Command::Status { config } => block_on(mxguard::cli::status(&config)),
        Command::Certs { config, json } => mxguard::cli::print_certs(&config, json),
        Command::Policy { config, domain } => {
            mxguard::cli::print_policy(&config, domain.as_deref())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<ConfigError>() {
            Some(ce) => {
                for p in &ce.problems {
                    eprintln!("error: {p}");
                }
                ExitCode::from(2)
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
