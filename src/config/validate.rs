//! Validation of what the user typed into a [`Config`], one function per section. Every
//! function adds its problems (dotted key and message) to one list, so the user sees all of
//! them at once. No I/O apart from checking that named files exist.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::push::push_settings;
use super::*;
use crate::acme::manager::Deploy;
use crate::mtasts::policy;

/// The problems found so far, each naming the config file.
pub(super) struct Problems {
    file: PathBuf,
    list: Vec<Problem>,
}

impl Problems {
    fn push(&mut self, key: String, message: String) {
        self.list.push(Problem {
            file: self.file.clone(),
            position: None,
            key,
            message,
        })
    }
}

/// Resolves paths in the config relative to the config file's folder.
pub(super) struct Base(PathBuf);

impl Base {
    pub(super) fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.0.join(p)
        }
    }
}

/// `[acme]`: the directory and the contact address.
fn acme_directory(raw: &RawConfig, p: &mut Problems) -> AcmeDirectory {
    let mut problem = |key: String, message: String| p.push(key, message);
    let directory = match raw.acme.directory.as_str() {
        "local" => AcmeDirectory::Local,
        "letsencrypt" => AcmeDirectory::Url(LETSENCRYPT.into()),
        "letsencrypt-staging" => AcmeDirectory::Url(LETSENCRYPT_STAGING.into()),
        url if url.starts_with("https://") => AcmeDirectory::Url(url.into()),
        other => {
            problem(
                "acme.directory".into(),
                format!(
                    "{other:?} is not a directory: use letsencrypt, letsencrypt-staging, local or an https:// URL"
                ),
            );
            AcmeDirectory::Local
        }
    };
    if let Some(email) = &raw.acme.email
        && (!email.contains('@') || email.contains(char::is_whitespace))
    {
        problem(
            "acme.email".into(),
            format!("{email:?} is not an email address"),
        );
    }

    directory
}

/// `[[domain]]`: names, MX hosts, report addresses, policy and zone files.
fn domains(raw: &RawConfig, base: &Base, p: &mut Problems) -> Vec<Domain> {
    let mut problem = |key: String, message: String| p.push(key, message);
    let resolve = |f: &Path| base.resolve(f);
    if raw.domain.is_empty() {
        problem(
            "domain".into(),
            "no [[domain]] configured: add one (e.g. `mxguard init --domain example.com --mx mx1.example.com`)".into(),
        );
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    // Exactly as many as configured: the daemon keeps these for its lifetime.
    let mut domains = Vec::with_capacity(raw.domain.len());
    for (i, d) in raw.domain.iter().enumerate() {
        let name = match policy::normalize_hostname(&d.name) {
            Ok(n) => n,
            Err(e) => {
                problem(format!("domain[{i}].name"), e);
                continue;
            }
        };
        if let Some(first) = seen.insert(name.clone(), i) {
            problem(
                format!("domain[{i}].name"),
                format!(
                    "duplicate domain {name}: already configured as domain[{first}]; remove one"
                ),
            );
        }
        if d.mx.is_empty() {
            problem(
                format!("domain[{i}].mx"),
                "no MX hosts: list the domain's MX hosts, e.g. mx = [\"mx1.example.com\"]".into(),
            );
        }
        let mut mx = Vec::new();
        for (j, host) in d.mx.iter().enumerate() {
            match policy::normalize_hostname(host) {
                Ok(h) => mx.push(h),
                Err(e) => problem(format!("domain[{i}].mx[{j}]"), e),
            }
        }
        for (j, uri) in d.tls_rpt.iter().enumerate() {
            if let Err(e) = validate_rua(uri) {
                problem(format!("domain[{i}].tls_rpt[{j}]"), e);
            }
        }
        let policy_file = resolve(
            d.policy
                .as_deref()
                .unwrap_or(&PathBuf::from(format!("policies/{name}.toml"))),
        );
        let zone_file = resolve(
            d.zone
                .as_deref()
                .unwrap_or(&PathBuf::from(format!("zones/{name}.zone"))),
        );
        let push = d
            .push
            .as_ref()
            .and_then(|push| push_settings(push, &format!("domain[{i}]"), base, &mut problem))
            .map(Box::new);
        if push.is_some() && d.zone.is_some() {
            problem(
                format!("domain[{i}].zone"),
                "a pushed domain has no zone file: mxguard does not serve its zone (remove zone, or [domain.push])".into(),
            );
        }
        if d.tlsa_https
            && let Some(p) = push
                .as_ref()
                .and_then(|s| s.provider.as_ref())
                .filter(|p| crate::publish::providers::NO_TLSA.contains(&p.name.as_str()))
        {
            problem(
                format!("domain[{i}].tlsa_https"),
                format!(
                    "the {} API cannot write TLSA records: set tlsa_https = false, or push with another provider or rfc2136",
                    p.name
                ),
            );
        }
        domains.push(Domain {
            name,
            mx,
            policy_file,
            zone_file: zone_file.into(),
            tls_rpt: d.tls_rpt.clone(),
            challenge: d.challenge.unwrap_or(raw.acme.challenge),
            tlsa_https: d.tlsa_https,
            push,
        });
    }

    domains
}

/// The provider API of a pushed domain whose client cannot write TLSA records.
fn no_tlsa_provider(d: &Domain) -> Option<&str> {
    let name = d.push.as_ref()?.provider.as_ref()?.name.as_str();
    crate::publish::providers::NO_TLSA
        .contains(&name)
        .then_some(name)
}

/// `[[mx]]`: hosts, files, modes, owner, reload, rollover or external certificate.
fn mx_certs(raw: &RawConfig, base: &Base, domains: &[Domain], p: &mut Problems) -> Vec<MxCert> {
    let mut problem = |key: String, message: String| p.push(key, message);
    let resolve = |f: &Path| base.resolve(f);
    let mut mx_certs = Vec::with_capacity(raw.mx.len());
    let mut seen_mx: BTreeMap<String, usize> = BTreeMap::new();
    // Looked up per `[[mx]]` (a scan of every domain for each was O(N²) with N domains).
    let domain_mx: std::collections::HashSet<&str> = domains
        .iter()
        .flat_map(|d| d.mx.iter().map(String::as_str))
        .collect();
    for (i, m) in raw.mx.iter().enumerate() {
        let host = match policy::normalize_hostname(&m.host) {
            Ok(h) => h,
            Err(e) => {
                problem(format!("mx[{i}].host"), e);
                continue;
            }
        };
        if !domain_mx.contains(host.as_str()) {
            problem(
                format!("mx[{i}].host"),
                format!(
                    "{host} is not an MX host of any configured domain: add it to a domain's mx list"
                ),
            );
        }
        if let Some(first) = seen_mx.insert(host.clone(), i) {
            problem(
                format!("mx[{i}].host"),
                format!("{host} is already configured as mx[{first}]"),
            );
        }
        let mut mode = |key: &str, v: &str| match u32::from_str_radix(v, 8) {
            Ok(m) if m <= 0o777 => m,
            _ => {
                problem(
                    format!("mx[{i}].{key}"),
                    format!("{v:?} is not a file mode: use octal such as \"0640\""),
                );
                0o600
            }
        };
        let cert_mode = mode("cert_mode", &m.cert_mode);
        let key_mode = mode("key_mode", &m.key_mode);
        if key_mode & 0o007 != 0 {
            problem(
                format!("mx[{i}].key_mode"),
                format!(
                    "{} makes the private key readable by everyone: use 0600 or 0640",
                    m.key_mode
                ),
            );
        }
        let owner = match &m.owner {
            Some(o) => match crate::acme::deploy::resolve_owner(o) {
                Ok(x) => Some(x),
                Err(e) => {
                    problem(format!("mx[{i}].owner"), e.to_string());
                    None
                }
            },
            None => None,
        };
        if m.reload_timeout == 0 {
            problem(
                format!("mx[{i}].reload_timeout"),
                "must be at least 1 second".into(),
            );
        }
        let verify = match &m.verify {
            Some(v) => match v.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    problem(
                        format!("mx[{i}].verify"),
                        format!("{v:?} is not an address:port such as \"192.0.2.25:25\""),
                    );
                    None
                }
            },
            None => None,
        };
        // The pushed domain whose zone holds this MX's TLSA records, if any (the longest).
        let pushed = domains
            .iter()
            .filter(|d| {
                d.push.is_some() && (m.host == d.name || m.host.ends_with(&format!(".{}", d.name)))
            })
            .max_by_key(|d| d.name.len());
        let dane = m.rollover || m.external_cert.is_some();
        if dane && raw.listen.dns.is_none() && pushed.is_none() {
            problem(
                format!("mx[{i}].rollover"),
                "key rollover publishes TLSA records in mxguard's zone: set listen.dns, or rollover = false".into(),
            );
        }
        // Every [[mx]] publishes TLSA records (its key's `3 1 1`, with or without rollover;
        // DANE-TA's `2 1 1`).
        if let Some((d, p)) = pushed.and_then(|d| Some((d, no_tlsa_provider(d)?))) {
            problem(
                format!("mx[{i}].host"),
                format!(
                    "{} is in {}, pushed through the {p} API, which cannot write TLSA records, and an [[mx]] publishes its TLSA records: remove this [[mx]] (mxguard then manages no certificate for it), or push {} with another provider or rfc2136",
                    m.host, d.name, d.name
                ),
            );
        }
        let external = m.external_cert.as_deref().map(resolve);
        match (&external, &m.cert_file, &m.key_file) {
            (Some(_), None, None) => {
                if !m.reload.is_empty() {
                    problem(
                        format!("mx[{i}].reload"),
                        "with external_cert the other tool reloads the MTA: remove reload".into(),
                    );
                }
            }
            (Some(_), _, _) => problem(
                format!("mx[{i}].external_cert"),
                "external_cert excludes cert_file and key_file: mxguard either keeps the certificate or watches it".into(),
            ),
            (None, Some(_), Some(_)) => {}
            (None, _, _) => problem(
                format!("mx[{i}]"),
                "set cert_file and key_file (mxguard keeps the certificate) or external_cert (another tool does)".into(),
            ),
        }
        if external.is_none() && !m.prepublish.is_empty() {
            problem(
                format!("mx[{i}].prepublish"),
                "prepublish is for external_cert; mxguard pre-publishes its own keys".into(),
            );
        }
        for (j, d) in m.prepublish.iter().enumerate() {
            if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                problem(
                    format!("mx[{i}].prepublish[{j}]"),
                    format!(
                        "{d:?} is not a SHA-256 hex digest (64 hex digits) of a SubjectPublicKeyInfo"
                    ),
                );
            }
        }
        mx_certs.push(MxCert {
            verify,
            rollover: m.rollover,
            external,
            prepublish: m
                .prepublish
                .iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            dane_ta: m.dane_ta.iter().map(|f| resolve(f)).collect(),
            host,
            challenge: m.challenge.unwrap_or(raw.acme.challenge),
            deploy: std::sync::Arc::new(Deploy {
                cert_file: m.cert_file.as_deref().map(resolve).unwrap_or_default(),
                key_file: m.key_file.as_deref().map(resolve).unwrap_or_default(),
                owner,
                cert_mode,
                key_mode,
                reload: m.reload.clone(),
                reload_timeout: std::time::Duration::from_secs(m.reload_timeout),
            }),
        });
    }
    mx_certs
}

/// `[acme]`: retries, external account binding and CAA.
fn acme_account(
    raw: &RawConfig,
    base: &Base,
    directory: &AcmeDirectory,
    p: &mut Problems,
) -> (Option<(String, PathBuf)>, Option<String>) {
    let mut problem = |key: String, message: String| p.push(key, message);
    let resolve = |f: &Path| base.resolve(f);
    if raw.acme.retry_initial == 0 || raw.acme.retry_initial > raw.acme.retry_max {
        problem(
            "acme.retry_initial".into(),
            format!(
                "{} must be at least 1 and at most acme.retry_max ({})",
                raw.acme.retry_initial, raw.acme.retry_max
            ),
        );
    }
    let eab = match (&raw.acme.eab_kid, &raw.acme.eab_hmac_key_file) {
        (Some(k), Some(f)) => Some((k.clone(), resolve(f))),
        (None, None) => None,
        _ => {
            problem(
                "acme.eab_kid".into(),
                "external account binding needs both eab_kid and eab_hmac_key_file".into(),
            );
            None
        }
    };

    let caa_issuer = if raw.acme.caa {
        match (&raw.acme.caa_issuer, &directory) {
            (Some(i), _) => Some(i.clone()),
            (None, AcmeDirectory::Url(u)) if u.contains("letsencrypt.org") => {
                Some("letsencrypt.org".to_string())
            }
            _ => {
                problem(
                    "acme.caa_issuer".into(),
                    "set the CA's CAA issuer domain (e.g. \"letsencrypt.org\") to publish CAA"
                        .into(),
                );
                None
            }
        }
    } else {
        None
    };

    (eab, caa_issuer)
}

/// `[dnssec]`, `[[secondary]]`, `[dns]` and `[records]`.
/// `[check]`: the files it names exist and parse.
fn check(raw: &RawConfig, base: &Base, p: &mut Problems) {
    let c = &raw.check;
    if let Some(t) = c
        .trust_anchor
        .as_deref()
        .filter(|t| t.as_os_str() != super::raw::ZONE_KEYS)
    {
        let f = base.resolve(t);
        match std::fs::read_to_string(&f) {
            Ok(text) => match crate::zone::anchors::parse_anchor_lines(&text) {
                Ok(a) if a.is_empty() => p.push(
                    "check.trust_anchor".into(),
                    format!("{}: no DS or DNSKEY records", f.display()),
                ),
                Ok(_) => {}
                Err(e) => p.push("check.trust_anchor".into(), format!("{}: {e}", f.display())),
            },
            Err(e) => p.push(
                "check.trust_anchor".into(),
                format!(
                    "{}: {e} (DS or DNSKEY lines, or \"{}\" for mxguard's own zone keys)",
                    f.display(),
                    super::raw::ZONE_KEYS
                ),
            ),
        }
    }
    if let Some(f) = &c.ca_file {
        let f = base.resolve(f);
        match std::fs::read_to_string(&f) {
            Ok(pem) if !crate::x509::parse_chain(&pem).is_empty() => {}
            Ok(_) => p.push(
                "check.ca_file".into(),
                format!("{}: no PEM certificate", f.display()),
            ),
            Err(e) => p.push("check.ca_file".into(), format!("{}: {e}", f.display())),
        }
    }
    if c.trust_anchor
        .as_deref()
        .is_some_and(|t| t.as_os_str() == super::raw::ZONE_KEYS)
        && raw.listen.dns.is_none()
    {
        p.push(
            "check.trust_anchor".into(),
            "\"zone-keys\" trusts the keys of the zones mxguard serves: set listen.dns".into(),
        );
    }
}

fn dns(raw: &RawConfig, base: &Base, p: &mut Problems) {
    let mut problem = |key: String, message: String| p.push(key, message);
    let resolve = |f: &Path| base.resolve(f);
    for p in raw.dnssec.validate("dnssec") {
        problem(p.key.clone(), p.message.clone());
    }
    for (i, sec) in raw.secondary.iter().enumerate() {
        for p in sec.validate(&format!("secondary[{i}]")) {
            problem(p.key.clone(), p.message.clone());
        }
        if let Some(f) = &sec.tsig_secret_file {
            let f = resolve(f);
            if !f.exists() {
                problem(
                    format!("secondary[{i}].tsig_secret_file"),
                    format!(
                        "{} does not exist: create it (e.g. with tsig-keygen) or fix the path",
                        f.display()
                    ),
                );
            }
        }
    }
    if !raw.secondary.is_empty() && raw.listen.dns.is_none() {
        problem(
            "secondary".into(),
            "secondaries need the DNS listener: set listen.dns".into(),
        );
    }
    if raw.dns.response_cache > MAX_RESPONSE_CACHE {
        problem(
            "dns.response_cache".into(),
            format!("at most {MAX_RESPONSE_CACHE} responses (0 turns the cache off)"),
        );
    }
    match raw.dns.udp_sockets {
        Some(n) if !(1..=crate::dns::MAX_UDP_SOCKETS).contains(&n) => problem(
            "dns.udp_sockets".into(),
            format!("must be 1 to {}", crate::dns::MAX_UDP_SOCKETS),
        ),
        Some(n) if n > 1 && !cfg!(target_os = "linux") => problem(
            "dns.udp_sockets".into(),
            "more than one socket per address needs SO_REUSEPORT as Linux has it: set 1".into(),
        ),
        _ => {}
    }
    if raw.records.ttl == 0 || raw.records.tlsa_ttl == 0 {
        problem("records".into(), "TTLs must be at least 1 second".into());
    }
}

/// `[tlsrpt]`.
fn tlsrpt(raw: &RawConfig, p: &mut Problems) {
    let mut problem = |key: String, message: String| p.push(key, message);
    for p in raw.tlsrpt.intake.validate("tlsrpt.intake") {
        problem(String::new(), p);
    }
    for p in raw.tlsrpt.alerts.validate("tlsrpt.alerts") {
        problem(p.key.clone(), p.problem.clone());
    }
    if let Some(smtp) = &raw.tlsrpt.smtp {
        for p in smtp.validate("tlsrpt.smtp") {
            problem(String::new(), p);
        }
        if !raw.tlsrpt.enabled {
            problem(
                "tlsrpt.smtp".into(),
                "the SMTP intake stores into the report database: set tlsrpt.enabled = true".into(),
            );
        }
    }
    if raw.tlsrpt.retention_days == 0 {
        problem(
            "tlsrpt.retention_days".into(),
            "must be at least 1 day".into(),
        );
    }
}

/// `[listen]` and the SMTP listener: no two TCP listeners on one address.
fn listeners(raw: &RawConfig, p: &mut Problems) {
    let mut problem = |key: String, message: String| p.push(key, message);
    let mut addrs: Vec<(&str, SocketAddr)> = vec![("listen.https", raw.listen.https)];
    if let Some(a) = raw.listen.http {
        addrs.push(("listen.http", a));
    }
    if let Some(a) = raw.listen.admin {
        addrs.push(("listen.admin", a));
    }
    if let Some(smtp) = &raw.tlsrpt.smtp {
        addrs.push(("tlsrpt.smtp.listen", smtp.listen));
    }
    for (i, (ka, a)) in addrs.iter().enumerate() {
        for (kb, b) in &addrs[i + 1..] {
            if a == b && a.port() != 0 {
                problem(
                    kb.to_string(),
                    format!(
                        "{b} is also used by {ka}: give each TCP listener its own address or port"
                    ),
                );
            }
        }
    }
}

/// Validates every section; all problems at once.
pub(super) fn validate(path: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
    let base = Base(
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
    );
    let mut p = Problems {
        file: path.to_path_buf(),
        list: Vec::new(),
    };
    let directory = acme_directory(&raw, &mut p);
    let domains = domains(&raw, &base, &mut p);
    let mx_certs = mx_certs(&raw, &base, &domains, &mut p);
    let (eab, caa_issuer) = acme_account(&raw, &base, &directory, &mut p);
    dns(&raw, &base, &mut p);
    tlsrpt(&raw, &mut p);
    listeners(&raw, &mut p);
    check(&raw, &base, &mut p);
    let l = &raw.limits;
    for (key, v) in [
        ("limits.https_connections", l.https_connections),
        ("limits.https_per_address", l.https_per_address),
        ("limits.dns_tcp_connections", l.dns_tcp_connections),
        ("limits.dns_tcp_per_address", l.dns_tcp_per_address),
    ] {
        if v == 0 {
            p.push(key.into(), "must be at least 1".into());
        }
    }
    for (key, d) in [
        ("limits.https_first_request", l.https_first_request),
        ("limits.https_idle", l.https_idle),
        ("limits.dns_tcp_idle", l.dns_tcp_idle),
    ] {
        if d.is_zero() {
            p.push(key.into(), "must be at least 1 second".into());
        }
    }
    if let Some(c) = &raw.catalog {
        match policy::normalize_hostname(&c.zone) {
            Err(e) => p.push("catalog.zone".into(), e),
            Ok(z) if domains.iter().any(|d| d.name == z) => p.push(
                "catalog.zone".into(),
                format!(
                    "{z} is a mail domain; the catalog needs a zone of its own (e.g. catalog.{z})"
                ),
            ),
            Ok(_) if raw.listen.dns.is_none() => p.push(
                "catalog.zone".into(),
                "the catalog is served by mxguard's DNS: set listen.dns".into(),
            ),
            Ok(_) => {}
        }
    }
    let problems = p.list;
    let resolve = |f: &Path| base.resolve(f);
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    Ok(Config {
        file: path.to_path_buf(),
        state_dir: resolve(&raw.state_dir),
        listen: Listen {
            https: raw.listen.https,
            http: raw.listen.http,
            dns: raw.listen.dns,
            admin: raw.listen.admin,
        },
        acme: Acme {
            directory,
            ca_file: raw.acme.ca_file.as_deref().map(resolve),
            email: raw.acme.email,
            eab,
            backoff: crate::acme::renewal::Backoff {
                base: std::time::Duration::from_secs(raw.acme.retry_initial),
                cap: std::time::Duration::from_secs(raw.acme.retry_max),
            },
            caa_issuer,
            profile: raw.acme.profile,
            dns01_timeout: raw.acme.dns01_timeout,
        },
        domains,
        mx: mx_certs,
        dnssec: raw.dnssec,
        secondaries: raw
            .secondary
            .into_iter()
            .map(|mut s| {
                s.tsig_secret_file = s.tsig_secret_file.as_deref().map(resolve);
                s
            })
            .collect(),
        dns: raw.dns,
        records: raw.records,
        tlsrpt: raw.tlsrpt,
        rollover: raw.rollover,
        limits: raw.limits.clone(),
        catalog: raw
            .catalog
            .as_ref()
            .and_then(|c| policy::normalize_hostname(&c.zone).ok()),
        check: {
            let mut c = raw.check;
            c.trust_anchor = c.trust_anchor.map(|t| {
                if t.as_os_str() == super::raw::ZONE_KEYS {
                    t
                } else {
                    resolve(&t)
                }
            });
            c.ca_file = c.ca_file.as_deref().map(resolve);
            c
        },
    })
}

/// A TLS-RPT `rua` URI (RFC 8460 §3): `mailto:` with an address or `https:` with a host.
pub(crate) fn validate_rua(uri: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{uri:?} is not a TLS-RPT report URI: {why}"));
    if uri.contains([',', ';', ' ', '"']) {
        return bad("it must not contain commas, semicolons, spaces or quotes");
    }
    if let Some(addr) = uri.strip_prefix("mailto:") {
        match addr.split_once('@') {
            Some((l, d)) if !l.is_empty() && policy::normalize_hostname(d).is_ok() => Ok(()),
            _ => bad("expected mailto:user@example.com"),
        }
    } else if let Some(rest) = uri.strip_prefix("https://") {
        let host = rest.split(['/', ':']).next().unwrap_or("");
        if policy::normalize_hostname(host).is_ok() {
            Ok(())
        } else {
            bad("expected https://host/path")
        }
    } else {
        bad("use mailto: or https:")
    }
}
