//! The checks of one MX host: its addresses, its TLSA RRset at `_25._tcp.<mx>`, STARTTLS,
//! and the presented chain against the TLSA records (DANE) and WebPKI (MTA-STS), its expiry.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use hickory_proto::rr::{RData, RecordType};
use rustls::pki_types::{CertificateDer, UnixTime};

use super::domain::{Env, fqdn};
use super::policy::FetchedPolicy;
use super::report::{CertInfo, Findings, MxReport, Verdict};
use super::resolve::Security;
use super::tlsa::{Match, Tlsa, match_chain};
use crate::mtasts::policy::Mode;

/// Addresses of one MX host probed at most.
const MAX_ADDRESSES: usize = 4;

/// A certificate closer to expiry than this gets a warning.
const EXPIRY_WARN: Duration = Duration::from_secs(7 * 86_400);

pub async fn check(
    env: &Env,
    host: &str,
    endpoint: Option<SocketAddr>,
    mx_security: Security,
    dane_expected: bool,
    policy: Option<&FetchedPolicy>,
    f: &mut Findings,
) -> MxReport {
    let mut out = MxReport {
        host: host.to_string(),
        addresses: Vec::new(),
        endpoint: None,
        dane: Verdict::Absent,
        mta_sts: Verdict::Absent,
        tlsa: Vec::new(),
        certificate: None,
    };
    let Some(name) = fqdn(host) else {
        f.fail(
            "mx.address",
            host,
            "not a valid host name",
            "fix the MX record",
        );
        out.dane = Verdict::Fail;
        return out;
    };

    // Addresses.
    let mut addr_security = Security::Secure;
    for rtype in [RecordType::A, RecordType::AAAA] {
        match env.resolver.lookup(&name, rtype).await {
            Ok(a) => {
                for r in &a.records {
                    let ip = match r {
                        RData::A(a) => IpAddr::V4(a.0),
                        RData::AAAA(a) => IpAddr::V6(a.0),
                        _ => continue,
                    };
                    out.addresses.push(ip.to_string());
                }
                if !a.records.is_empty() && a.security != Security::Secure {
                    addr_security = a.security;
                }
            }
            Err(e) => f.fail(
                "mx.address",
                host,
                e.to_string(),
                "fix the MX host's address records",
            ),
        }
    }
    if out.addresses.is_empty() {
        f.fail(
            "mx.address",
            host,
            "no A or AAAA record",
            "publish the MX host's addresses",
        );
    } else {
        f.pass(
            "mx.address",
            host,
            format!("{} ({})", out.addresses.join(", "), addr_security.as_str()),
        );
    }

    // TLSA.
    let records = tlsa_rrset(env, host, mx_security, addr_security, dane_expected, f).await;
    out.tlsa = records.iter().map(Tlsa::presentation).collect();

    // STARTTLS where the config says, else at every address (senders may use any of them).
    let targets: Vec<SocketAddr> = match endpoint {
        Some(e) => vec![e],
        None => out
            .addresses
            .iter()
            .filter_map(|a| a.parse::<IpAddr>().ok())
            .take(MAX_ADDRESSES)
            .map(|ip| SocketAddr::new(ip, env.opts.smtp_port))
            .collect(),
    };
    out.endpoint = targets.first().map(|a| a.to_string());
    let now = SystemTime::now();
    for addr in targets {
        match crate::dane::probe::presented_chain(addr, host, env.opts.timeout).await {
            Ok(chain) => {
                f.pass("smtp.starttls", host, format!("STARTTLS at {addr}"));
                if out.certificate.is_none() {
                    out.certificate = cert_info(&chain[0]);
                }
                if !records.is_empty() {
                    dane_match(env, host, &addr, &records, &chain, now, f);
                }
                webpki(env, host, &addr, &chain, now, policy, f);
            }
            Err(e) => f.fail(
                "smtp.starttls",
                host,
                e.to_string(),
                "make the MX accept connections and offer STARTTLS with its certificate",
            ),
        }
    }

    out.dane = if records.is_empty() && !f.failed(host, &["dane.tlsa"]) {
        Verdict::Absent
    } else if f.failed(
        host,
        &["dane.tlsa", "dane.match", "smtp.starttls", "mx.address"],
    ) || mx_security != Security::Secure
    {
        Verdict::Fail
    } else {
        Verdict::Ok
    };
    out.mta_sts = match policy.map(|p| p.mode) {
        None | Some(Mode::None) => Verdict::Absent,
        Some(mode) => {
            if f.failed(
                host,
                &[
                    "mta-sts.mx-covered",
                    "mta-sts.certificate",
                    "certificate.expiry",
                    "smtp.starttls",
                    "mx.address",
                ],
            ) {
                Verdict::Fail
            } else if mode == Mode::Testing {
                Verdict::Testing
            } else {
                Verdict::Ok
            }
        }
    };
    out
}

async fn tlsa_rrset(
    env: &Env,
    host: &str,
    mx_security: Security,
    addr_security: Security,
    expected: bool,
    f: &mut Findings,
) -> Vec<Tlsa> {
    let owner = format!("_25._tcp.{host}");
    let Some(name) = fqdn(&owner) else {
        return Vec::new();
    };
    let answer = match env.resolver.lookup(&name, RecordType::TLSA).await {
        Ok(a) => a,
        Err(e) => {
            f.fail(
                "dane.tlsa",
                host,
                e.to_string(),
                "fix the TLSA records or the zone's signatures",
            );
            return Vec::new();
        }
    };
    let records: Vec<Tlsa> = answer
        .records
        .iter()
        .filter_map(|r| match r {
            RData::TLSA(t) => Some(Tlsa {
                usage: t.cert_usage.into(),
                selector: t.selector.into(),
                mtype: t.matching.into(),
                data: t.cert_data.clone(),
            }),
            _ => None,
        })
        .collect();
    if records.is_empty() && matches!(answer.security, Security::Bogus | Security::Indeterminate) {
        f.fail(
            "dane.tlsa",
            host,
            format!(
                "the denial of TLSA records at {owner} does not validate ({}): DANE senders defer mail to this MX",
                answer.security.as_str()
            ),
            "fix the zone's signatures (NSEC/NSEC3) for this name",
        );
        return records;
    }
    if records.is_empty() {
        if expected {
            f.fail(
                "dane.tlsa",
                host,
                format!("no TLSA records at {owner}"),
                "publish the MX key's 3 1 1 record (mxguard does it for an [[mx]] with a zone it serves)",
            );
        }
        return records;
    }
    if answer.security != Security::Secure {
        f.fail(
            "dane.tlsa",
            host,
            format!(
                "TLSA at {owner} is {}: senders ignore unvalidated TLSA records",
                answer.security.as_str()
            ),
            "sign the zone and register its DS at the parent",
        );
        return records;
    }
    if mx_security != Security::Secure || addr_security != Security::Secure {
        f.fail(
            "dane.tlsa",
            host,
            format!(
                "TLSA is secure but the MX RRset is {} and the address records are {}: DANE senders do not use it (RFC 7672 §2.2)",
                mx_security.as_str(),
                addr_security.as_str()
            ),
            "sign the zone that holds the MX and address records",
        );
        return records;
    }
    if !records.iter().any(Tlsa::usable) {
        f.fail(
            "dane.tlsa",
            host,
            format!(
                "no usable TLSA record at {owner} (SMTP uses usages 2 and 3, selectors 0/1, matching types 0-2)",
            ),
            "publish a 3 1 1 record of the MX key",
        );
        return records;
    }
    f.pass(
        "dane.tlsa",
        host,
        format!("{} record(s) at {owner}, secure", records.len()),
    );
    records
}

fn dane_match(
    env: &Env,
    host: &str,
    addr: &SocketAddr,
    records: &[Tlsa],
    chain: &[CertificateDer<'static>],
    now: SystemTime,
    f: &mut Findings,
) {
    let _ = env;
    let at = UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    let verify_to = |ta: &CertificateDer<'static>| {
        let mut store = rustls::RootCertStore::empty();
        store.add(ta.clone()).map_err(|e| e.to_string())?;
        // The chain up to (not including) the trust anchor.
        let upto: Vec<CertificateDer<'static>> = chain
            .iter()
            .take_while(|c| c.as_ref() != ta.as_ref())
            .cloned()
            .collect();
        super::pki::verify_chain(&std::sync::Arc::new(store), &upto, host, at)
    };
    match match_chain(records, chain, verify_to) {
        Match::EndEntity(r) | Match::TrustAnchor(r) => f.pass(
            "dane.match",
            host,
            format!("the chain at {addr} matches {r}"),
        ),
        Match::TrustAnchorChainInvalid(r, e) => f.fail(
            "dane.match",
            host,
            format!("{r} matches a CA of the chain at {addr}, but the chain below it fails: {e}"),
            "present a chain that is valid for the MX name under the DANE-TA certificate",
        ),
        Match::None => {
            let key = crate::x509::spki_of_cert(&chain[0])
                .map(|s| crate::dane::probe::key_id(&s))
                .unwrap_or_else(|| "(unparseable)".into());
            f.fail(
                "dane.match",
                host,
                format!(
                    "the key presented at {addr} (3 1 1 {key}) matches no TLSA record ({})",
                    records
                        .iter()
                        .map(Tlsa::presentation)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "publish the live key's TLSA record, or deploy the key the records name",
            );
        }
    }
}

fn webpki(
    env: &Env,
    host: &str,
    addr: &SocketAddr,
    chain: &[CertificateDer<'static>],
    now: SystemTime,
    policy: Option<&FetchedPolicy>,
    f: &mut Findings,
) {
    let at = UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    let needed = policy.is_some_and(|p| p.mode != Mode::None);
    match super::pki::verify_chain(&env.roots, chain, host, at) {
        Ok(()) => f.pass(
            "mta-sts.certificate",
            host,
            "valid for the MX name under WebPKI",
        ),
        Err(e) if needed => f.fail(
            "mta-sts.certificate",
            host,
            format!("WebPKI at {addr}: {e}"),
            "deploy a certificate from a public CA that names the MX host, with its chain",
        ),
        Err(e) => f.skip(
            "mta-sts.certificate",
            host,
            format!("WebPKI at {addr}: {e} (no MTA-STS policy requires it)"),
        ),
    }
    if let Some((_, not_after)) = crate::x509::validity(&chain[0]) {
        let left = not_after.duration_since(now).ok();
        match left {
            None => {
                let fix = "renew the certificate";
                let seen = format!("expired {} (at {addr})", rfc3339(not_after));
                if needed {
                    f.fail("certificate.expiry", host, seen, fix);
                } else {
                    f.warn("certificate.expiry", host, seen, fix);
                }
            }
            Some(l) if l < EXPIRY_WARN => f.warn(
                "certificate.expiry",
                host,
                format!(
                    "expires {} (in {} h)",
                    rfc3339(not_after),
                    l.as_secs() / 3600
                ),
                "renew the certificate",
            ),
            Some(_) => f.pass(
                "certificate.expiry",
                host,
                format!("valid until {}", rfc3339(not_after)),
            ),
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

fn cert_info(leaf: &CertificateDer<'_>) -> Option<CertInfo> {
    let spki = crate::x509::spki_of_cert(leaf)?;
    let (_, not_after) = crate::x509::validity(leaf)?;
    let (names, issuer) = crate::x509::names_and_issuer(leaf)?;
    Some(CertInfo {
        key: crate::dane::probe::key_id(&spki),
        names,
        not_after: rfc3339(not_after),
        issuer,
    })
}
