use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/mxguard/mxguard.toml"), text)
}

const GOOD: &str = r#"
state_dir = "state"
[listen]
https = "127.0.0.1:8443"
http = "127.0.0.1:8080"
dns = "127.0.0.1:8053"
[acme]
directory = "local"
[[domain]]
name = "Example.COM."
mx = ["mx1.example.com"]
tls_rpt = ["mailto:tlsrpt@example.com", "https://mta-sts.example.com/tlsrpt"]
"#;

#[test]
fn good_config_resolves_paths_relative_to_config_file() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.state_dir, Path::new("/etc/mxguard/state"));
    assert_eq!(c.domains[0].name, "example.com");
    assert_eq!(
        c.domains[0].policy_file,
        Path::new("/etc/mxguard/policies/example.com.toml")
    );
    assert_eq!(
        c.domains[0].tls_rpt_record().unwrap(),
        "v=TLSRPTv1; rua=mailto:tlsrpt@example.com,https://mta-sts.example.com/tlsrpt"
    );
}

#[test]
fn unknown_key_names_key_line_and_column() {
    let e = parse("[listen]\nhttps = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
    let s = e.to_string();
    assert!(
        s.starts_with("/etc/mxguard/mxguard.toml:3:1: listen"),
        "{s}"
    );
    assert!(s.contains("unknown field `bogus`"), "{s}");
}

#[test]
fn all_problems_are_reported_at_once() {
    let e = parse(
        "[acme]\ndirectory = \"ftp://x\"\n[[domain]]\nname = \"a.example\"\nmx = [\"bad host\"]\ntls_rpt = [\"http://x\"]\n",
    )
    .unwrap_err();
    let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["acme.directory", "domain[0].mx[0]", "domain[0].tls_rpt[0]"]
    );
}

#[test]
fn response_cache_default_and_bound() {
    assert_eq!(
        parse(GOOD).unwrap().dns.response_cache,
        crate::dns::DEFAULT_RESPONSE_CACHE
    );
    let off = format!("{GOOD}[dns]\nresponse_cache = 0\n");
    assert_eq!(parse(&off).unwrap().dns.response_cache, 0);
    let huge = format!("{GOOD}[dns]\nresponse_cache = 20001\n");
    let e = parse(&huge).unwrap_err().to_string();
    assert!(
        e.contains("dns.response_cache") && e.contains("at most 20000"),
        "{e}"
    );
}

#[test]
fn udp_sockets_default_and_bounds() {
    assert_eq!(parse(GOOD).unwrap().dns.udp_sockets, None);
    let one = format!("{GOOD}[dns]\nudp_sockets = 1\n");
    assert_eq!(parse(&one).unwrap().dns.udp_sockets, Some(1));
    for bad in [0, 65] {
        let text = format!("{GOOD}[dns]\nudp_sockets = {bad}\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("dns.udp_sockets") && e.contains("1 to 64"),
            "{e}"
        );
    }
}

#[test]
fn rua_validation() {
    assert!(validate_rua("mailto:a@example.com").is_ok());
    assert!(validate_rua("https://r.example.com/x").is_ok());
    assert!(validate_rua("mailto:example.com").is_err());
    assert!(validate_rua("https://a.example.com,mailto:b@example.com").is_err());
}

#[test]
fn line_col_counts_from_one() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
}

#[test]
fn every_duration_key_takes_seconds_or_a_unit() {
    let text = GOOD.replace(
        "directory = \"local\"",
        "directory = \"local\"\nretry_initial = \"2m\"\nretry_max = 7200",
    ) + "[[mx]]\nhost = \"mx1.example.com\"\ncert_file = \"a.crt\"\nkey_file = \"a.key\"\nreload_timeout = \"1m\"\n[rollover]\nmin_hold = 600\npoll = \"5s\"\n[tlsrpt.intake]\nread_timeout_secs = \"45s\"\n[tlsrpt.alerts]\nwindow = \"1d\"\n";
    let c = parse(&text).unwrap();
    assert_eq!(c.acme.backoff.base.as_secs(), 120);
    assert_eq!(c.acme.backoff.cap.as_secs(), 7200);
    assert_eq!(c.mx[0].deploy.reload_timeout.as_secs(), 60);
    assert_eq!(c.rollover.min_hold.as_secs(), 600);
    assert_eq!(c.rollover.poll.as_secs(), 5);
    assert_eq!(c.tlsrpt.intake.read_timeout_secs, 45);
    assert_eq!(c.tlsrpt.alerts.window, 86400);
    let e = parse(&text.replace("\"2m\"", "\"2 minutes\"")).unwrap_err();
    assert!(e.to_string().contains("acme.retry_initial"), "{e}");
}

#[test]
fn restart_only_keys_keep_their_running_value_on_reload() {
    let running = parse(GOOD).unwrap();
    let text = GOOD.replace("127.0.0.1:8443", "127.0.0.1:9443").replace(
        "directory = \"local\"",
        "directory = \"local\"\nemail = \"a@example.com\"",
    ) + "[dnssec]\nnsec3 = true\n[rollover]\npoll = \"3s\"\n";
    let mut new = parse(&text).unwrap();
    let changed = running.keep_restart_only(&mut new);
    assert_eq!(changed, ["listen.https", "acme.email", "rollover"]);
    assert_eq!(new.listen.https, running.listen.https);
    assert_eq!(new.acme.email, None);
    assert_eq!(new.rollover, running.rollover);
    // Reloadable keys keep the new value.
    assert!(new.dnssec.nsec3);
    assert!(running.keep_restart_only(&mut running.clone()).is_empty());
}

/// The problem at `key`, if any.
fn problem_at(e: &ConfigError, key: &str) -> Option<String> {
    e.problems
        .iter()
        .find(|p| p.key == key)
        .map(|p| p.message.clone())
}

#[test]
fn an_unknown_provider_is_refused_with_the_known_ones() {
    let e = parse(&format!("{GOOD}[domain.push]\nprovider = \"NoSuch\"\n")).unwrap_err();
    let m = problem_at(&e, "domain[0].push.provider").unwrap();
    assert!(m.starts_with("unknown provider \"nosuch\""), "{m}");
    assert!(m.contains(&crate::publish::providers::names()), "{m}");
    assert!(
        m.contains("rfc2136") && m.contains("godaddy") && m.contains("zoneeu"),
        "{m}"
    );
    // dns-update's APIs that are not wired say why.
    let e = parse(&format!("{GOOD}[domain.push]\nprovider = \"transip\"\n")).unwrap_err();
    let m = problem_at(&e, "domain[0].push.provider").unwrap();
    assert!(
        m.contains("the transip API is not supported yet") && m.contains("PEM"),
        "{m}"
    );
}

/// With the provider APIs: credentials files checked for their provider's keys, api_url
/// where the client needs a server.
#[cfg(feature = "providers")]
#[test]
fn provider_credentials_are_checked() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("gd.credentials");
    std::fs::write(&f, "api_key = k\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let godaddy = format!(
        "{GOOD}[domain.push]\nprovider = \"godaddy\"\ntoken_file = \"{}\"\n",
        f.display()
    );
    let e = parse(&godaddy).unwrap_err();
    let m = problem_at(&e, "domain[0].push.token_file").unwrap();
    assert!(
        m.contains("godaddy credentials need a line `api_secret = …`"),
        "{m}"
    );
    std::fs::write(&f, "api_key = k\napi_secret = s\n").unwrap();
    let c = parse(&godaddy).unwrap();
    let push = c.domains[0].push.as_ref().unwrap();
    assert_eq!(push.provider.as_ref().unwrap().name, "godaddy");
    let e = parse(&format!(
        "{GOOD}[domain.push]\nprovider = \"plesk\"\ntoken_file = \"{}\"\n",
        f.display()
    ))
    .unwrap_err();
    let m = problem_at(&e, "domain[0].push.api_url").unwrap();
    assert!(m.starts_with("plesk needs api_url"), "{m}");
    // DANE through a provider whose client cannot write TLSA: refused where it is asked for.
    let mx = "[[mx]]\nhost = \"mx1.example.com\"\ncert_file = \"a.crt\"\nkey_file = \"a.key\"\n";
    let https = |text: &str| text.replace("[domain.push]", "tlsa_https = true\n[domain.push]");
    let e = parse(&format!("{}{mx}", https(&godaddy))).unwrap_err();
    let m = problem_at(&e, "mx[0].host").unwrap();
    assert!(
        m.contains("mx1.example.com is in example.com, pushed through the godaddy API, which cannot write TLSA"),
        "{m}"
    );
    let m = problem_at(&e, "domain[0].tlsa_https").unwrap();
    assert!(m.contains("godaddy API cannot write TLSA"), "{m}");
    // Without rollover the MX key's `3 1 1` is still published: refused too.
    let e = parse(&format!("{godaddy}{mx}rollover = false\n")).unwrap_err();
    assert!(problem_at(&e, "mx[0].host").is_some(), "{e}");
    // Without [[mx]] and tlsa_https, the TXT records alone go through it.
    parse(&godaddy).unwrap();
    let cloudflare = godaddy.replace("godaddy", "cloudflare");
    std::fs::write(&f, "token\n").unwrap();
    parse(&format!("{}{mx}", https(&cloudflare))).unwrap();
    let e = parse(&format!("{GOOD}[domain.push]\nprovider = \"namecheap\"\n")).unwrap_err();
    let m = problem_at(&e, "domain[0].push.token_file").unwrap();
    assert!(m.contains("`client_ip = …`"), "{m}");
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // PROPTEST_CASES=20000 for a longer run.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
            ..ProptestConfig::default()
        })]

        #[test]
        fn config_loader_never_panics_on_mutated_configs(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            extra in "[\\[\\]a-z_.=\"0-9 \n]{0,80}",
        ) {
            let mut bytes = format!("{GOOD}{extra}").into_bytes();
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            let text = String::from_utf8_lossy(&bytes);
            if let Err(e) = parse(&text) {
                // Every problem names the file.
                prop_assert!(e.to_string().contains("mxguard.toml"), "{e}");
            }
        }
    }
}
