//! Provider APIs for push mode (built with `--features providers`, through the `dns-update`
//! crate): which providers exist, their credential files, and the client and record types of
//! each. Owns nothing that persists; must not decide what or when to push ([`super::push`]
//! does).
//!
//! [`PROVIDERS`] is the one table: per provider its name, what its `token_file` holds, what
//! `api_url` is to it, and (with the feature) how its client is built from those.

use std::collections::BTreeMap;

#[cfg(feature = "providers")]
use hickory_proto::rr::RData;

#[cfg(feature = "providers")]
use super::push::{ProviderSettings, TIMEOUT};

/// What a provider's `token_file` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secret {
    /// Nothing: it has no token file (`pebble-challtestsrv`).
    None,
    /// The API token itself (surrounding whitespace ignored).
    Token,
    /// `key = value` lines (see [`credentials`]): the keys it must hold, then those it may.
    Keys(&'static [&'static str], &'static [&'static str]),
    /// `key = value` lines, one per zone: `example.com = the zone's key` (Hurricane
    /// Electric's dynamic DNS keys).
    PerZone,
}

/// What `[domain.push] api_url` is to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiUrl {
    /// Not used: the client has its fixed endpoint.
    Unused,
    /// Another endpoint than the client's default.
    Optional,
    /// Needed: the server it talks to (what that is, for the error message).
    Required(&'static str),
}

/// One provider API.
pub(crate) struct Provider {
    /// `[domain.push] provider`: dns-update's module name, `_` written `-` (except `gandi`,
    /// `powerdns`, `pebble-challtestsrv`).
    pub name: &'static str,
    pub secret: Secret,
    pub api_url: ApiUrl,
    /// Its client from the credentials (no I/O: nothing is asked of the provider).
    #[cfg(feature = "providers")]
    build: fn(&Given) -> dns_update::Result<dns_update::DnsUpdater>,
}

/// One [`Provider`] row; the constructor is left out without `--features providers`.
/// `token => new_x`: the file is the token, `new_x(token, timeout)`. `[keys…] => new_x`: those
/// keys are required and passed in that order, `new_x(key…, timeout)`. Else: the secret, the
/// api_url and a closure from `Given` to the client.
macro_rules! provider {
    ($name:literal, token => $new:ident) => {
        provider!($name, Token, Unused, |c| U::$new(c.token(), T))
    };
    ($name:literal, [$($k:literal),+] => $new:ident) => {
        provider!($name, Keys(&[$($k),+], &[]), Unused, |c| U::$new($(c.key($k)),+, T))
    };
    ($name:literal, $secret:expr, $url:expr, |$c:ident| $build:expr) => {
        Provider {
            name: $name,
            secret: $secret,
            api_url: $url,
            #[cfg(feature = "providers")]
            build: |$c| $build,
        }
    };
}

use ApiUrl::{Optional, Required, Unused};
use Secret::{Keys, PerZone, Token};
#[cfg(feature = "providers")]
use dns_update::{DnsUpdater as U, providers as dp};

/// Each client's timeout for one API call.
#[cfg(feature = "providers")]
const T: Option<std::time::Duration> = Some(TIMEOUT);

/// The provider APIs this build can push to, by name. Not here (see [`NOT_WIRED`]): the ones
/// whose credentials are no `key = value` lines, dns-update's in-memory test store, and its
/// RFC 2136 client (mxguard's own `rfc2136` is used instead).
pub(crate) const PROVIDERS: &[Provider] = &[
    provider!(
        "alidns",
        Keys(
            &["access_key", "secret_key"],
            &["region", "security_token", "line"]
        ),
        Unused,
        |c| {
            U::new_alidns(
                c.key("access_key"),
                c.key("secret_key"),
                c.opt("region"),
                c.opt("security_token"),
                c.opt("line"),
                T,
            )
        }
    ),
    provider!("arvancloud", token => new_arvancloud),
    provider!(
        "autodns",
        Keys(&["username", "password"], &["context"]),
        Unused,
        |c| {
            U::new_autodns(
                c.key("username"),
                c.key("password"),
                c.opt("context").and_then(|v| v.parse().ok()),
                T,
            )
        }
    ),
    provider!(
        "azuredns",
        Keys(
            &[
                "tenant_id",
                "client_id",
                "client_secret",
                "subscription_id",
                "resource_group"
            ],
            &["environment"]
        ),
        Unused,
        |c| {
            U::new_azuredns(dp::azuredns::AzureDnsConfig {
                tenant_id: c.key("tenant_id").into(),
                client_id: c.key("client_id").into(),
                client_secret: c.key("client_secret").into(),
                subscription_id: c.key("subscription_id").into(),
                resource_group: c.key("resource_group").into(),
                environment: dp::azuredns::AzureEnvironment::from_str_lossy(
                    c.opt("environment").unwrap_or("public"),
                ),
                request_timeout: T,
            })
        }
    ),
    provider!("baiducloud", ["access_key", "secret_key"] => new_baiducloud),
    provider!(
        "bluecatv2",
        Keys(
            &["username", "password", "config_name", "view_name"],
            &["skip_deploy"]
        ),
        Required("the Address Manager's URL"),
        |c| {
            U::new_bluecatv2(dp::bluecatv2::BluecatV2Config {
                server_url: c.url().into(),
                username: c.key("username").into(),
                password: c.key("password").into(),
                config_name: c.key("config_name").into(),
                view_name: c.key("view_name").into(),
                skip_deploy: c.flag("skip_deploy"),
                request_timeout: T,
            })
        }
    ),
    provider!("bunny", token => new_bunny),
    provider!("cloudflare", token => new_cloudflare),
    // `auth_id` (the main account) or `sub_auth_id` (a sub-user).
    provider!(
        "cloudns",
        Keys(&["auth_password"], &["auth_id", "sub_auth_id"]),
        Unused,
        |c| {
            U::new_cloudns(
                c.opt("auth_id"),
                c.opt("sub_auth_id"),
                c.key("auth_password"),
                T,
            )
        }
    ),
    provider!("constellix", ["api_key", "secret_key"] => new_constellix),
    provider!(
        "cpanel",
        Keys(&["username", "token"], &[]),
        Required("the cPanel server's URL, e.g. https://cpanel.example.com:2083"),
        |c| { U::new_cpanel(c.url(), c.key("username"), c.key("token"), T) }
    ),
    provider!("ddnss", token => new_ddnss),
    provider!("desec", token => new_desec),
    provider!("digitalocean", token => new_digitalocean),
    provider!("dnsimple", ["auth_token", "account_id"] => new_dnsimple),
    provider!("dnsmadeeasy", ["api_key", "api_secret"] => new_dnsmadeeasy),
    provider!("domeneshop", ["api_token", "api_secret"] => new_domeneshop),
    provider!("dreamhost", token => new_dreamhost),
    provider!("duckdns", token => new_duckdns),
    provider!("dynu", token => new_dynu),
    provider!("easydns", ["token", "key"] => new_easydns),
    // The keys of Akamai's `.edgerc` (its `[default]` section).
    provider!(
        "edgedns",
        Keys(
            &["host", "client_token", "client_secret", "access_token"],
            &["account_switch_key"]
        ),
        Unused,
        |c| {
            U::new_edgedns(dp::edgedns::EdgeDnsConfig {
                host: c.key("host").into(),
                client_token: c.key("client_token").into(),
                client_secret: c.key("client_secret").into(),
                access_token: c.key("access_token").into(),
                account_switch_key: c.opt("account_switch_key").map(Into::into),
                request_timeout: T,
            })
        }
    ),
    provider!("exoscale", ["api_key", "api_secret"] => new_exoscale),
    provider!("freemyip", token => new_freemyip),
    // LiveDNS v5, a personal access token.
    provider!("gandi", token => new_gandiv5),
    provider!("gcore", token => new_gcore),
    provider!("glesys", ["api_user", "api_key"] => new_glesys),
    provider!("godaddy", ["api_key", "api_secret"] => new_godaddy),
    provider!("hetzner", token => new_hetzner),
    provider!("hostingde", token => new_hostingde),
    provider!("hostinger", token => new_hostinger),
    provider!("huaweicloud", ["access_key", "secret_key", "region"] => new_huaweicloud),
    provider!("hurricane", PerZone, Unused, |c| U::new_hurricane(
        c.per_zone(),
        T
    )),
    provider!("ibmcloud", ["username", "api_key"] => new_ibmcloud),
    provider!(
        "infoblox",
        Keys(
            &["username", "password"],
            &["port", "wapi_version", "dns_view"]
        ),
        Required("the Grid Master's URL or host name"),
        |c| {
            U::new_infoblox(dp::infoblox::InfobloxConfig {
                host: c.url().into(),
                port: c.opt("port").map(Into::into),
                username: c.key("username").into(),
                password: c.key("password").into(),
                wapi_version: c.opt("wapi_version").map(Into::into),
                dns_view: c.opt("dns_view").map(Into::into),
                request_timeout: T,
            })
        }
    ),
    provider!("infomaniak", token => new_infomaniak),
    provider!(
        "inwx",
        Keys(&["username", "password"], &["sandbox"]),
        Unused,
        |c| { U::new_inwx(c.key("username"), c.key("password"), c.flag("sandbox"), T) }
    ),
    provider!("ionos", token => new_ionos),
    provider!("ipv64", token => new_ipv64),
    // `api_key`, or `username` and `password`.
    provider!(
        "joker",
        Keys(&[], &["api_key", "username", "password"]),
        Unused,
        |c| {
            let auth = match c.opt("api_key") {
                Some(k) => dp::joker::JokerAuth::api_key(k),
                None => dp::joker::JokerAuth::username_password(
                    c.opt("username").unwrap_or_default(),
                    c.opt("password").unwrap_or_default(),
                ),
            };
            U::new_joker(auth, T)
        }
    ),
    // The AWS shared-credentials format, as for `route53`.
    provider!(
        "lightsail",
        Keys(
            &["aws_access_key_id", "aws_secret_access_key"],
            &["aws_session_token", "region", "domain"]
        ),
        Unused,
        |c| {
            U::new_lightsail(dp::lightsail::LightsailConfig {
                access_key_id: c.key("aws_access_key_id").into(),
                secret_access_key: c.key("aws_secret_access_key").into(),
                session_token: c.opt("aws_session_token").map(Into::into),
                region: c.opt("region").map(Into::into),
                domain: c.opt("domain").map(Into::into),
                request_timeout: T,
            })
        }
    ),
    provider!("linode", token => new_linode),
    provider!("luadns", ["api_username", "api_token"] => new_luadns),
    provider!("mythicbeasts", ["username", "password"] => new_mythicbeasts),
    provider!(
        "namecheap",
        Keys(&["api_user", "api_key", "client_ip"], &["username"]),
        Unused,
        |c| {
            U::new_namecheap(
                c.key("api_user"),
                c.key("api_key"),
                c.key("client_ip"),
                c.opt("username"),
                T,
            )
        }
    ),
    provider!("namedotcom", ["username", "api_token"] => new_namedotcom),
    provider!("namesilo", token => new_namesilo),
    provider!("netcup", ["customer_number", "api_key", "api_password"] => new_netcup),
    provider!("netlify", token => new_netlify),
    provider!("nifcloud", ["access_key", "secret_key"] => new_nifcloud),
    provider!("ns1", token => new_ns1),
    // `endpoint`: ovh-eu (the default), ovh-us, ovh-ca, kimsufi-eu, … (`OVH_ENDPOINTS`).
    provider!(
        "ovh",
        Keys(
            &["application_key", "application_secret", "consumer_key"],
            &["endpoint"]
        ),
        Unused,
        |c| {
            let endpoint = c
                .opt("endpoint")
                .unwrap_or("ovh-eu")
                .parse::<dp::ovh::OvhEndpoint>()?;
            U::new_ovh(
                c.key("application_key"),
                c.key("application_secret"),
                c.key("consumer_key"),
                endpoint,
                T,
            )
        }
    ),
    provider!(
        "pebble-challtestsrv",
        Secret::None,
        Required("its management URL"),
        |c| { Ok(U::new_pebble(c.url(), T)) }
    ),
    provider!(
        "plesk",
        Token,
        Required("the Plesk server's URL, e.g. https://plesk.example.com:8443"),
        |c| { U::new_plesk(c.url(), c.token(), T) }
    ),
    provider!("porkbun", ["api_key", "secret_api_key"] => new_porkbun),
    // PowerDNS's own HTTP API (`api=yes`): the server at api_url (default
    // http://localhost:8081), the API key in token_file.
    provider!("powerdns", Token, Optional, |c| {
        U::new_pdns(c.token(), c.api_url.as_deref(), None::<&str>, T)
    }),
    // The AWS shared-credentials format; api_url: another endpoint.
    provider!(
        "route53",
        Keys(
            &["aws_access_key_id", "aws_secret_access_key"],
            &["aws_session_token", "region", "hosted_zone_id"]
        ),
        Optional,
        |c| {
            U::new_route53(dp::route53::Route53Config {
                access_key_id: c.key("aws_access_key_id").into(),
                secret_access_key: c.key("aws_secret_access_key").into(),
                session_token: c.opt("aws_session_token").map(Into::into),
                region: c.opt("region").map(Into::into),
                hosted_zone_id: c.opt("hosted_zone_id").map(Into::into),
                private_zone_only: None,
                endpoint: c.api_url.clone(),
            })
        }
    ),
    provider!("safedns", token => new_safedns),
    provider!("scaleway", token => new_scaleway),
    provider!("selectel", ["username", "password", "account_id", "project_id"] => new_selectel),
    provider!("simplycom", ["account_name", "api_key"] => new_simplycom),
    provider!("spaceship", ["api_key", "api_secret"] => new_spaceship),
    provider!(
        "tencentcloud",
        Keys(&["secret_id", "secret_key"], &["region", "session_token"]),
        Unused,
        |c| {
            U::new_tencentcloud(
                c.key("secret_id"),
                c.key("secret_key"),
                c.opt("region"),
                c.opt("session_token"),
                T,
            )
        }
    ),
    provider!(
        "ultradns",
        Keys(&["username", "password"], &[]),
        Optional,
        |c| { U::new_ultradns(c.key("username"), c.key("password"), c.api_url.clone(), T) }
    ),
    provider!("vercel", Keys(&["auth_token"], &["team_id"]), Unused, |c| {
        U::new_vercel(c.key("auth_token"), c.opt("team_id"), T)
    }),
    // api_url: `scheme://host` of another endpoint.
    provider!(
        "volcengine",
        Keys(&["access_key", "secret_key"], &["region"]),
        Optional,
        |c| {
            let (scheme, host) = match c.api_url.as_deref().map(|u| u.trim_end_matches('/')) {
                Some(u) => match u.split_once("://") {
                    Some((s, h)) => (Some(s.to_string()), Some(h.to_string())),
                    None => (None, Some(u.to_string())),
                },
                None => (None, None),
            };
            U::new_volcengine(dp::volcengine::VolcengineConfig {
                access_key: c.key("access_key").into(),
                secret_key: c.key("secret_key").into(),
                region: c.opt("region").map(Into::into),
                host,
                scheme,
                request_timeout: T,
            })
        }
    ),
    provider!("vultr", token => new_vultr),
    provider!("websupport", ["api_key", "secret"] => new_websupport),
    // `iam_token_b64`: the service account's authorized key (its JSON), base64 on one line.
    provider!(
        "yandexcloud",
        Keys(&["iam_token_b64", "folder_id"], &[]),
        Unused,
        |c| {
            U::new_yandexcloud(dp::yandexcloud::YandexCloudConfig {
                iam_token_b64: c.key("iam_token_b64").into(),
                folder_id: c.key("folder_id").into(),
                request_timeout: T,
            })
        }
    ),
    provider!("zoneeu", ["username", "api_key"] => new_zoneeu),
];

/// dns-update's provider APIs that are not wired, each with why: `[domain.push] provider` names
/// them and `check-config` says why they are refused.
pub(crate) const NOT_WIRED: &[(&str, &str)] = &[
    (
        "google-cloud-dns",
        "its credentials are a service-account JSON document, not key = value lines",
    ),
    (
        "google",
        "Google Cloud DNS's credentials are a service-account JSON document, not key = value lines",
    ),
    (
        "oraclecloud",
        "it signs each request with a private key in PEM (several lines), not a key = value line",
    ),
    (
        "transip",
        "it signs its logins with a private key in PEM (several lines), not a key = value line",
    ),
];

/// Provider APIs whose `dns-update` client cannot write TLSA records (read from its source:
/// each refuses them as unsupported). `check-config` refuses DANE records for their domains.
pub(crate) const NO_TLSA: &[&str] = &[
    "alidns",
    "azuredns",
    "baiducloud",
    "bluecatv2",
    "constellix",
    "cpanel",
    "ddnss",
    "digitalocean",
    "dnsmadeeasy",
    "domeneshop",
    "dreamhost",
    "duckdns",
    "easydns",
    "edgedns",
    "exoscale",
    "freemyip",
    "glesys",
    "godaddy",
    "huaweicloud",
    "hurricane",
    "ibmcloud",
    "ionos",
    "ipv64",
    "joker",
    "lightsail",
    "linode",
    "namecheap",
    "namedotcom",
    "namesilo",
    "netlify",
    "nifcloud",
    "pebble-challtestsrv",
    "plesk",
    "safedns",
    "selectel",
    "tencentcloud",
    "vercel",
    "volcengine",
    "vultr",
    "websupport",
    "yandexcloud",
];

/// The provider API called `name` (lowercase).
pub(crate) fn provider(name: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.name == name)
}

/// Every provider API's name, for messages: `alidns, arvancloud, …`.
pub(crate) fn names() -> String {
    PROVIDERS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
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

/// Azure clouds (`environment = …` in `azuredns` credentials).
const AZURE_ENVIRONMENTS: &[&str] = &["public", "china", "usgovernment"];

/// The `key = value` lines of one section of a credentials file: `[default]` when there is
/// one, else the lines before the first `[section]` header, else the first section (blank
/// lines and `#`/`;` comments skipped; keys without case). An error names the first required
/// key missing (an empty value is missing), a value of the wrong kind (an unknown OVH
/// endpoint, …), or the keys of which one is needed.
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
    let has = |k: &str| out.get(k).is_some_and(|v| !v.is_empty());
    let secret = self::provider(provider).map(|p| p.secret);
    if let Some(Secret::Keys(required, _)) = secret {
        if let Some(k) = required.iter().find(|k| !has(k)) {
            return Err(format!("{provider} credentials need a line `{k} = …`"));
        }
        for (k, v) in out.iter().filter(|(_, v)| !v.is_empty()) {
            check_value(provider, k, v)?;
        }
    }
    match provider {
        "cloudns" if !has("auth_id") && !has("sub_auth_id") => Err(
            "cloudns credentials need a line `auth_id = …` (the main account) or `sub_auth_id = …` (a sub-user)"
                .into(),
        ),
        "joker" if !(has("api_key") || has("username") && has("password")) => Err(
            "joker credentials need a line `api_key = …`, or the lines `username = …` and `password = …`"
                .into(),
        ),
        _ if secret == Some(Secret::PerZone) && !out.values().any(|v| !v.is_empty()) => {
            Err(format!(
                "{provider} credentials need a line `ZONE = …` (the zone's key) per zone"
            ))
        }
        _ => Ok(out),
    }
}

/// A boolean credential (`sandbox`, `skip_deploy`).
fn boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// A credential that must be one of some values, a number or a boolean.
fn check_value(provider: &str, key: &str, value: &str) -> Result<(), String> {
    let bad = |what: &str| Err(format!("{provider} credentials: {key} = {value:?}: {what}"));
    match (provider, key) {
        ("ovh", "endpoint") if !OVH_ENDPOINTS.contains(&value) => Err(format!(
            "unknown OVH endpoint {value:?}: one of {}",
            OVH_ENDPOINTS.join(", ")
        )),
        ("azuredns", "environment")
            if !AZURE_ENVIRONMENTS.contains(&value.to_ascii_lowercase().as_str()) =>
        {
            bad(&format!("one of {}", AZURE_ENVIRONMENTS.join(", ")))
        }
        ("autodns", "context") if value.parse::<u32>().is_err() => {
            bad("a number (4, the default, is the live system)")
        }
        ("infoblox", "port") if value.parse::<u16>().is_err() => bad("a port number"),
        ("inwx", "sandbox") | ("bluecatv2", "skip_deploy") if boolean(value).is_none() => {
            bad("true or false")
        }
        _ => Ok(()),
    }
}

/// What a provider's client is built from: its token file (the token, or its `key = value`
/// lines) and `api_url`.
#[cfg(feature = "providers")]
struct Given {
    provider: &'static Provider,
    token: String,
    keys: BTreeMap<String, String>,
    api_url: Option<String>,
}

#[cfg(feature = "providers")]
impl Given {
    /// The token file's content ([`Secret::Token`]).
    fn token(&self) -> &str {
        debug_assert_eq!(
            self.provider.secret,
            Secret::Token,
            "{}",
            self.provider.name
        );
        &self.token
    }

    /// A key its table row requires.
    fn key(&self, k: &str) -> &str {
        debug_assert!(
            matches!(self.provider.secret, Secret::Keys(r, _) if r.contains(&k)),
            "{}: {k} is no required key",
            self.provider.name
        );
        self.keys.get(k).map_or("", String::as_str)
    }

    /// A key its table row allows (an empty value is none).
    fn opt(&self, k: &str) -> Option<&str> {
        debug_assert!(
            matches!(self.provider.secret, Secret::Keys(_, o) if o.contains(&k)),
            "{}: {k} is no optional key",
            self.provider.name
        );
        self.keys
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// An optional boolean key (absent: false).
    fn flag(&self, k: &str) -> bool {
        self.opt(k).and_then(boolean).unwrap_or(false)
    }

    /// `api_url` ([`ApiUrl::Required`]: checked before the client is built).
    fn url(&self) -> &str {
        self.api_url.as_deref().unwrap_or_default()
    }

    /// Zone → key ([`Secret::PerZone`]), zones without the final dot.
    fn per_zone(&self) -> std::collections::HashMap<String, String> {
        self.keys
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(z, v)| (z.trim_end_matches('.').to_string(), v.clone()))
            .collect()
    }
}

/// The client of `p`'s provider API, from its token file and `api_url` (no I/O but reading
/// the file).
#[cfg(feature = "providers")]
pub(super) fn provider_client(p: &ProviderSettings) -> Result<dns_update::DnsUpdater, String> {
    let spec = provider(&p.name).ok_or_else(|| format!("unknown provider {:?}", p.name))?;
    let read = || -> Result<String, String> {
        let f = p
            .token_file
            .as_ref()
            .ok_or(format!("provider {} needs token_file", p.name))?;
        std::fs::read_to_string(f)
            .map(|t| t.trim().to_string())
            .map_err(|e| format!("{}: {e}", f.display()))
    };
    let mut given = Given {
        provider: spec,
        token: String::new(),
        keys: BTreeMap::new(),
        api_url: p.api_url.clone(),
    };
    match spec.secret {
        Secret::None => {}
        Secret::Token => given.token = read()?,
        Secret::Keys(..) | Secret::PerZone => given.keys = credentials(spec.name, &read()?)?,
    }
    if let ApiUrl::Required(what) = spec.api_url
        && given.api_url.is_none()
    {
        return Err(format!("{} needs api_url ({what})", spec.name));
    }
    (spec.build)(&given).map_err(|x| format!("provider {}: {x}", p.name))
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
#[path = "providers_tests.rs"]
mod tests;
