//! What a configuration promises, as check targets: every configured domain with what must be
//! there (MTA-STS always, TLS-RPT when `tls_rpt` is set, DNSSEC and DANE when mxguard serves
//! the zone, CAA when `acme.caa` is on), the MX endpoints from `[[mx]] verify`, and the
//! `[check]` resolver settings (with `"zone-keys"`: the keys mxguard signs its zones with).
//!
//! Reads the config and, for `"zone-keys"` and the ACME account URL, the state directory.

use hickory_proto::dnssec::{PublicKey, PublicKeyBuf};
use hickory_proto::rr::Name;

use super::{CaaExpect, Expect, ResolverSettings, Target};
use crate::config::{Config, ZONE_KEYS};

/// One target per configured domain (or per `wanted` one; an unknown one is an error).
pub(crate) fn from_config(
    config: &Config,
    wanted: &[String],
    https_port: Option<u16>,
) -> Result<Vec<Target>, String> {
    for w in wanted {
        if !config.domains.iter().any(|d| &d.name == w) {
            return Err(format!("{w} is not a domain of {}", config.file.display()));
        }
    }
    let account = crate::acme::client::account_url(&config.state_dir);
    let serves_zones = config.listen.dns.is_some();
    let mx_index = config.mx_index();
    Ok(config
        .domains
        .iter()
        .filter(|d| wanted.is_empty() || wanted.contains(&d.name))
        .map(|d| {
            let mx = mx_index.of(d);
            // The challenge types of this domain's certificates (its policy host, its MXs).
            let mut methods: Vec<String> = std::iter::once(d.challenge)
                .chain(mx.iter().map(|m| m.challenge))
                .map(|c| c.as_str().to_string())
                .collect();
            methods.sort();
            methods.dedup();
            Target {
                domain: d.name.clone(),
                expect: Expect {
                    mta_sts: true,
                    tls_rpt: !d.tls_rpt.is_empty(),
                    dnssec: serves_zones,
                    dane: if serves_zones {
                        mx.iter().map(|m| m.host.clone()).collect()
                    } else {
                        Vec::new()
                    },
                    caa: config.acme.caa_issuer.clone().map(|issuer| CaaExpect {
                        issuer,
                        account: account.clone(),
                        methods: methods.clone(),
                    }),
                },
                endpoints: mx
                    .iter()
                    .filter_map(|m| m.verify.map(|a| (m.host.clone(), a)))
                    .collect(),
                https_port: https_port.unwrap_or(config.listen.https.port()),
            }
        })
        .collect())
}

/// The resolver settings of `[check]`.
pub(crate) fn resolver_settings(config: &Config) -> Result<ResolverSettings, String> {
    let c = &config.check;
    let zone_keys = c
        .trust_anchor
        .as_deref()
        .is_some_and(|t| t.as_os_str() == ZONE_KEYS);
    Ok(ResolverSettings {
        server: c.resolver,
        trust_anchor: c.trust_anchor.clone().filter(|_| !zone_keys),
        trusted_keys: if zone_keys {
            zone_key_anchors(config)?
        } else {
            Vec::new()
        },
    })
}

/// Where the zone keys used as trust anchors are read from (again before every run of the
/// daemon's checks: a key roll changes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ZoneKeyAnchors {
    pub state_dir: std::path::PathBuf,
    pub domains: Vec<String>,
    pub algorithm: crate::zone::DnssecAlgorithm,
}

impl ZoneKeyAnchors {
    pub(crate) fn of(config: &Config) -> ZoneKeyAnchors {
        ZoneKeyAnchors {
            state_dir: config.state_dir.clone(),
            domains: config
                .domains
                .iter()
                .filter(|d| d.push.is_none())
                .map(|d| d.name.clone())
                .collect(),
            algorithm: config.dnssec.algorithm,
        }
    }

    /// The public keys mxguard signs its zones with (never creates one): every published key
    /// (during a key roll, both).
    pub(crate) fn read(&self) -> Result<Vec<(Name, PublicKeyBuf)>, String> {
        let mut out = Vec::new();
        for d in &self.domains {
            let origin = Name::from_ascii(format!("{d}.")).map_err(|e| format!("{d}: {e}"))?;
            match crate::dnssec::existing_keys(&self.state_dir, &origin, self.algorithm) {
                Ok(Some(keys)) => {
                    for k in keys.published() {
                        let public = k.dnskey().public_key();
                        out.push((
                            origin.clone(),
                            PublicKeyBuf::new(public.public_bytes().to_vec(), public.algorithm()),
                        ));
                    }
                }
                Ok(None) => {
                    return Err(format!(
                        "check.trust_anchor = \"{ZONE_KEYS}\": {d} has no zone key yet (start the daemon or run `mxguard ds` first)"
                    ));
                }
                Err(e) => return Err(format!("check.trust_anchor = \"{ZONE_KEYS}\": {e}")),
            }
        }
        Ok(out)
    }
}

/// The public keys mxguard signs its zones with (never creates one).
pub(crate) fn zone_key_anchors(config: &Config) -> Result<Vec<(Name, PublicKeyBuf)>, String> {
    ZoneKeyAnchors::of(config).read()
}

/// The monitor's inputs from a config: the config (its targets are taken at each run),
/// `[check]` settings, the alert webhook. A problem (e.g. zone keys missing) is kept in `error`
/// and reported by every run.
pub(crate) fn monitor_inputs(config: &std::sync::Arc<Config>) -> super::monitor::Inputs {
    let mut error = None;
    let resolver = resolver_settings(config).unwrap_or_else(|e| {
        error.get_or_insert(e);
        ResolverSettings::default()
    });
    let webhook = config
        .tlsrpt
        .alerts
        .webhook
        .as_deref()
        .and_then(|u| crate::tlsrpt::alert::WebhookUrl::parse(u).ok());
    super::monitor::Inputs {
        config: config.clone(),
        opts: super::Options {
            resolver,
            ca_file: ca_file(config),
            ..super::Options::default()
        },
        interval: config.check.interval,
        webhook,
        error,
        zone_keys: config
            .check
            .trust_anchor
            .as_deref()
            .is_some_and(|t| t.as_os_str() == ZONE_KEYS)
            .then(|| ZoneKeyAnchors::of(config)),
    }
}

/// The WebPKI root of the checks: `[check] ca_file`, else mxguard's local CA when it issues
/// the certificates (`acme.directory = "local"`), else the system's store (`None`).
pub(crate) fn ca_file(config: &Config) -> Option<std::path::PathBuf> {
    config.check.ca_file.clone().or_else(|| {
        matches!(config.acme.directory, crate::config::AcmeDirectory::Local)
            .then(|| config.state_dir.join(crate::acme::tls::LOCAL_CA_CERT))
    })
}
