//! TLS-RPT (RFC 8460): receiving, storing and summarising reports.
//!
//! Pure parts, in this file and beside it (no files, sockets, clock or tokio; time is passed
//! in): the serde model of an aggregate report, [`parse_report`] (lenient where real senders
//! deviate, strict where a report would be meaningless), body decoding ([`decode`]), the
//! summary model and its renderers ([`summary`]), failures set against mxguard's own changes
//! ([`correlate`]), the alert decision ([`alert`]), the
//! Prometheus rendering ([`metrics`]) and finding the report in a mail ([`mailreport`]).
//!
//! Effectful parts: the SQLite report [`store`] (the only writer of `reports.sqlite`), the
//! HTTPS POST handler ([`intake`]), the SMTP listener for `rua=mailto:` ([`smtp`]), the
//! importer of .eml, mbox and Maildir ([`import`]) and the alert task and webhook
//! ([`alerter`]). Must not touch: DNS records, certificates, the zone.
//!
//! Leniency, each seen in real reports or cheap to accept: `mx-host` and `policy-string` as a
//! string or a list; date-times without a zone (UTC assumed), with a space instead of `T`, or
//! a bare date; `contact-info: null`; missing `sending-mta-ip`, `policy-domain`,
//! `policy-string`; unknown `policy-type` / `result-type` kept verbatim; unknown fields
//! ignored; a leading UTF-8 byte-order mark.
//!
//! Strictness: a report names a non-empty `organization-name` and `report-id`, a
//! `date-range` with start ≤ end, and at least one policy, each with a `policy-type` and a
//! `summary` of two non-negative integer counts. Session counts must fit in an `i64` (they are
//! stored in SQLite).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

pub mod alert;
pub mod alerter;
pub mod correlate;
pub mod decode;
pub mod import;
pub mod intake;
pub mod mailreport;
pub mod metrics;
pub mod smtp;
pub mod store;
pub mod summary;

pub(crate) use decode::{DecodeError, RejectKind, check_headers, decode_body};

/// The largest session count accepted: counts are stored as SQLite `INTEGER` (i64).
pub const MAX_COUNT: u64 = i64::MAX as u64;

/// An RFC 8460 aggregate report (section 4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    pub organization_name: String,
    pub date_range: DateRange,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_info: Option<String>,
    pub report_id: String,
    pub policies: Vec<PolicyReport>,
}

/// The period a report covers. Both ends are normalized to UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DateRange {
    #[serde(serialize_with = "ser_datetime", deserialize_with = "de_datetime")]
    pub start_datetime: OffsetDateTime,
    #[serde(serialize_with = "ser_datetime", deserialize_with = "de_datetime")]
    pub end_datetime: OffsetDateTime,
}

/// One policy's results within a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyReport {
    pub policy: Policy,
    pub summary: SessionSummary,
    #[serde(
        default,
        deserialize_with = "de_null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub failure_details: Vec<FailureDetail>,
}

/// The policy a sender applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Policy {
    pub policy_type: PolicyType,
    #[serde(
        default,
        deserialize_with = "de_string_or_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub policy_string: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_domain: Option<String>,
    #[serde(
        default,
        deserialize_with = "de_string_or_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mx_host: Vec<String>,
}

/// Session totals for one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SessionSummary {
    #[serde(deserialize_with = "de_count")]
    pub total_successful_session_count: u64,
    #[serde(deserialize_with = "de_count")]
    pub total_failure_session_count: u64,
}

/// One kind of failure a sender saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FailureDetail {
    pub result_type: ResultType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_mta_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_mx_hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_mx_helo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<String>,
    #[serde(deserialize_with = "de_count")]
    pub failed_session_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_information: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason_code: Option<String>,
}

/// Declares a string enum whose unknown values are kept verbatim in `Other`.
macro_rules! open_string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)*
            /// A value this version does not know, kept verbatim.
            Other(String),
        }

        impl $name {
            /// The wire form.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)*
                    $name::Other(s) => s,
                }
            }

            /// Parses the wire form; unknown values become `Other`.
            pub fn from_wire(s: &str) -> Self {
                match s {
                    $($text => $name::$variant,)*
                    other => $name::Other(other.to_string()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok($name::from_wire(&s))
            }
        }
    };
}

open_string_enum!(
    /// `policy-type` (RFC 8460 section 4.3).
    PolicyType {
        Sts => "sts",
        Tlsa => "tlsa",
        NoPolicyFound => "no-policy-found",
    }
);

open_string_enum!(
    /// `result-type` (RFC 8460 section 4.3).
    ResultType {
        StarttlsNotSupported => "starttls-not-supported",
        CertificateHostMismatch => "certificate-host-mismatch",
        CertificateExpired => "certificate-expired",
        CertificateNotTrusted => "certificate-not-trusted",
        ValidationFailure => "validation-failure",
        TlsaInvalid => "tlsa-invalid",
        DnssecInvalid => "dnssec-invalid",
        DaneRequired => "dane-required",
        StsPolicyFetchError => "sts-policy-fetch-error",
        StsPolicyInvalid => "sts-policy-invalid",
        StsWebpkiInvalid => "sts-webpki-invalid",
    }
);

impl Report {
    /// The distinct policy domains of this report, normalized (see [`normalize_domain`]).
    pub fn domains(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .policies
            .iter()
            .filter_map(|p| p.policy.policy_domain.as_deref())
            .map(normalize_domain)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Serializes the report as compact JSON (RFC 8460 field names).
    pub fn to_json(&self) -> Result<Vec<u8>, ParseError> {
        serde_json::to_vec(self).map_err(|e| ParseError::Field {
            field: "report".to_string(),
            reason: e.to_string(),
        })
    }
}

/// Lowercases a domain and drops a trailing dot, so `Example.COM.` and `example.com` group
/// together.
pub fn normalize_domain(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Why a report body is not an acceptable report. Each variant names where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is not well-formed JSON.
    #[error("not valid JSON at line {line}, column {column}: {reason}")]
    Syntax {
        reason: String,
        line: usize,
        column: usize,
    },
    /// A field is missing, has the wrong type or an unacceptable value.
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
}

impl ParseError {
    fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ParseError::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Parses and validates one JSON report.
pub fn parse_report(json: &[u8]) -> Result<Report, ParseError> {
    let json = json.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(json);
    // serde would also accept a struct written as an array; a report is an object.
    match json.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => {}
        Some(_) => return Err(ParseError::field("report", "expected a JSON object")),
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let report: Report = match serde_path_to_error::deserialize(&mut de) {
        Ok(r) => r,
        Err(e) => return Err(convert_error(e)),
    };
    // Trailing garbage after the object is a syntax error, as in serde_json::from_slice.
    if let Err(e) = de.end() {
        return Err(syntax_error(&e));
    }
    validate(&report)?;
    Ok(report)
}

fn convert_error(e: serde_path_to_error::Error<serde_json::Error>) -> ParseError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let field = if path == "." || path.is_empty() {
                "report".to_string()
            } else {
                path
            };
            ParseError::field(field, strip_position(&inner))
        }
        _ => syntax_error(&inner),
    }
}

fn syntax_error(e: &serde_json::Error) -> ParseError {
    ParseError::Syntax {
        reason: strip_position(e),
        line: e.line(),
        column: e.column(),
    }
}

/// serde_json's message without its " at line L column C" suffix (carried separately).
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(s) => s.to_string(),
        None => text,
    }
}

/// Longest string field of a report, in bytes (organization, report id, contact, policy
/// strings, host names, failure details): real reports stay far below it.
pub const MAX_FIELD_BYTES: usize = 1024;
/// Most policies in one report, and most entries in one list (policy strings, MX hosts,
/// failure details) of one policy.
pub const MAX_LIST_LEN: usize = 1000;

fn check_len(field: &str, value: &str) -> Result<(), ParseError> {
    if value.len() > MAX_FIELD_BYTES {
        return Err(ParseError::field(
            field,
            format!(
                "{} bytes long; at most {MAX_FIELD_BYTES} are accepted",
                value.len()
            ),
        ));
    }
    Ok(())
}

fn check_list<T>(field: &str, list: &[T]) -> Result<(), ParseError> {
    if list.len() > MAX_LIST_LEN {
        return Err(ParseError::field(
            field,
            format!(
                "{} entries; at most {MAX_LIST_LEN} are accepted",
                list.len()
            ),
        ));
    }
    Ok(())
}

/// Length limits of every string and list of a report, each error naming the field.
fn check_limits(r: &Report) -> Result<(), ParseError> {
    check_len("organization-name", &r.organization_name)?;
    check_len("report-id", &r.report_id)?;
    if let Some(c) = &r.contact_info {
        check_len("contact-info", c)?;
    }
    check_list("policies", &r.policies)?;
    for (i, p) in r.policies.iter().enumerate() {
        let at = |f: &str| format!("policies[{i}].{f}");
        check_list(&at("policy.policy-string"), &p.policy.policy_string)?;
        for s in &p.policy.policy_string {
            check_len(&at("policy.policy-string"), s)?;
        }
        if let Some(d) = &p.policy.policy_domain {
            check_len(&at("policy.policy-domain"), d)?;
        }
        check_list(&at("policy.mx-host"), &p.policy.mx_host)?;
        for h in &p.policy.mx_host {
            check_len(&at("policy.mx-host"), h)?;
        }
        check_list(&at("failure-details"), &p.failure_details)?;
        for (j, f) in p.failure_details.iter().enumerate() {
            let fat = |n: &str| format!("policies[{i}].failure-details[{j}].{n}");
            for (name, v) in [
                ("sending-mta-ip", &f.sending_mta_ip),
                ("receiving-mx-hostname", &f.receiving_mx_hostname),
                ("receiving-mx-helo", &f.receiving_mx_helo),
                ("receiving-ip", &f.receiving_ip),
                ("additional-information", &f.additional_information),
                ("failure-reason-code", &f.failure_reason_code),
            ] {
                if let Some(v) = v {
                    check_len(&fat(name), v)?;
                }
            }
        }
    }
    Ok(())
}

fn validate(r: &Report) -> Result<(), ParseError> {
    check_limits(r)?;
    if r.organization_name.trim().is_empty() {
        return Err(ParseError::field("organization-name", "must not be empty"));
    }
    if r.report_id.trim().is_empty() {
        return Err(ParseError::field("report-id", "must not be empty"));
    }
    let range = &r.date_range;
    if range.start_datetime > range.end_datetime {
        return Err(ParseError::field(
            "date-range",
            format!(
                "start-datetime {} is after end-datetime {}",
                fmt_datetime(range.start_datetime),
                fmt_datetime(range.end_datetime)
            ),
        ));
    }
    if r.policies.is_empty() {
        return Err(ParseError::field(
            "policies",
            "at least one policy is required",
        ));
    }
    Ok(())
}

fn fmt_datetime(dt: OffsetDateTime) -> String {
    dt.format(&Rfc3339).unwrap_or_else(|_| dt.to_string())
}

/// Parses a report date-time leniently; the result is in UTC.
///
/// Accepts RFC 3339, and, as seen from real senders, a missing zone (UTC assumed), a space
/// instead of `T`, an offset without a colon, and a bare date (midnight UTC).
pub fn parse_datetime(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    let parsed = OffsetDateTime::parse(s, &Rfc3339).ok().or_else(|| {
        let normalized: String = if s.len() > 10 && s.as_bytes()[10] == b' ' {
            format!("{}T{}", &s[..10], &s[11..])
        } else {
            s.to_string()
        };
        let with_offset = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]][offset_hour sign:mandatory][offset_minute]"
        );
        let no_zone =
            format_description!("[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]");
        let date_only = format_description!("[year]-[month]-[day]");
        OffsetDateTime::parse(&normalized, &Rfc3339)
            .ok()
            .or_else(|| OffsetDateTime::parse(&normalized, with_offset).ok())
            .or_else(|| {
                PrimitiveDateTime::parse(&normalized, no_zone)
                    .ok()
                    .map(PrimitiveDateTime::assume_utc)
            })
            .or_else(|| {
                Date::parse(&normalized, date_only)
                    .ok()
                    .map(|d| d.midnight().assume_utc())
            })
    })?;
    let utc = parsed.checked_to_offset(UtcOffset::UTC)?;
    // Only years RFC 3339 can express, so every parsed report can be written back.
    (0..=9999).contains(&utc.year()).then_some(utc)
}

pub(crate) fn ser_datetime<S: Serializer>(dt: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    let text = dt.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
    s.serialize_str(&text)
}

pub(crate) fn de_datetime<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = OffsetDateTime;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an RFC 3339 date-time string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_datetime(v).ok_or_else(|| {
                E::custom(format_args!(
                    "invalid date-time {:?}, expected RFC 3339 such as 2024-01-09T00:00:00Z",
                    truncate(v, 64)
                ))
            })
        }
    }
    d.deserialize_str(V)
}

fn de_count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            if v > MAX_COUNT {
                return Err(E::custom(format_args!("count {v} is too large")));
            }
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format_args!("count {v} is negative")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            // Some encoders write 5.0; accept whole numbers only.
            if v.fract() == 0.0 && (0.0..=(MAX_COUNT as f64)).contains(&v) {
                Ok(v as u64)
            } else {
                Err(E::custom(format_args!(
                    "count {v} is not a non-negative whole number"
                )))
            }
        }
    }
    d.deserialize_any(V)
}

fn de_string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    // Untagged enums lose the inner error; the type-mismatch message below says what is
    // expected instead.
    match Option::<serde_json::Value>::deserialize(d)? {
        None => Ok(Vec::new()),
        Some(v) => match OneOrMany::deserialize(v) {
            Ok(OneOrMany::One(s)) => Ok(vec![s]),
            Ok(OneOrMany::Many(v)) => Ok(v),
            Err(_) => Err(de::Error::custom("expected a string or a list of strings")),
        },
    }
}

fn de_null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// At most `max` characters of `s`, for error messages that quote input.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
