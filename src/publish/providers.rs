//! Provider APIs for push mode (built with `--features providers`, through the `dns-update`
//! crate): which providers exist, their credential files, and the client and record types of
//! each. Owns nothing that persists; must not decide what or when to push ([`super::push`]
//! does).

use std::collections::BTreeMap;

#[cfg(feature = "providers")]
use hickory_proto::rr::RData;

#[cfg(feature = "providers")]
use super::push::{ProviderSettings, TIMEOUT};

/// The provider APIs this build can push to.
pub(crate) const PROVIDERS: &[&str] = &[
    "cloudflare",
    "desec",
    "digitalocean",
    "gandi",
    "hetzner",
    "ovh",
    "pebble-challtestsrv",
    "powerdns",
    "route53",
];

/// The keys a provider's `token_file` must hold when it is a `key = value` credentials file
/// (Route 53: the AWS shared-credentials format; OVH: its three API keys); the other
/// providers' token file is the token itself.
pub(crate) fn credential_keys(provider: &str) -> &'static [&'static str] {
    match provider {
        "route53" => &["aws_access_key_id", "aws_secret_access_key"],
        "ovh" => &["application_key", "application_secret", "consumer_key"],
        _ => &[],
    }
}

/// OVH API endpoints (`endpoint = …` in its credentials file).
pub(crate) const OVH_ENDPOINTS: &[&str] = &[
    "ovh-eu",
    "ovh-us",
    "ovh-ca",
    "kimsufi-eu",
    "kimsufi-ca",
    "soyoustart-eu",
    "soyoustart-ca",
];

/// The `key = value` lines of one section of a credentials file: `[default]` when there is
/// one, else the lines before the first `[section]` header, else the first section (blank
/// lines and `#`/`;` comments skipped; keys without case). An error names the first required
/// key missing, or an unknown OVH endpoint.
pub(crate) fn credentials(provider: &str, text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut sections: Vec<(String, BTreeMap<String, String>)> =
        vec![(String::new(), BTreeMap::new())];
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.trim().to_string(), BTreeMap::new()));
            continue;
        }
        if let Some((k, v)) = line.split_once('=')
            && let Some((_, section)) = sections.last_mut()
        {
            section
                .entry(k.trim().to_ascii_lowercase())
                .or_insert_with(|| v.trim().to_string());
        }
    }
    // `[default]`, else the lines before any header, else the first section.
    let pick = sections
        .iter()
        .position(|(n, _)| n == "default")
        .or_else(|| (!sections[0].1.is_empty()).then_some(0))
        .unwrap_or(if sections.len() > 1 { 1 } else { 0 });
    let out = sections.swap_remove(pick).1;
    for k in credential_keys(provider) {
        if out.get(*k).is_none_or(|v| v.is_empty()) {
            return Err(format!("{provider} credentials need a line `{k} = …`"));
        }
    }
    if provider == "ovh"
        && let Some(e) = out.get("endpoint")
        && !OVH_ENDPOINTS.contains(&e.as_str())
    {
        return Err(format!(
            "unknown OVH endpoint {e:?}: one of {}",
            OVH_ENDPOINTS.join(", ")
        ));
    }
    Ok(out)
}

#[cfg(feature = "providers")]
pub(super) fn provider_client(p: &ProviderSettings) -> Result<dns_update::DnsUpdater, String> {
    use dns_update::DnsUpdater as U;
    let token = || -> Result<String, String> {
        let f = p
            .token_file
            .as_ref()
            .ok_or(format!("provider {} needs token_file", p.name))?;
        std::fs::read_to_string(f)
            .map(|t| t.trim().to_string())
            .map_err(|e| format!("{}: {e}", f.display()))
    };
    let e = |x: dns_update::Error| format!("provider {}: {x}", p.name);
    match p.name.as_str() {
        "cloudflare" => U::new_cloudflare(token()?, Some(TIMEOUT)).map_err(e),
        "desec" => U::new_desec(token()?, Some(TIMEOUT)).map_err(e),
        "digitalocean" => U::new_digitalocean(token()?, Some(TIMEOUT)).map_err(e),
        "hetzner" => U::new_hetzner(token()?, Some(TIMEOUT)).map_err(e),
        "pebble-challtestsrv" => Ok(U::new_pebble(
            p.api_url
                .as_deref()
                .ok_or("pebble-challtestsrv needs api_url")?,
            Some(TIMEOUT),
        )),
        // PowerDNS's own HTTP API (`api=yes`): the server at api_url (default
        // http://localhost:8081), the API key in token_file.
        "powerdns" => {
            U::new_pdns(token()?, p.api_url.as_deref(), None::<&str>, Some(TIMEOUT)).map_err(e)
        }
        "gandi" => U::new_gandiv5(token()?, Some(TIMEOUT)).map_err(e),
        // token_file: the AWS shared-credentials format (`aws_access_key_id = …`,
        // `aws_secret_access_key = …`, optional `aws_session_token`, `region`); api_url: another
        // endpoint.
        "route53" => {
            let mut c = credentials("route53", &token()?)?;
            U::new_route53(dns_update::providers::route53::Route53Config {
                access_key_id: c.remove("aws_access_key_id").unwrap_or_default(),
                secret_access_key: c.remove("aws_secret_access_key").unwrap_or_default(),
                session_token: c.remove("aws_session_token"),
                region: c.remove("region"),
                hosted_zone_id: c.remove("hosted_zone_id"),
                private_zone_only: None,
                endpoint: p.api_url.clone(),
            })
            .map_err(e)
        }
        // token_file: `application_key`, `application_secret`, `consumer_key`, optional
        // `endpoint` (ovh-eu, the default; ovh-us, ovh-ca, kimsufi-eu, …).
        "ovh" => {
            let c = credentials("ovh", &token()?)?;
            let get = |k: &str| c.get(k).cloned().unwrap_or_default();
            let endpoint = c
                .get("endpoint")
                .map_or("ovh-eu", String::as_str)
                .parse::<dns_update::providers::ovh::OvhEndpoint>()
                .map_err(e)?;
            U::new_ovh(
                get("application_key"),
                get("application_secret"),
                get("consumer_key"),
                endpoint,
                Some(TIMEOUT),
            )
            .map_err(e)
        }
        other => Err(format!("unknown provider {other:?}")),
    }
}

/// A managed record in the provider API's terms.
#[cfg(feature = "providers")]
pub(super) fn api_record(data: &RData) -> Option<dns_update::DnsRecord> {
    use dns_update::{DnsRecord, TLSARecord, TlsaCertUsage, TlsaMatching, TlsaSelector};
    match data {
        RData::TXT(t) => Some(DnsRecord::TXT(
            t.txt_data
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect(),
        )),
        RData::TLSA(t) => Some(DnsRecord::TLSA(TLSARecord {
            cert_usage: match u8::from(t.cert_usage) {
                0 => TlsaCertUsage::PkixTa,
                1 => TlsaCertUsage::PkixEe,
                2 => TlsaCertUsage::DaneTa,
                _ => TlsaCertUsage::DaneEe,
            },
            selector: match u8::from(t.selector) {
                0 => TlsaSelector::Full,
                _ => TlsaSelector::Spki,
            },
            matching: match u8::from(t.matching) {
                0 => TlsaMatching::Raw,
                2 => TlsaMatching::Sha512,
                _ => TlsaMatching::Sha256,
            },
            cert_data: t.cert_data.clone(),
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_files_are_read_and_checked() {
        let aws = "# comment\n[prod]\naws_access_key_id = AKIA2\naws_session_token = t2\n[default]\naws_access_key_id = AKIA1\nAWS_SECRET_ACCESS_KEY=s3cr=t\n";
        let c = credentials("route53", aws).unwrap();
        assert_eq!(c["aws_access_key_id"], "AKIA1", "the default profile's");
        assert_eq!(c["aws_secret_access_key"], "s3cr=t");
        assert!(
            !c.contains_key("aws_session_token"),
            "nothing from another profile"
        );
        let one = "[prod]\naws_access_key_id = AKIA2\naws_secret_access_key = x\n[dev]\n";
        assert_eq!(
            credentials("route53", one).unwrap()["aws_access_key_id"],
            "AKIA2"
        );
        let bad =
            "application_key = a\napplication_secret = b\nconsumer_key = c\nendpoint = mars\n";
        let e = credentials("ovh", bad).unwrap_err();
        assert!(e.contains("unknown OVH endpoint"), "{e}");
        let e = credentials("ovh", "application_key = a\nconsumer_key = c\n").unwrap_err();
        assert!(e.contains("application_secret"), "{e}");
        let e =
            credentials("route53", "aws_access_key_id =\naws_secret_access_key = x").unwrap_err();
        assert!(
            e.contains("aws_access_key_id"),
            "an empty value is missing: {e}"
        );
        assert!(credentials("cloudflare", "just-a-token").is_ok());
    }

    /// The wired provider APIs build their clients from their credentials (calling them needs
    /// the provider: these are compile-and-configure only).
    #[cfg(feature = "providers")]
    #[test]
    fn every_provider_builds_its_client() {
        let dir = tempfile::tempdir().unwrap();
        for name in PROVIDERS {
            let text = match *name {
                "route53" => {
                    "aws_access_key_id = AKIA1\naws_secret_access_key = x\nregion = eu-west-1\n"
                }
                "ovh" => {
                    "application_key = a\napplication_secret = b\nconsumer_key = c\nendpoint = ovh-ca\n"
                }
                _ => "token\n",
            };
            let f = dir.path().join(name);
            std::fs::write(&f, text).unwrap();
            let p = ProviderSettings {
                name: name.to_string(),
                token_file: Some(f),
                api_url: Some("http://127.0.0.1:1".into()),
            };
            assert!(provider_client(&p).is_ok(), "{name}");
        }
        let f = dir.path().join("bad-ovh");
        std::fs::write(
            &f,
            "application_key = a\napplication_secret = b\nconsumer_key = c\nendpoint = mars\n",
        )
        .unwrap();
        let p = ProviderSettings {
            name: "ovh".into(),
            token_file: Some(f),
            api_url: None,
        };
        assert!(provider_client(&p).is_err(), "unknown OVH endpoint");
    }
}
