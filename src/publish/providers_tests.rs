//! Tests of the provider table, credential files and provider clients.
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
    let bad = "application_key = a\napplication_secret = b\nconsumer_key = c\nendpoint = mars\n";
    let e = credentials("ovh", bad).unwrap_err();
    assert!(e.contains("unknown OVH endpoint"), "{e}");
    let e = credentials("ovh", "application_key = a\nconsumer_key = c\n").unwrap_err();
    assert!(e.contains("application_secret"), "{e}");
    let e = credentials("route53", "aws_access_key_id =\naws_secret_access_key = x").unwrap_err();
    assert!(
        e.contains("aws_access_key_id"),
        "an empty value is missing: {e}"
    );
    assert!(credentials("cloudflare", "just-a-token").is_ok());
}

/// A made-up but well-formed value of a credential key.
fn fake(key: &str) -> String {
    match key {
        "endpoint" => "ovh-ca".into(),
        "environment" => "china".into(),
        "context" => "4".into(),
        "port" => "8443".into(),
        "sandbox" | "skip_deploy" => "true".into(),
        "region" => "eu-west-1".into(),
        "client_ip" => "192.0.2.10".into(),
        "wapi_version" => "2.12".into(),
        "host" => "akab-abcdefghijklmnop-qrstuvwxyz012345.luna.akamaiapis.net".into(),
        "iam_token_b64" => data_encoding::BASE64
            .encode(br#"{"id":"aje1","service_account_id":"aje2","private_key":"-"}"#),
        "customer_number" | "account_id" => "123456".into(),
        k => format!("fake-{}-0123456789abcdef", k.replace('_', "-")),
    }
}

/// A credentials file for `p`: its token, or its required keys (plus the optional ones
/// when `all`; plus the key that a rule needs one of), or one zone's key.
fn fake_file(p: &Provider, all: bool) -> String {
    match p.secret {
        Secret::None => String::new(),
        Secret::Token => format!("{}\n", fake("token")),
        Secret::PerZone => "# zone = its key\nexample.com = fake-ddns-key\n".into(),
        Secret::Keys(required, optional) => {
            let one_of: &[&str] = match p.name {
                "joker" => &["api_key"],
                "cloudns" => &["auth_id"],
                _ => &[],
            };
            let extra = if all { optional } else { one_of };
            let mut text = "[default]\n".to_string();
            for k in required.iter().chain(extra) {
                text += &format!("{k} = {}\n", fake(k));
            }
            text
        }
    }
}

#[test]
fn the_table_is_sound() {
    let mut names: Vec<&str> = PROVIDERS.iter().map(|p| p.name).collect();
    assert!(names.is_sorted(), "PROVIDERS in name order");
    names.dedup();
    assert_eq!(names.len(), PROVIDERS.len(), "each name once");
    for p in PROVIDERS {
        assert!(
            p.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{}",
            p.name
        );
        assert!(p.name != "rfc2136" && NOT_WIRED.iter().all(|(n, _)| *n != p.name));
        if let Secret::Keys(required, optional) = p.secret {
            for k in required.iter().chain(optional.iter()) {
                assert!(
                    k.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{}: {k} in snake_case",
                    p.name
                );
            }
            assert!(!required.iter().any(|k| optional.contains(k)), "{}", p.name);
        }
        assert!(
            credentials(p.name, &fake_file(p, true)).is_ok(),
            "{}",
            p.name
        );
        assert!(
            credentials(p.name, &fake_file(p, false)).is_ok(),
            "{}",
            p.name
        );
    }
    // The names used before the table stay.
    for old in [
        "cloudflare",
        "desec",
        "digitalocean",
        "gandi",
        "hetzner",
        "ovh",
        "pebble-challtestsrv",
        "powerdns",
        "route53",
    ] {
        assert!(provider(old).is_some(), "{old}");
    }
}

#[test]
fn a_missing_key_is_named() {
    for (name, file, key) in [
        ("godaddy", "api_key = k\n", "api_secret"),
        (
            "namecheap",
            "api_user = u\napi_key = k\nusername = u\n",
            "client_ip",
        ),
        (
            "azuredns",
            "tenant_id = t\nclient_id = c\nclient_secret = s\nsubscription_id = s\nresource_group =\n",
            "resource_group",
        ),
        (
            "selectel",
            "[default]\nusername = u\npassword = p\naccount_id = 1\n[other]\nproject_id = 2\n",
            "project_id",
        ),
        (
            "lightsail",
            "aws_secret_access_key = s\n",
            "aws_access_key_id",
        ),
        (
            "edgedns",
            "client_token = a\nclient_secret = b\naccess_token = c\n",
            "host",
        ),
    ] {
        let e = credentials(name, file).unwrap_err();
        assert!(
            e.contains(name) && e.contains(&format!("`{key} = …`")),
            "{name}: {e}"
        );
    }
    // Of some keys, one is needed.
    let e = credentials("joker", "username = u\n").unwrap_err();
    assert!(e.contains("api_key") && e.contains("password"), "{e}");
    assert!(credentials("joker", "username = u\npassword = p\n").is_ok());
    let e = credentials("cloudns", "auth_password = p\n").unwrap_err();
    assert!(e.contains("auth_id") && e.contains("sub_auth_id"), "{e}");
    let e = credentials("hurricane", "# nothing\n").unwrap_err();
    assert!(e.contains("per zone"), "{e}");
    // Values of a kind.
    for (name, file, key) in [
        (
            "inwx",
            "username = u\npassword = p\nsandbox = maybe\n",
            "sandbox",
        ),
        (
            "autodns",
            "username = u\npassword = p\ncontext = live\n",
            "context",
        ),
        (
            "azuredns",
            "tenant_id = t\nclient_id = c\nclient_secret = s\nsubscription_id = s\nresource_group = r\nenvironment = mars\n",
            "environment",
        ),
        (
            "infoblox",
            "username = u\npassword = p\nport = https\n",
            "port",
        ),
    ] {
        let e = credentials(name, file).unwrap_err();
        assert!(e.contains(key), "{name}: {e}");
    }
}

/// The wired provider APIs build their clients from their credentials (calling them needs
/// the provider: these are compile-and-configure only). No constructor does I/O.
#[cfg(feature = "providers")]
#[test]
fn every_provider_builds_its_client() {
    let dir = tempfile::tempdir().unwrap();
    let settings = |p: &Provider, all: bool| {
        let f = dir.path().join(format!("{}-{all}", p.name));
        std::fs::write(&f, fake_file(p, all)).unwrap();
        ProviderSettings {
            name: p.name.to_string(),
            token_file: (p.secret != Secret::None).then_some(f),
            api_url: (all || matches!(p.api_url, ApiUrl::Required(_)))
                .then(|| "http://127.0.0.1:1".into()),
        }
    };
    for p in PROVIDERS {
        for all in [true, false] {
            if let Err(e) = provider_client(&settings(p, all)) {
                panic!("{} (all keys: {all}): {e}", p.name);
            }
        }
    }
    let mut s = settings(provider("ovh").unwrap(), true);
    let f = dir.path().join("bad-ovh");
    std::fs::write(
        &f,
        "application_key = a\napplication_secret = b\nconsumer_key = c\nendpoint = mars\n",
    )
    .unwrap();
    s.token_file = Some(f);
    assert!(provider_client(&s).is_err(), "unknown OVH endpoint");
    // A missing key is named; a server the client needs is asked for.
    let mut s = settings(provider("godaddy").unwrap(), true);
    std::fs::write(s.token_file.as_ref().unwrap(), "api_key = k\n").unwrap();
    let e = provider_client(&s).err().unwrap();
    assert!(e.contains("api_secret"), "{e}");
    s = settings(provider("plesk").unwrap(), true);
    s.api_url = None;
    let e = provider_client(&s).err().unwrap();
    assert!(e.contains("plesk needs api_url"), "{e}");
    s.name = "nosuch".into();
    assert!(provider_client(&s).is_err());
}

/// The README's table of provider APIs has a row per provider with its keys and api_url,
/// and names the ones not wired.
#[test]
fn the_readme_lists_every_provider_and_its_keys() {
    let readme = include_str!("../../README.md");
    let rows: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| provider | `token_file` holds | `api_url` |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(rows.len(), PROVIDERS.len(), "a README row per provider");
    for (p, row) in PROVIDERS.iter().zip(&rows) {
        assert!(
            row.starts_with(&format!("| `{}` ", p.name)),
            "README: {row}"
        );
        if let Secret::Keys(required, optional) = p.secret {
            for k in required.iter().chain(optional) {
                assert!(row.contains(&format!("`{k}`")), "README, {}: {k}", p.name);
            }
        }
        let url = match p.api_url {
            ApiUrl::Unused => "| — |",
            ApiUrl::Optional => "| optional",
            ApiUrl::Required(_) => "| required",
        };
        assert!(row.contains(url), "README, {}: api_url {url}", p.name);
        let tlsa = if NO_TLSA.contains(&p.name) {
            "| no |"
        } else {
            "| yes |"
        };
        assert!(row.ends_with(tlsa), "README, {}: TLSA {tlsa}", p.name);
    }
    for name in NO_TLSA {
        assert!(provider(name).is_some(), "NO_TLSA: {name} is no provider");
    }
    for (name, _) in NOT_WIRED {
        assert!(readme.contains(&format!("`{name}`")), "README: {name}");
    }
}
