//! Parser tests: the real samples, leniency, strictness with field paths, and properties.

use super::*;
use proptest::prelude::*;
use time::macros::datetime;

/// The real sample reports (copied from /work/shared/samples/tlsrpt; compiled in so tests
/// never read shared paths at run time).
pub(crate) mod fixtures {
    pub(crate) const GOOGLE: &[u8] =
        include_bytes!("../../tests/fixtures/tlsrpt/google.com.from-eml.json");
    pub(crate) const MAIL_RU: &[u8] = include_bytes!("../../tests/fixtures/tlsrpt/mail.ru.json");
    pub(crate) const RFC8460: &[u8] = include_bytes!("../../tests/fixtures/tlsrpt/rfc8460.json");
    pub(crate) const SMTP_TLS: &[u8] = include_bytes!("../../tests/fixtures/tlsrpt/smtp_tls.json");
    /// Every JSON sample, by file name.
    pub(crate) const ALL: [(&str, &[u8]); 4] = [
        ("google.com.from-eml.json", GOOGLE),
        ("mail.ru.json", MAIL_RU),
        ("rfc8460.json", RFC8460),
        ("smtp_tls.json", SMTP_TLS),
    ];

    /// A small valid report: one `sts` policy for `domain` with one failure detail when
    /// `failed > 0`, ending on 2024-06-01.
    pub(crate) fn synthetic(
        org: &str,
        report_id: &str,
        domain: &str,
        ok: u64,
        failed: u64,
    ) -> Vec<u8> {
        let details = if failed > 0 {
            format!(
                r#","failure-details":[{{"result-type":"certificate-expired","sending-mta-ip":"192.0.2.1","receiving-mx-hostname":"mx.{domain}","failed-session-count":{failed}}}]"#
            )
        } else {
            String::new()
        };
        format!(
            r#"{{"organization-name":"{org}","date-range":{{"start-datetime":"2024-05-31T00:00:00Z","end-datetime":"2024-06-01T00:00:00Z"}},"contact-info":"tlsrpt@{org}","report-id":"{report_id}","policies":[{{"policy":{{"policy-type":"sts","policy-domain":"{domain}","mx-host":["mx.{domain}"]}},"summary":{{"total-successful-session-count":{ok},"total-failure-session-count":{failed}}}{details}}}]}}"#
        )
        .into_bytes()
    }
}

#[test]
fn every_sample_parses() {
    for (name, bytes) in fixtures::ALL {
        let r = parse_report(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!r.policies.is_empty(), "{name}");
    }
}

#[test]
fn rfc8460_example_fields() {
    let r = parse_report(fixtures::RFC8460).unwrap();
    assert_eq!(r.organization_name, "Company-X");
    assert_eq!(r.report_id, "5065427c-23d3-47ca-b6e0-946ea0e8c4be");
    assert_eq!(
        r.contact_info.as_deref(),
        Some("sts-reporting@company-x.example")
    );
    assert_eq!(r.date_range.start_datetime, datetime!(2016-04-01 0:00 UTC));
    assert_eq!(
        r.date_range.end_datetime,
        datetime!(2016-04-01 23:59:59 UTC)
    );
    let p = &r.policies[0];
    assert_eq!(p.policy.policy_type, PolicyType::Sts);
    assert_eq!(p.policy.mx_host, vec!["*.mail.company-y.example"]);
    assert_eq!(p.policy.policy_string.len(), 4);
    assert_eq!(p.summary.total_successful_session_count, 5326);
    assert_eq!(p.summary.total_failure_session_count, 303);
    let kinds: Vec<_> = p
        .failure_details
        .iter()
        .map(|f| f.result_type.clone())
        .collect();
    assert_eq!(
        kinds,
        [
            ResultType::CertificateExpired,
            ResultType::StarttlsNotSupported,
            ResultType::ValidationFailure
        ]
    );
    assert_eq!(
        p.failure_details[1].receiving_ip.as_deref(),
        Some("203.0.113.56")
    );
    assert_eq!(
        p.failure_details[2].failure_reason_code.as_deref(),
        Some("X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED")
    );
    assert_eq!(r.domains(), vec!["company-y.example"]);
}

#[test]
fn mail_ru_without_policy_string_and_google_no_policy_found() {
    let r = parse_report(fixtures::MAIL_RU).unwrap();
    assert!(r.policies[0].policy.policy_string.is_empty());
    assert!(r.policies[0].failure_details[0].sending_mta_ip.is_none());
    let g = parse_report(fixtures::GOOGLE).unwrap();
    assert_eq!(g.policies[0].policy.policy_type, PolicyType::NoPolicyFound);
    assert!(g.policies[0].failure_details.is_empty());
}

fn minimal(policy: &str) -> String {
    format!(
        r#"{{"organization-name":"O","date-range":{{"start-datetime":"2024-01-01T00:00:00Z","end-datetime":"2024-01-02T00:00:00Z"}},"report-id":"r1","policies":[{policy}]}}"#
    )
}

const SUMMARY: &str =
    r#""summary":{"total-successful-session-count":1,"total-failure-session-count":2}"#;

#[test]
fn lenient_where_senders_deviate() {
    let json = format!(
        r#"{{"organization-name":"O","contact-info":null,"extra":{{"x":[1]}},
        "date-range":{{"start-datetime":"2024-01-01 00:00:00","end-datetime":"2024-01-01T23:59:59.5"}},
        "report-id":"r1",
        "policies":[{{"policy":{{"policy-type":"future-type","mx-host":["a.example","b.example"],"policy-string":"version: STSv1"}},
          {SUMMARY},"failure-details":[{{"result-type":"brand-new-failure","failed-session-count":2.0,"future":true}}]}},
          {{"policy":{{"policy-type":"tlsa","policy-domain":"Example.COM."}},{SUMMARY},"failure-details":null}}]}}"#
    );
    let r = parse_report(json.as_bytes()).unwrap();
    assert_eq!(r.contact_info, None);
    assert_eq!(r.date_range.start_datetime, datetime!(2024-01-01 0:00 UTC));
    assert_eq!(
        r.date_range.end_datetime,
        datetime!(2024-01-01 23:59:59.5 UTC)
    );
    let p = &r.policies[0];
    assert_eq!(
        p.policy.policy_type,
        PolicyType::Other("future-type".into())
    );
    assert_eq!(p.policy.mx_host, vec!["a.example", "b.example"]);
    assert_eq!(p.policy.policy_string, vec!["version: STSv1"]);
    assert_eq!(p.policy.policy_domain, None);
    assert_eq!(
        p.failure_details[0].result_type.as_str(),
        "brand-new-failure"
    );
    assert_eq!(p.failure_details[0].failed_session_count, 2);
    assert!(r.policies[1].failure_details.is_empty());
    assert_eq!(r.domains(), vec!["example.com"]);
}

#[test]
fn datetime_forms() {
    let ok = [
        ("2024-01-09T00:00:00Z", datetime!(2024-01-09 0:00 UTC)),
        ("2024-01-09T02:00:00+02:00", datetime!(2024-01-09 0:00 UTC)),
        ("2024-01-09T02:00:00+0200", datetime!(2024-01-09 0:00 UTC)),
        ("2024-01-09T00:00:00", datetime!(2024-01-09 0:00 UTC)),
        ("2024-01-09 00:00:00", datetime!(2024-01-09 0:00 UTC)),
        ("2024-01-09", datetime!(2024-01-09 0:00 UTC)),
        (
            " 2024-01-09T00:00:00.250Z ",
            datetime!(2024-01-09 0:00:00.25 UTC),
        ),
    ];
    for (text, want) in ok {
        assert_eq!(parse_datetime(text), Some(want), "{text}");
        assert_eq!(parse_datetime(text).unwrap().offset(), UtcOffset::UTC);
    }
    for bad in [
        "",
        "yesterday",
        "2024-13-01T00:00:00Z",
        "2024-01-09T25:00:00Z",
        "1709251200",
    ] {
        assert_eq!(parse_datetime(bad), None, "{bad}");
    }
}

fn field_error(json: &str) -> (String, String) {
    match parse_report(json.as_bytes()) {
        Err(ParseError::Field { field, reason }) => (field, reason),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn errors_name_the_field() {
    let bad_count = minimal(
        r#"{"policy":{"policy-type":"sts"},"summary":{"total-successful-session-count":1,"total-failure-session-count":"3"}}"#,
    );
    let (field, reason) = field_error(&bad_count);
    assert_eq!(field, "policies[0].summary.total-failure-session-count");
    assert_eq!(reason, r#"invalid type: string "3", expected a number"#);
    assert_eq!(
        parse_report(bad_count.as_bytes()).unwrap_err().to_string(),
        r#"policies[0].summary.total-failure-session-count: invalid type: string "3", expected a number"#
    );

    let negative = minimal(&format!(
        r#"{{"policy":{{"policy-type":"sts"}},{SUMMARY},"failure-details":[{{"result-type":"x","failed-session-count":-1}}]}}"#
    ));
    let (field, reason) = field_error(&negative);
    assert_eq!(field, "policies[0].failure-details[0].failed-session-count");
    assert_eq!(reason, "count -1 is negative");

    let (field, reason) = field_error(&minimal(r#"{"policy":{"policy-type":"sts"}}"#));
    assert_eq!(
        (field.as_str(), reason.as_str()),
        ("policies[0]", "missing field `summary`")
    );

    let (field, reason) = field_error(&minimal(&format!(r#"{{"policy":{{}},{SUMMARY}}}"#)));
    assert_eq!(
        (field.as_str(), reason.as_str()),
        ("policies[0].policy", "missing field `policy-type`")
    );

    let (field, reason) = field_error(&minimal(&format!(
        r#"{{"policy":{{"policy-type":"sts","mx-host":7}},{SUMMARY}}}"#
    )));
    assert_eq!(field, "policies[0].policy.mx-host");
    assert_eq!(reason, "expected a string or a list of strings");

    let bad_date = minimal(&format!(
        r#"{{"policy":{{"policy-type":"sts"}},{SUMMARY}}}"#
    ))
    .replace("2024-01-02T00:00:00Z", "next tuesday");
    let (field, reason) = field_error(&bad_date);
    assert_eq!(field, "date-range.end-datetime");
    assert!(
        reason.starts_with("invalid date-time \"next tuesday\""),
        "{reason}"
    );
}

#[test]
fn strict_where_it_matters() {
    let policy = format!(r#"{{"policy":{{"policy-type":"sts"}},{SUMMARY}}}"#);
    let good = minimal(&policy);
    parse_report(good.as_bytes()).unwrap();

    let cases = [
        (
            good.replace(r#""organization-name":"O","#, ""),
            "report",
            "missing field `organization-name`",
        ),
        (
            good.replace(r#""report-id":"r1","#, ""),
            "report",
            "missing field `report-id`",
        ),
        (
            good.replace(r#""report-id":"r1""#, r#""report-id":" ""#),
            "report-id",
            "must not be empty",
        ),
        (
            good.replace(r#""organization-name":"O""#, r#""organization-name":"""#),
            "organization-name",
            "must not be empty",
        ),
        (
            good.replace(r#""organization-name":"O""#, r#""organization-name":null"#),
            "organization-name",
            "invalid type: null, expected a string",
        ),
        (
            good.replace(&policy, ""),
            "policies",
            "at least one policy is required",
        ),
        (
            good.replace("2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z"),
            "date-range",
            "start-datetime 2024-01-03T00:00:00Z is after end-datetime 2024-01-02T00:00:00Z",
        ),
        ("[]".to_string(), "report", "expected a JSON object"),
        (" \"x\"".to_string(), "report", "expected a JSON object"),
    ];
    for (json, want_field, want_reason) in cases {
        let (field, reason) = field_error(&json);
        assert_eq!(
            (field.as_str(), reason.as_str()),
            (want_field, want_reason),
            "{json}"
        );
    }
}

#[test]
fn syntax_errors_give_a_position() {
    let e = parse_report(b"{\"organization-name\": \"O\",\n  oops}").unwrap_err();
    assert!(matches!(e, ParseError::Syntax { line: 2, .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("not valid JSON at line 2, column 3: "),
        "{e}"
    );
    let e = parse_report(b"").unwrap_err();
    assert!(matches!(e, ParseError::Syntax { .. }), "{e:?}");
    let trailing = format!(
        "{} x",
        minimal(&format!(
            r#"{{"policy":{{"policy-type":"sts"}},{SUMMARY}}}"#
        ))
    );
    assert!(matches!(
        parse_report(trailing.as_bytes()),
        Err(ParseError::Syntax { .. })
    ));
    // A byte-order mark is tolerated.
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(fixtures::GOOGLE);
    parse_report(&bom).unwrap();
}

#[test]
fn huge_counts_are_refused_before_storage() {
    let json = minimal(
        r#"{"policy":{"policy-type":"sts"},"summary":{"total-successful-session-count":18446744073709551615,"total-failure-session-count":0}}"#,
    );
    let (field, reason) = field_error(&json);
    assert_eq!(field, "policies[0].summary.total-successful-session-count");
    assert!(reason.contains("too large"), "{reason}");
}

#[test]
fn serialized_samples_reparse_equal() {
    for (name, bytes) in fixtures::ALL {
        let r = parse_report(bytes).unwrap();
        let again = parse_report(&r.to_json().unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(again, r, "{name}");
    }
}

// ---- properties ----

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9][a-zA-Z0-9 .@_-]{0,23}",
        any::<String>().prop_filter("non-blank", |s| !s.trim().is_empty()),
    ]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(any::<String>())
}

fn datetime_strategy() -> impl Strategy<Value = OffsetDateTime> {
    // Years 0..=9999 in seconds, with nanoseconds.
    (-62_167_219_200i64..253_402_300_799i64, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| {
            OffsetDateTime::from_unix_timestamp(secs).unwrap()
                + time::Duration::nanoseconds(nanos.into())
        })
        .prop_filter("within RFC 3339 years", |d| d.year() <= 9999)
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..1000, 0..=MAX_COUNT]
}

fn policy_type() -> impl Strategy<Value = PolicyType> {
    prop_oneof![
        Just(PolicyType::Sts),
        Just(PolicyType::Tlsa),
        Just(PolicyType::NoPolicyFound),
        "[a-z-]{1,12}".prop_map(|s| PolicyType::from_wire(&s)),
    ]
}

fn result_type() -> impl Strategy<Value = ResultType> {
    prop_oneof![
        Just(ResultType::ValidationFailure),
        Just(ResultType::StsPolicyFetchError),
        Just(ResultType::DaneRequired),
        any::<String>().prop_map(|s| ResultType::from_wire(&s)),
    ]
}

fn failure_detail() -> impl Strategy<Value = FailureDetail> {
    (
        result_type(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        count(),
        opt_text(),
        opt_text(),
    )
        .prop_map(|(rt, ip, mx, helo, rip, n, info, code)| FailureDetail {
            result_type: rt,
            sending_mta_ip: ip,
            receiving_mx_hostname: mx,
            receiving_mx_helo: helo,
            receiving_ip: rip,
            failed_session_count: n,
            additional_information: info,
            failure_reason_code: code,
        })
}

fn policy_report() -> impl Strategy<Value = PolicyReport> {
    (
        policy_type(),
        proptest::collection::vec(any::<String>(), 0..4),
        opt_text(),
        proptest::collection::vec(text(), 0..3),
        count(),
        count(),
        proptest::collection::vec(failure_detail(), 0..4),
    )
        .prop_map(|(pt, ps, pd, mx, ok, failed, details)| PolicyReport {
            policy: Policy {
                policy_type: pt,
                policy_string: ps,
                policy_domain: pd,
                mx_host: mx,
            },
            summary: SessionSummary {
                total_successful_session_count: ok,
                total_failure_session_count: failed,
            },
            failure_details: details,
        })
}

fn report() -> impl Strategy<Value = Report> {
    (
        text(),
        datetime_strategy(),
        datetime_strategy(),
        opt_text(),
        text(),
        proptest::collection::vec(policy_report(), 1..4),
    )
        .prop_map(|(org, a, b, contact, id, policies)| Report {
            organization_name: org,
            date_range: DateRange {
                start_datetime: a.min(b),
                end_datetime: a.max(b),
            },
            contact_info: contact,
            report_id: id,
            policies,
        })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (
            any::<usize>(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 1..8),
                proptest::sample::select(vec![
                    b"null".to_vec(),
                    b"-1".to_vec(),
                    b"1e999".to_vec(),
                    b"[]".to_vec(),
                    b"{}".to_vec(),
                    b"\"".to_vec(),
                    b"\\u0000".to_vec(),
                    b"\\ud800".to_vec(),
                    b"18446744073709551616".to_vec(),
                ]),
            ]
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
    ];
    proptest::collection::vec(one, 1..6)
}

fn apply(mut data: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = data.len().max(1);
        match m {
            Mutation::Flip(i, b) => {
                if !data.is_empty() {
                    data[i % len] = *b;
                }
            }
            Mutation::Delete(i, n) => {
                if !data.is_empty() {
                    let start = i % len;
                    let end = (start + n).min(data.len());
                    data.drain(start..end);
                }
            }
            Mutation::Insert(i, bytes) => {
                let at = i % (data.len() + 1);
                data.splice(at..at, bytes.iter().copied());
            }
        }
    }
    data
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_report(&bytes);
    }

    #[test]
    fn parser_never_panics_on_mutated_samples(
        which in 0usize..fixtures::ALL.len(),
        muts in mutations(),
    ) {
        let data = apply(fixtures::ALL[which].1.to_vec(), &muts);
        if let Ok(r) = parse_report(&data) {
            // Whatever it accepts, it can write back and read again identically.
            let again = parse_report(&r.to_json().unwrap()).unwrap();
            prop_assert_eq!(again, r);
        }
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), gz in any::<bool>()) {
        let ct = if gz { "application/tlsrpt+gzip" } else { "application/tlsrpt+json" };
        let _ = decode_body(&bytes, Some(ct), None, 1024, 4096);
    }

    #[test]
    fn parse_serialize_parse_round_trips(r in report()) {
        let json = r.to_json().unwrap();
        let parsed = parse_report(&json).unwrap();
        prop_assert_eq!(&parsed, &r);
        let again = parse_report(&parsed.to_json().unwrap()).unwrap();
        prop_assert_eq!(again, parsed);
    }
}
