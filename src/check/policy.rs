//! The MTA-STS policy as a sender fetches it: `https://mta-sts.<domain>/.well-known/mta-sts.txt`
//! under WebPKI, parsed and compared with the MX RRset. Must not judge the other records
//! ([`super::domain`] does).

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::{Name, RData, RecordType};

use super::Target;
use super::domain::{Env, fqdn, host_of};
use super::report::Findings;
use crate::mtasts::policy::{self, Mode};

/// A policy as fetched and parsed.
pub struct FetchedPolicy {
    pub mode: Mode,
    /// Lowercase patterns.
    pub mx: Vec<String>,
}

/// The first address of `host`, IPv4 first.
async fn address_of(env: &Env, host: &Name) -> Result<IpAddr, String> {
    for rtype in [RecordType::A, RecordType::AAAA] {
        match env.resolver.lookup(host, rtype).await {
            Ok(a) => {
                if let Some(ip) = a.records.iter().find_map(|r| match r {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                }) {
                    return Ok(ip);
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("{} has no A or AAAA record", host_of(host)))
}

/// Fetches and checks the domain's MTA-STS policy over HTTPS as a sender does: the
/// `mta-sts` host's address, WebPKI, the policy's syntax, and whether its `mx` patterns cover
/// `mx_hosts`.
pub(super) async fn fetch(
    env: &Env,
    t: &Target,
    mx_hosts: &[String],
    f: &mut Findings,
) -> Option<FetchedPolicy> {
    let d = t.domain.as_str();
    let host = format!("mta-sts.{d}");
    let fix_fetch = "serve the policy at https://mta-sts.<domain>/.well-known/mta-sts.txt with a certificate valid for that name";
    let name = fqdn(&host)?;
    let ip = match address_of(env, &name).await {
        Ok(ip) => ip,
        Err(e) => {
            f.fail(
                "mta-sts.fetch",
                &host,
                e,
                "publish the policy host's address",
            );
            return None;
        }
    };
    let addr = SocketAddr::new(ip, t.https_port);
    let got = match super::pki::fetch_policy(addr, &host, &env.roots, env.opts.timeout).await {
        Ok(g) => g,
        Err(e) => {
            f.fail("mta-sts.fetch", &host, e, fix_fetch);
            return None;
        }
    };
    if got.status != 200 {
        let redirect = got
            .location
            .as_deref()
            .map(|l| {
                format!(
                    " (redirect to {}: senders do not follow redirects)",
                    crate::logfield::untrusted(l)
                )
            })
            .unwrap_or_default();
        f.fail(
            "mta-sts.fetch",
            &host,
            format!(
                "GET /.well-known/mta-sts.txt answered HTTP {}{redirect}",
                got.status
            ),
            fix_fetch,
        );
        return None;
    }
    f.pass("mta-sts.fetch", &host, format!("HTTP 200 from {addr}"));
    let media = got
        .content_type
        .as_deref()
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase());
    if media.as_deref() != Some("text/plain") {
        f.fail(
            "mta-sts.content-type",
            &host,
            format!(
                "Content-Type {}",
                got.content_type
                    .as_deref()
                    .map(|c| format!("{:?}", crate::logfield::untrusted(c).to_string()))
                    .unwrap_or_else(|| "missing".into())
            ),
            "serve the policy as text/plain (RFC 8461 §3.2)",
        );
    }
    let Ok(text) = String::from_utf8(got.body) else {
        f.fail(
            "mta-sts.syntax",
            &host,
            "the policy is not UTF-8 text",
            "serve the policy as plain text",
        );
        return None;
    };
    if text.replace("\r\n", "").contains('\n') {
        f.warn(
            "mta-sts.syntax",
            &host,
            "lines end with LF, not CRLF (accepted by the ABNF; strict senders may refuse)",
            "end every policy line with CRLF (RFC 8461 §3.2)",
        );
    }
    let parsed = match policy::parse(&text) {
        Ok(p) => p,
        Err(e) => {
            f.fail(
                "mta-sts.syntax",
                &host,
                format!("policy: {}", crate::logfield::untrusted(e)),
                "serve \"version: STSv1\", mode, mx and max_age lines (RFC 8461 §3.2)",
            );
            return None;
        }
    };
    if parsed.max_age > policy::MAX_AGE_LIMIT {
        f.fail(
            "mta-sts.max-age",
            &host,
            format!("max_age {} is above 31557600", parsed.max_age),
            "use at most 31557600 seconds",
        );
    } else if parsed.max_age < policy::MAX_AGE_WARN_BELOW {
        f.warn(
            "mta-sts.max-age",
            &host,
            format!("max_age {} (less than a day)", parsed.max_age),
            "use at least 86400 (a week or more once it works)",
        );
    } else {
        f.pass(
            "mta-sts.max-age",
            &host,
            format!("max_age {}", parsed.max_age),
        );
    }
    let patterns: Vec<String> = parsed
        .mx
        .iter()
        .map(|p| p.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    if parsed.mode != Mode::None && patterns.is_empty() {
        f.fail(
            "mta-sts.syntax",
            &host,
            "no mx patterns",
            "list every MX host (or a *. pattern) in the policy",
        );
    }
    for mx in mx_hosts {
        if patterns.iter().any(|p| policy::pattern_matches(p, mx)) {
            f.pass("mta-sts.mx-covered", mx, "matched by the policy");
        } else {
            let what = if parsed.mode == Mode::Enforce {
                "senders enforcing the policy will not deliver to it"
            } else {
                "senders report every delivery to it as a failure"
            };
            f.fail(
                "mta-sts.mx-covered",
                mx,
                format!(
                    "in the MX RRset but matched by no policy mx pattern ({}): {what}",
                    crate::logfield::untrusted(patterns.join(", "))
                ),
                format!("add \"{mx}\" to the policy's mx list"),
            );
        }
    }
    for p in &patterns {
        if !mx_hosts.is_empty() && !mx_hosts.iter().any(|mx| policy::pattern_matches(p, mx)) {
            f.warn(
                "mta-sts.dead-pattern",
                d,
                format!("policy mx pattern {p:?} matches no host of the MX RRset"),
                "remove it from the policy, or add the host to the MX records",
            );
        }
    }
    if parsed.mode == Mode::None {
        f.warn(
            "mta-sts.mode",
            &host,
            "mode none: senders drop the policy",
            "use testing or enforce unless the policy is being withdrawn",
        );
    }
    Some(FetchedPolicy {
        mode: parsed.mode,
        mx: patterns,
    })
}
