//! Tests of the zone file parser: accepted forms, refusals with their line, limits.
use super::*;
use hickory_proto::rr::rdata::{CNAME as CnameData, TXT};

const GOOD: &str = "$ORIGIN example.com.
$TTL 3600
@   IN SOA ns1.example.com. hostmaster.example.com. ( 1 7200 3600 1209600 300 )
    IN NS  ns1
    IN MX  10 mx1
ns1 IN A   192.0.2.1
mx1 IN A   192.0.2.25
www IN CNAME mx1
";

fn origin() -> Name {
    Name::from_ascii("example.com.").unwrap()
}

fn parse(text: &str) -> Result<ZoneData, ZoneError> {
    ZoneData::parse(text, Path::new("/etc/mxguard/example.com.zone"), &origin())
}

fn n(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

#[test]
fn good_zone_parses() {
    let z = parse(GOOD).unwrap();
    assert_eq!(z.origin(), &origin());
    assert!(z.soa().is_some());
    assert_eq!(z.rrsets().len(), 4);
}

#[test]
fn unparsable_file_names_file_and_line() {
    let text = GOOD.replace("mx1 IN A   192.0.2.25", "mx1 IN A   192.0.2.999");
    let e = parse(&text).unwrap_err();
    assert!(matches!(e, ZoneError::Parse { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("/etc/mxguard/example.com.zone:7: cannot parse"),
        "{e}"
    );
}

#[test]
fn out_of_zone_data_names_line() {
    let text = format!("{GOOD}mail.example.net. IN A 192.0.2.3\n");
    let e = parse(&text).unwrap_err();
    assert!(matches!(e, ZoneError::OutOfZone { .. }), "{e}");
    let m = e.to_string();
    assert!(
        m.starts_with("/etc/mxguard/example.com.zone:9: mail.example.net."),
        "{m}"
    );
    assert!(m.contains("outside the zone example.com."), "{m}");
}

#[test]
fn missing_soa_and_ns_are_reported() {
    let no_soa: String = GOOD
        .lines()
        .filter(|l| !l.contains("SOA"))
        .map(|l| format!("{l}\n"))
        .collect();
    let no_soa = no_soa.replace("    IN NS  ns1", "@ IN NS ns1");
    let e = parse(&no_soa).unwrap_err();
    assert!(matches!(e, ZoneError::MissingApex { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("/etc/mxguard/example.com.zone: the zone example.com. has no SOA"),
        "{e}"
    );

    let no_ns = GOOD.replace("    IN NS  ns1\n", "");
    let e = parse(&no_ns).unwrap_err();
    assert!(
        e.to_string().contains("has no NS record at its apex"),
        "{e}"
    );
}

#[test]
fn cname_at_apex_is_rejected_with_line() {
    let text = GOOD.replace("    IN MX  10 mx1", "@ IN CNAME mx1");
    let e = parse(&text).unwrap_err();
    assert!(matches!(e, ZoneError::CnameAtApex { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("/etc/mxguard/example.com.zone:5: CNAME at the zone apex"),
        "{e}"
    );
}

#[test]
fn cname_beside_other_data_is_rejected_with_line() {
    let text = format!("{GOOD}www IN TXT \"hello\"\n");
    let e = parse(&text).unwrap_err();
    assert!(matches!(e, ZoneError::CnameAndOtherData { .. }), "{e}");
    let m = e.to_string();
    assert!(
        m.starts_with(
            "/etc/mxguard/example.com.zone:8: www.example.com. has a CNAME beside other data (TXT)"
        ),
        "{m}"
    );
}

#[test]
fn wildcards_and_delegations_are_checked() {
    assert!(parse(&format!("{GOOD}*.example.com. IN A 192.0.2.9\n")).is_ok());
    let text = format!("{GOOD}*.example.com. IN NS ns1.example.com.\n");
    let e = parse(&text).unwrap_err();
    assert!(
        e.to_string()
            .contains(":9: *.example.com. NS: a wildcard cannot own"),
        "{e}"
    );
    // Delegations: NS, DS and glue at the cut, glue below; nothing else.
    let text = format!(
        "{GOOD}sub IN NS ns.sub\nsub IN DS 12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF\nns.sub IN A 192.0.2.53\n"
    );
    let z = parse(&text).unwrap();
    assert_eq!(
        z.cut_above(&n("ns.sub.example.com.")),
        Some(n("sub.example.com."))
    );
    let text = format!("{GOOD}sub IN NS ns.sub\nwww.sub IN TXT \"child data\"\n");
    let e = parse(&text).unwrap_err().to_string();
    assert!(
        e.contains(":10: www.sub.example.com. TXT: below the delegation sub.example.com."),
        "{e}"
    );
    let text = format!("{GOOD}sub IN NS ns.other.net.\nsub IN TXT \"x\"\n");
    let e = parse(&text).unwrap_err().to_string();
    assert!(
        e.contains("a delegation point holds only NS, DS and glue"),
        "{e}"
    );
    let text = format!("{GOOD}sub IN DS 1 13 2 00\n");
    assert!(
        parse(&text)
            .unwrap_err()
            .to_string()
            .contains("needs the NS records")
    );
}

#[test]
fn include_and_origin_are_followed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hosts.inc"),
        "$ORIGIN hosts.example.com.\nalpha IN A 192.0.2.7\nbad.example.org. IN A 192.0.2.8\n",
    )
    .unwrap();
    let main = format!("{GOOD}$INCLUDE hosts.inc\n");
    let path = dir.path().join("example.com.zone");
    std::fs::write(&path, &main).unwrap();
    let e = ZoneData::load(&path, &origin()).unwrap_err();
    let m = e.to_string();
    assert!(m.contains("hosts.inc:3: bad.example.org."), "{m}");

    std::fs::write(
        dir.path().join("hosts.inc"),
        "$ORIGIN hosts.example.com.\nalpha IN A 192.0.2.7\n",
    )
    .unwrap();
    let z = ZoneData::load(&path, &origin()).unwrap();
    assert!(
        z.rrsets()
            .contains_key(&Name::from_ascii("alpha.hosts.example.com.").unwrap())
    );
}

#[test]
fn managed_collision_names_zone_file_and_source() {
    let text = format!("{GOOD}_mta-sts IN TXT \"v=STSv1; id=old\"\n");
    let z = parse(&text).unwrap();
    let mut managed = ManagedRecords::new();
    managed.push(
        Name::from_ascii("_mta-sts.example.com.").unwrap(),
        300,
        RData::TXT(TXT::new(vec!["v=STSv1; id=2024".into()])),
        "domain[0].policy",
    );
    let e = z.with_managed(&managed).unwrap_err();
    assert!(matches!(e, ZoneError::ManagedCollision { .. }), "{e}");
    let m = e.to_string();
    assert!(
        m.starts_with("/etc/mxguard/example.com.zone:9: _mta-sts.example.com. TXT"),
        "{m}"
    );
    assert!(m.contains("domain[0].policy"), "{m}");
}

#[test]
fn managed_records_merge_and_cname_conflict_names_source() {
    let z = parse(GOOD).unwrap();
    let mut managed = ManagedRecords::new();
    managed.push(
        Name::from_ascii("_smtp._tls.example.com.").unwrap(),
        300,
        RData::TXT(TXT::new(vec![
            "v=TLSRPTv1; rua=mailto:r@example.com".into(),
        ])),
        "domain[0].tlsrpt",
    );
    let merged = z.clone().with_managed(&managed).unwrap();
    assert!(
        merged
            .rrsets()
            .contains_key(&Name::from_ascii("_smtp._tls.example.com.").unwrap())
    );

    let mut bad = ManagedRecords::new();
    bad.push(
        Name::from_ascii("www.example.com.").unwrap(),
        300,
        RData::TXT(TXT::new(vec!["x".into()])),
        "domain[0].extra",
    );
    let e = z.clone().with_managed(&bad).unwrap_err();
    assert!(e.to_string().contains("managed domain[0].extra"), "{e}");

    let mut out = ManagedRecords::new();
    out.push(
        Name::from_ascii("x.example.net.").unwrap(),
        300,
        RData::CNAME(CnameData(Name::from_ascii("y.example.net.").unwrap())),
        "domain[1].policy",
    );
    let e = z.with_managed(&out).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("domain[1].policy: managed record x.example.net."),
        "{e}"
    );
}

mod fuzz {
    use super::super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "$ORIGIN example.com.\n$TTL 3600\n@ IN SOA ns1 hostmaster ( 1 7200 3600 1209600 300 )\n@ IN NS ns1\n@ IN MX 10 mx1\nns1 IN A 192.0.2.1\nmx1 IN AAAA 2001:db8::1\nwww IN CNAME mx1\n_25._tcp.mx1 IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\ntxt IN TXT \"a\" \"b\"\n";

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("@".to_string()),
            Just("IN".to_string()),
            Just("$ORIGIN".to_string()),
            Just("$TTL".to_string()),
            Just("$INCLUDE".to_string()),
            Just("(".to_string()),
            Just(")".to_string()),
            Just(";".to_string()),
            Just("\"".to_string()),
            Just("\\".to_string()),
            Just("SOA".to_string()),
            Just("CNAME".to_string()),
            Just("TLSA".to_string()),
            Just("*".to_string()),
            Just("example.com.".to_string()),
            "[a-z0-9.\\-*_]{0,12}",
            "[0-9]{1,11}",
            any::<char>().prop_map(|c| c.to_string()),
        ]
    }

    proptest! {
        // PROPTEST_CASES=20000 for a longer run.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
            ..ProptestConfig::default()
        })]

        #[test]
        fn zone_parser_never_panics_on_token_soup(
            lines in proptest::collection::vec(proptest::collection::vec(token(), 0..8), 0..12)
        ) {
            let text: String = lines.iter().map(|l| l.join(" ") + "\n").collect();
            let origin = Name::from_ascii("example.com.").unwrap();
            let _ = ZoneData::parse(&text, Path::new("fuzz.zone"), &origin);
        }

        #[test]
        fn zone_parser_never_panics_on_mutated_sample(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = SAMPLE.as_bytes().to_vec();
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            let text = String::from_utf8_lossy(&bytes);
            let origin = Name::from_ascii("example.com.").unwrap();
            let _ = ZoneData::parse(&text, Path::new("fuzz.zone"), &origin);
        }
    }
}
