//! The checks of one mail domain: MX RRset, `_mta-sts` TXT and the policy over HTTPS,
//! `_smtp._tls` TXT, CAA, the DS at the parent; then each MX host ([`super::mx`]); then the
//! verdicts.

use std::sync::Arc;

use hickory_proto::rr::{Name, RData, RecordType};
use rustls::RootCertStore;

use super::policy::FetchedPolicy;
use super::report::{DomainReport, Findings, MxReport, Verdict};
use super::resolve::{Resolver, Security};
use super::{CaaExpect, Options, Target};
use crate::mtasts::policy::Mode;

/// What every domain check shares.
pub struct Env {
    pub resolver: Arc<Resolver>,
    pub roots: Arc<RootCertStore>,
    pub opts: Options,
}

/// MX hosts checked per domain at most.
const MAX_MX: usize = 10;

pub(crate) fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).ok()
}

/// A name as hosts are compared: lowercase, no trailing dot.
pub(crate) fn host_of(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// The strings of TXT records, each record's character-strings joined (RFC 7208 §3.3 style).
fn txt_strings(records: &[RData]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match r {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect()
}

pub async fn check(env: &Env, t: &Target) -> DomainReport {
    let d = t.domain.as_str();
    let mut f = Findings::default();
    let mut report = DomainReport {
        domain: d.to_string(),
        dane: Verdict::Absent,
        mta_sts: Verdict::Absent,
        tls_rpt: Verdict::Absent,
        policy_mode: None,
        mx: Vec::new(),
        checks: Vec::new(),
    };
    let Some(apex) = fqdn(d) else {
        f.fail(
            "domain",
            d,
            "not a valid domain name",
            "give a domain such as example.com",
        );
        report.checks = f.0;
        return report;
    };

    // MX RRset.
    let (mx_hosts, mx_security) = mx_rrset(env, &apex, d, &mut f).await;

    // MTA-STS: the TXT record, then the policy.
    let txt_present = mta_sts_txt(env, &apex, d, t.expect.mta_sts, &mut f).await;
    let policy = if txt_present || t.expect.mta_sts {
        super::policy::fetch(env, t, &mx_hosts, &mut f).await
    } else {
        None
    };

    report.tls_rpt = tls_rpt(env, &apex, d, t.expect.tls_rpt, &mut f).await;
    if let Some(caa) = &t.expect.caa {
        check_caa(env, &apex, d, caa, &mut f).await;
    }
    ds_at_parent(env, &apex, d, t.expect.dnssec, &mut f).await;

    for host in mx_hosts.iter().take(MAX_MX) {
        let endpoint = t
            .endpoints
            .iter()
            .find_map(|(h, a)| (h == host).then_some(*a));
        let m = super::mx::check(
            env,
            host,
            endpoint,
            mx_security,
            t.expect.dane.contains(host),
            policy.as_ref(),
            &mut f,
        )
        .await;
        report.mx.push(m);
    }
    if mx_hosts.len() > MAX_MX {
        f.warn(
            "dns.mx",
            d,
            format!(
                "{} MX hosts; the first {MAX_MX} were checked",
                mx_hosts.len()
            ),
            "check the others with --domain on a domain that lists them",
        );
    }
    for h in &t.expect.dane {
        if !mx_hosts.contains(h) && !mx_hosts.is_empty() {
            f.warn(
                "dns.mx",
                h,
                "configured with a certificate ([[mx]]) but not in the domain's MX RRset",
                "add it to the zone's MX records or remove the [[mx]] entry",
            );
        }
    }

    report.policy_mode = policy.as_ref().map(|p| p.mode.as_str().to_string());
    report.mta_sts = mta_sts_verdict(d, txt_present, policy.as_ref(), &report.mx, &f);
    report.dane = dane_verdict(d, &report.mx, &mut f);
    report.checks = f.0;
    report
}

async fn mx_rrset(env: &Env, apex: &Name, d: &str, f: &mut Findings) -> (Vec<String>, Security) {
    match env.resolver.lookup(apex, RecordType::MX).await {
        Ok(a) => {
            let mut mx: Vec<(u16, String)> = a
                .records
                .iter()
                .filter_map(|r| match r {
                    RData::MX(m) => Some((m.preference, host_of(&m.exchange))),
                    _ => None,
                })
                .collect();
            mx.sort();
            if mx.is_empty() {
                f.fail(
                    "dns.mx",
                    d,
                    "no MX records",
                    "publish the MX RRset of the domain",
                );
            } else if mx.len() == 1 && mx[0].1.is_empty() {
                f.fail(
                    "dns.mx",
                    d,
                    "null MX (RFC 7505): the domain accepts no mail",
                    "publish the real MX hosts",
                );
                return (Vec::new(), a.security);
            } else if a.security == Security::Secure {
                f.pass("dns.mx", d, format!("{} MX, secure", mx.len()));
            } else {
                f.warn(
                    "dns.mx",
                    d,
                    format!("{} MX, {}", mx.len(), a.security.as_str()),
                    "sign the zone and register its DS: DANE needs a validated MX RRset",
                );
            }
            let mut hosts: Vec<String> = Vec::new();
            for (_, h) in mx {
                if !hosts.contains(&h) {
                    hosts.push(h);
                }
            }
            (hosts, a.security)
        }
        Err(e) => {
            f.fail(
                "dns.mx",
                d,
                e.to_string(),
                "fix the zone's signatures or the MX records",
            );
            (Vec::new(), Security::Bogus)
        }
    }
}

/// `_mta-sts` TXT: exactly one `v=STSv1` record with a valid id. True when one is there.
async fn mta_sts_txt(env: &Env, apex: &Name, d: &str, expected: bool, f: &mut Findings) -> bool {
    let Ok(name) = Name::from_ascii("_mta-sts").and_then(|l| l.append_domain(apex)) else {
        return false;
    };
    let answer = match env.resolver.lookup(&name, RecordType::TXT).await {
        Ok(a) => a,
        Err(e) => {
            f.fail(
                "mta-sts.txt",
                d,
                e.to_string(),
                "fix the _mta-sts TXT record or the zone's signatures",
            );
            return false;
        }
    };
    let sts: Vec<String> = txt_strings(&answer.records)
        .into_iter()
        .filter(|s| s.starts_with("v=STSv1"))
        .collect();
    match sts.as_slice() {
        [] if expected => {
            f.fail(
                "mta-sts.txt",
                d,
                "no _mta-sts TXT record with v=STSv1: senders never fetch the policy",
                "publish \"v=STSv1; id=…\" at _mta-sts (mxguard policy prints it)",
            );
            false
        }
        [] => false,
        [one] => {
            match sts_id(one) {
                Ok(id) => f.pass("mta-sts.txt", d, format!("id={id}")),
                Err(e) => f.fail(
                    "mta-sts.txt",
                    d,
                    format!("{one:?}: {e}"),
                    "publish \"v=STSv1; id=<1-32 letters or digits>\"",
                ),
            }
            true
        }
        many => {
            f.fail(
                "mta-sts.txt",
                d,
                format!(
                    "{} v=STSv1 records: senders ignore them all (RFC 8461 §3.1)",
                    many.len()
                ),
                "keep exactly one _mta-sts TXT record",
            );
            true
        }
    }
}

/// The id of a `v=STSv1; id=…` record (RFC 8461 §3.1).
fn sts_id(txt: &str) -> Result<String, String> {
    let mut fields = txt.split(';').map(str::trim);
    if fields.next() != Some("v=STSv1") {
        return Err("must start with v=STSv1;".into());
    }
    for field in fields {
        if let Some(id) = field.strip_prefix("id=") {
            if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!("id {id:?} is not 1-32 letters or digits"));
            }
            return Ok(id.to_string());
        }
    }
    Err("no id field".into())
}

async fn tls_rpt(env: &Env, apex: &Name, d: &str, expected: bool, f: &mut Findings) -> Verdict {
    let Ok(name) = Name::from_ascii("_smtp._tls").and_then(|l| l.append_domain(apex)) else {
        return Verdict::Absent;
    };
    let answer = match env.resolver.lookup(&name, RecordType::TXT).await {
        Ok(a) => a,
        Err(e) => {
            f.fail(
                "tls-rpt.txt",
                d,
                e.to_string(),
                "fix the _smtp._tls TXT record or the zone's signatures",
            );
            return Verdict::Fail;
        }
    };
    let rpt: Vec<String> = txt_strings(&answer.records)
        .into_iter()
        .filter(|s| s.starts_with("v=TLSRPTv1"))
        .collect();
    match rpt.as_slice() {
        [] => {
            if expected {
                f.fail(
                    "tls-rpt.txt",
                    d,
                    "no _smtp._tls TXT record with v=TLSRPTv1: senders send no reports",
                    "publish \"v=TLSRPTv1; rua=…\" at _smtp._tls",
                );
                Verdict::Fail
            } else {
                Verdict::Absent
            }
        }
        [one] => match rua_uris(one) {
            Ok(uris) => {
                f.pass("tls-rpt.txt", d, format!("rua={}", uris.join(",")));
                Verdict::Ok
            }
            Err(e) => {
                f.fail(
                    "tls-rpt.txt",
                    d,
                    format!("{:?}: {e}", crate::logfield::untrusted(one).to_string()),
                    "publish \"v=TLSRPTv1; rua=mailto:…\" or rua=https://… (RFC 8460 §3)",
                );
                Verdict::Fail
            }
        },
        many => {
            f.fail(
                "tls-rpt.txt",
                d,
                format!("{} v=TLSRPTv1 records: senders ignore them all", many.len()),
                "keep exactly one _smtp._tls TXT record",
            );
            Verdict::Fail
        }
    }
}

/// The report URIs of a TLS-RPT record (RFC 8460 §3): `mailto:` or `https:`.
fn rua_uris(txt: &str) -> Result<Vec<String>, String> {
    let mut fields = txt.split(';').map(str::trim);
    if fields.next() != Some("v=TLSRPTv1") {
        return Err("must start with v=TLSRPTv1;".into());
    }
    let rua = fields
        .find_map(|f| f.strip_prefix("rua="))
        .ok_or("no rua field")?;
    let uris: Vec<String> = rua.split(',').map(|u| u.trim().to_string()).collect();
    for u in &uris {
        let ok = match u.split_once(':') {
            Some(("mailto", addr)) => addr.contains('@') && !addr.starts_with('@'),
            Some(("https", rest)) => rest.starts_with("//") && rest.len() > 2,
            _ => false,
        };
        if !ok {
            return Err(format!("{u:?} is not a mailto: or https: URI"));
        }
    }
    Ok(uris)
}

/// CAA (RFC 8659 §3: the closest RRset up the tree) must let the configured CA issue, for the
/// account in use (RFC 8657 `accounturi`) and the challenge types in use.
async fn check_caa(env: &Env, apex: &Name, d: &str, want: &CaaExpect, f: &mut Findings) {
    let mut name = apex.clone();
    let mut found: Option<(Name, Vec<RData>)> = None;
    for _ in 0..10 {
        match env.resolver.lookup(&name, RecordType::CAA).await {
            Ok(a) if !a.records.is_empty() => {
                found = Some((name.clone(), a.records));
                break;
            }
            Ok(_) => {}
            Err(e) => {
                f.fail(
                    "caa",
                    d,
                    e.to_string(),
                    "fix the CAA records or the zone's signatures",
                );
                return;
            }
        }
        if name.is_root() {
            break;
        }
        name = name.base_name();
    }
    let Some((at, records)) = found else {
        f.pass("caa", d, "no CAA records: any CA may issue");
        return;
    };
    let issue: Vec<&hickory_proto::rr::rdata::CAA> = records
        .iter()
        .filter_map(|r| match r {
            RData::CAA(c) if c.tag.eq_ignore_ascii_case("issue") => Some(c),
            _ => None,
        })
        .collect();
    if issue.is_empty() {
        f.pass(
            "caa",
            d,
            format!("CAA at {} has no issue property", host_of(&at)),
        );
        return;
    }
    let mut seen = Vec::new();
    for c in &issue {
        let value = String::from_utf8_lossy(&c.value).to_string();
        seen.push(value.clone());
        let mut parts = value.split(';').map(str::trim);
        let issuer = parts.next().unwrap_or("").trim_end_matches('.');
        if !issuer.eq_ignore_ascii_case(&want.issuer) {
            continue;
        }
        let mut ok = true;
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            match k.trim() {
                "accounturi" if want.account.as_deref() != Some(v.trim()) => ok = false,
                "validationmethods" => {
                    let allowed: Vec<&str> = v.split(',').map(str::trim).collect();
                    if !want.methods.iter().all(|m| allowed.contains(&m.as_str())) {
                        ok = false;
                    }
                }
                _ => {}
            }
        }
        if ok {
            f.pass(
                "caa",
                d,
                format!("CAA at {} allows {}", host_of(&at), want.issuer),
            );
            return;
        }
    }
    f.fail(
        "caa",
        d,
        format!(
            "CAA at {} does not let {} issue for account {} with {}: {}",
            host_of(&at),
            want.issuer,
            want.account.as_deref().unwrap_or("(none yet)"),
            want.methods.join(","),
            crate::logfield::untrusted(seen.join(" | "))
        ),
        "publish CAA 0 issue with the CA's issuer domain, the account URL and the challenge types in use (acme.caa = true does it)",
    );
}

/// The DS at the parent matches a DNSKEY of the zone.
async fn ds_at_parent(env: &Env, apex: &Name, d: &str, expected: bool, f: &mut Findings) {
    if env.resolver.anchored_at(apex) {
        f.skip(
            "dnssec.ds",
            d,
            "the trust anchor is the zone's own key: the DS at the parent is not part of this validation",
        );
        return;
    }
    let ds = match env.resolver.lookup(apex, RecordType::DS).await {
        Ok(a) => a,
        Err(e) => {
            f.fail(
                "dnssec.ds",
                d,
                e.to_string(),
                "give the registrar the DS that `mxguard ds` prints",
            );
            return;
        }
    };
    if ds.records.is_empty() || ds.security != Security::Secure {
        let seen = format!(
            "no validated DS at the parent ({} answer): resolvers treat the zone as unsigned",
            ds.security.as_str()
        );
        let fix = "give the registrar the DS that `mxguard ds` prints";
        if expected {
            f.fail("dnssec.ds", d, seen, fix);
        } else {
            f.warn("dnssec.ds", d, seen, fix);
        }
        return;
    }
    let keys = match env.resolver.lookup(apex, RecordType::DNSKEY).await {
        Ok(k) => k,
        Err(e) => {
            f.fail("dnssec.ds", d, e.to_string(), "fix the zone's DNSKEY RRset");
            return;
        }
    };
    let matched = ds.records.iter().any(|r| {
        let RData::DNSSEC(hickory_proto::dnssec::rdata::DNSSECRData::DS(ds)) = r else {
            return false;
        };
        keys.records.iter().any(|k| match k {
            RData::DNSSEC(hickory_proto::dnssec::rdata::DNSSECRData::DNSKEY(k)) => {
                super::resolve::ds_matches(ds, k, apex)
            }
            _ => false,
        })
    });
    if matched && keys.security == Security::Secure {
        f.pass(
            "dnssec.ds",
            d,
            "the DS at the parent matches a DNSKEY, secure",
        );
    } else {
        f.fail(
            "dnssec.ds",
            d,
            format!(
                "the DS at the parent matches no DNSKEY the zone serves (DNSKEY {})",
                keys.security.as_str()
            ),
            "give the registrar the DS that `mxguard ds` prints and remove the stale one",
        );
    }
}

fn mta_sts_verdict(
    d: &str,
    txt_present: bool,
    policy: Option<&FetchedPolicy>,
    mx: &[MxReport],
    f: &Findings,
) -> Verdict {
    let domain_failed = f.0.iter().any(|x| {
        x.status == super::Status::Fail
            && x.check.starts_with("mta-sts.")
            && (x.host == d || x.host == format!("mta-sts.{d}"))
    });
    if !txt_present && policy.is_none() && !domain_failed {
        return Verdict::Absent;
    }
    if domain_failed || policy.is_none() || mx.iter().any(|m| m.mta_sts == Verdict::Fail) {
        return Verdict::Fail;
    }
    match policy.map(|p| p.mode) {
        Some(Mode::Enforce) => Verdict::Ok,
        Some(Mode::Testing) => Verdict::Testing,
        _ => Verdict::Absent,
    }
}

fn dane_verdict(d: &str, mx: &[MxReport], f: &mut Findings) -> Verdict {
    if mx.is_empty() {
        return if f.failed(d, &["dns.mx"]) {
            Verdict::Fail
        } else {
            Verdict::Absent
        };
    }
    let ok = mx.iter().filter(|m| m.dane == Verdict::Ok).count();
    let absent = mx.iter().filter(|m| m.dane == Verdict::Absent).count();
    if absent == mx.len() {
        return Verdict::Absent;
    }
    if ok == mx.len() {
        return Verdict::Ok;
    }
    if ok + absent == mx.len() {
        let without: Vec<&str> = mx
            .iter()
            .filter(|m| m.dane == Verdict::Absent)
            .map(|m| m.host.as_str())
            .collect();
        f.fail(
            "dane.coverage",
            d,
            format!(
                "{} without TLSA records: DANE senders deliver there unauthenticated",
                without.join(", ")
            ),
            "publish TLSA records for every MX host (an [[mx]] entry per host)",
        );
    }
    Verdict::Fail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_record_needs_version_first_and_a_short_alphanumeric_id() {
        assert_eq!(sts_id("v=STSv1; id=20260101abc").unwrap(), "20260101abc");
        assert!(sts_id("v=STSv1;").is_err());
        assert!(sts_id("id=1; v=STSv1").is_err());
        assert!(sts_id("v=STSv1; id=has-dash").is_err());
        assert!(sts_id(&format!("v=STSv1; id={}", "a".repeat(33))).is_err());
    }

    #[test]
    fn tls_rpt_record_accepts_mailto_and_https_only() {
        assert_eq!(
            rua_uris("v=TLSRPTv1; rua=mailto:r@example.com,https://r.example.com/x").unwrap(),
            ["mailto:r@example.com", "https://r.example.com/x"]
        );
        assert!(rua_uris("v=TLSRPTv1;").is_err());
        assert!(rua_uris("v=TLSRPTv1; rua=ftp://x").is_err());
        assert!(rua_uris("v=TLSRPTv1; rua=mailto:@x").is_err());
    }
}
