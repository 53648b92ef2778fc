//! `[domain.push]` validation: RFC 2136 (primary, TSIG key file) or a provider API (token or
//! credentials file, nameservers or resolver). Reaching the servers is not required here.

use super::validate::Base;
use crate::publish::providers::{self, ApiUrl, Secret};

/// `[domain.push]`: the primary, the TSIG key (its file present, a base64 secret, not
/// readable by others). Reaching the server is not required here.
pub(super) fn push_settings(
    raw: &super::raw::RawPush,
    at: &str,
    base: &Base,
    problem: &mut impl FnMut(String, String),
) -> Option<crate::publish::push::PushSettings> {
    let key = |k: &str| format!("{at}.push.{k}");
    let name = raw.provider.to_ascii_lowercase();
    if let Some(p) = providers::provider(&name) {
        return provider_settings(raw, p, at, base, problem);
    }
    match name.as_str() {
        "rfc2136" => {}
        p => {
            let message = match providers::NOT_WIRED.iter().find(|(n, _)| *n == p) {
                Some((_, why)) => format!(
                    "the {p} API is not supported yet ({why}): use provider = \"rfc2136\" with a primary that accepts TSIG-signed updates (the provider's RFC 2136 endpoint, or your own BIND/Knot/PowerDNS), or one of {}",
                    providers::names()
                ),
                None => format!(
                    "unknown provider {p:?}: use \"rfc2136\" or one of {}",
                    providers::names()
                ),
            };
            problem(key("provider"), message);
            return None;
        }
    }
    if raw.token_file.is_some() {
        problem(
            key("token_file"),
            "token_file is for provider APIs; rfc2136 uses tsig_key_name and tsig_secret_file"
                .into(),
        );
    }
    if raw.resolver.is_some() {
        problem(
            key("resolver"),
            "resolver is for provider APIs; rfc2136 asks the primary for the zone's NS RRset"
                .into(),
        );
    }
    let Some(server) = raw.server else {
        problem(
            key("server"),
            "rfc2136 needs server = \"ADDR:PORT\" (the primary that accepts updates)".into(),
        );
        return None;
    };
    let (Some(name), Some(file)) = (&raw.tsig_key_name, &raw.tsig_secret_file) else {
        problem(key("tsig_key_name"), "rfc2136 needs tsig_key_name and tsig_secret_file (create the secret with `mxguard tsig-keygen NAME --out FILE`)".into());
        return None;
    };
    if hickory_proto::rr::Name::from_ascii(name).is_err() {
        problem(
            key("tsig_key_name"),
            format!("{name:?} is not a valid key name"),
        );
        return None;
    }
    let algorithm = match raw.tsig_algorithm.as_deref() {
        None => hickory_proto::rr::rdata::tsig::TsigAlgorithm::HmacSha256,
        Some(a) => match crate::publish::push::algorithm(a) {
            Some(a) => a,
            None => {
                problem(
                    key("tsig_algorithm"),
                    format!("{a:?}: use hmac-sha256, hmac-sha384 or hmac-sha512"),
                );
                return None;
            }
        },
    };
    let secret_file = base.resolve(file);
    if let Err(e) = crate::publish::push::read_secret(&secret_file) {
        problem(key("tsig_secret_file"), e);
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(&secret_file)
            && m.permissions().mode() & 0o004 != 0
        {
            problem(
                key("tsig_secret_file"),
                format!(
                    "{} is readable by every user: chmod 600 it",
                    secret_file.display()
                ),
            );
            return None;
        }
    }
    Some(crate::publish::push::PushSettings {
        server: Some(server),
        resolver: None,
        tsig: Some(crate::publish::push::TsigSettings {
            key_name: name.clone(),
            secret_file,
            algorithm,
        }),
        provider: None,
        nameservers: raw.nameservers.clone(),
    })
}

/// A provider API: the token file (private) or the API URL, and the nameservers to check.
fn provider_settings(
    raw: &super::raw::RawPush,
    provider: &providers::Provider,
    at: &str,
    base: &Base,
    problem: &mut impl FnMut(String, String),
) -> Option<crate::publish::push::PushSettings> {
    let key = |k: &str| format!("{at}.push.{k}");
    let name = provider.name;
    if !cfg!(feature = "providers") {
        problem(
            key("provider"),
            format!(
                "{name}: this mxguard is built without provider APIs (build it with `cargo build --release --features providers`)"
            ),
        );
        return None;
    }
    if raw.server.is_some() || raw.tsig_key_name.is_some() || raw.tsig_secret_file.is_some() {
        problem(
            key("server"),
            "server and tsig_* are for rfc2136; a provider API uses token_file".into(),
        );
    }
    if raw.resolver.is_some() && !raw.nameservers.is_empty() {
        problem(
            key("resolver"),
            "resolver finds the nameservers when nameservers is empty; give one or the other"
                .into(),
        );
    }
    let token_file = raw.token_file.as_deref().map(|f| base.resolve(f));
    if let ApiUrl::Required(what) = provider.api_url
        && raw.api_url.is_none()
    {
        problem(key("api_url"), format!("{name} needs api_url ({what})"));
        return None;
    }
    if provider.secret != Secret::None {
        let Some(f) = &token_file else {
            let holds = match provider.secret {
                Secret::Keys(required, _) if !required.is_empty() => format!(
                    "a credentials file with {}",
                    required
                        .iter()
                        .map(|k| format!("`{k} = …`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Secret::Keys(..) | Secret::PerZone => "its credentials file".into(),
                _ => "the API token".into(),
            };
            problem(
                key("token_file"),
                format!("{name} needs token_file ({holds}, 0600)"),
            );
            return None;
        };
        match std::fs::metadata(f) {
            Err(e) => {
                problem(key("token_file"), format!("{}: {e}", f.display()));
                return None;
            }
            #[cfg(unix)]
            Ok(m) if std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o004 != 0 => {
                problem(
                    key("token_file"),
                    format!("{} is readable by every user: chmod 600 it", f.display()),
                );
                return None;
            }
            Ok(_) => {}
        }
        if matches!(provider.secret, Secret::Keys(..) | Secret::PerZone) {
            let checked = std::fs::read_to_string(f)
                .map_err(|e| e.to_string())
                .and_then(|t| providers::credentials(name, &t));
            if let Err(e) = checked {
                problem(key("token_file"), format!("{}: {e}", f.display()));
                return None;
            }
        }
    }
    Some(crate::publish::push::PushSettings {
        server: None,
        resolver: raw.resolver,
        tsig: None,
        provider: Some(crate::publish::push::ProviderSettings {
            name: name.to_string(),
            token_file,
            api_url: raw.api_url.clone(),
        }),
        nameservers: raw.nameservers.clone(),
    })
}
