//! Finding the TLS-RPT report inside a mail message (RFC 8460 section 5.3, `rua=mailto:`).
//!
//! Owns: `find_report`, which takes raw RFC 5322 message bytes and returns the report
//! attachment, transfer-decoded (base64 / quoted-printable), plus the media type to hand to
//! `Intake::ingest`; and `report_address_behind_mx`, the config check that warns when report
//! mail would travel through the very MX hosts the reports are about.
//!
//! Must not touch: sockets, files, the clock, tokio, the report model. Gunzip and JSON parsing
//! stay in `crate::tlsrpt` (via the intake), so the size caps live in one place.
//!
//! What counts as the report, best first (the first part of the best rank wins; RFC 8460
//! allows one report per message):
//! 1. a part of type `application/tlsrpt+gzip` or `application/tlsrpt+json` (anywhere: inside
//!    `multipart/report; report-type=tlsrpt`, another multipart, or a forwarded
//!    `message/rfc822`);
//! 2. `application/gzip`, `application/x-gzip` or `application/json`;
//! 3. any other non-multipart part whose file name ends in `.json.gz`, `.json` or `.gz`
//!    (for example `application/octet-stream` from senders that do not label reports).
//!
//! Refusals: `MailReportError::Malformed` when the MIME structure cannot be trusted (no
//! header section, a multipart without a boundary or whose boundary never occurs, a report
//! part whose base64 does not decode); `MailReportError::NoReport` listing the media types
//! that were found instead. Arbitrary bytes never panic (property-tested).

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};

/// The gzip magic bytes: the report is gzip whatever the part's label says.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Forwarded messages are searched at most this deep.
const MAX_NESTING: usize = 4;
/// At most this many media types are listed in a [`MailReportError::NoReport`].
const MAX_FOUND: usize = 8;

/// The media type handed to the intake for a gzip report.
pub(crate) const TLSRPT_GZIP: &str = "application/tlsrpt+gzip";
/// The media type handed to the intake for a JSON report.
pub(crate) const TLSRPT_JSON: &str = "application/tlsrpt+json";

/// Why no report could be taken from a message. Variants carry what was seen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MailReportError {
    #[error("malformed MIME: {reason}")]
    Malformed { reason: String },
    #[error("no TLS-RPT report in message: found {}", found_text(.found))]
    NoReport {
        /// The media types of the parts that were present (deduplicated, at most a few).
        found: Vec<String>,
    },
}

fn found_text(found: &[String]) -> String {
    if found.is_empty() {
        "no MIME parts".to_string()
    } else {
        found.join(", ")
    }
}

/// The report taken from a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MailReport {
    /// The attachment after transfer decoding (still gzip when it was gzip).
    pub data: Vec<u8>,
    /// [`TLSRPT_GZIP`] or [`TLSRPT_JSON`]: what to pass to `Intake::ingest`.
    pub content_type: &'static str,
    /// The part's own media type, lowercased, e.g. `application/octet-stream`.
    pub declared_type: String,
    /// The part's file name, when it has one.
    pub filename: Option<String>,
    /// The `TLS-Report-Submitter` header of the message, when present.
    pub submitter: Option<String>,
    /// The `TLS-Report-Domain` header of the message, when present.
    pub report_domain: Option<String>,
}

/// Finds the TLS-RPT report in `raw` (an RFC 5322 message, CRLF or LF line ends).
pub(crate) fn find_report(raw: &[u8]) -> Result<MailReport, MailReportError> {
    // mail-parser 0.11 panics on some broken multipart nestings ("Invalid part ID, could not
    // find multipart"); a message it cannot parse is malformed, never a crash.
    let parsed = std::panic::catch_unwind(|| MessageParser::default().parse(raw))
        .map_err(|_| malformed("broken MIME structure (the parser gave up)"))?;
    let message = parsed.ok_or_else(|| malformed("no header section"))?;
    if message.parts.is_empty() || message.root_part().headers.is_empty() {
        return Err(malformed("no header section"));
    }
    let mut search = Search::default();
    search.message(&message, 0)?;
    let Some(best) = search.best else {
        return Err(MailReportError::NoReport {
            found: search.found,
        });
    };
    let header = |name: &str| {
        message
            .header_raw(name)
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|v| !v.is_empty())
    };
    let content_type = if best.data.starts_with(&GZIP_MAGIC) {
        TLSRPT_GZIP
    } else if best.declared_json {
        TLSRPT_JSON
    } else {
        // Labelled gzip but not gzip: the intake says so ("neither gzip nor JSON") unless it is
        // plain JSON after all.
        TLSRPT_GZIP
    };
    Ok(MailReport {
        data: best.data,
        content_type,
        declared_type: best.declared_type,
        filename: best.filename,
        submitter: header("TLS-Report-Submitter"),
        report_domain: header("TLS-Report-Domain"),
    })
}

fn malformed(reason: impl Into<String>) -> MailReportError {
    MailReportError::Malformed {
        reason: reason.into(),
    }
}

/// A report candidate.
struct Candidate {
    rank: u8,
    data: Vec<u8>,
    declared_type: String,
    declared_json: bool,
    filename: Option<String>,
}

#[derive(Default)]
struct Search {
    best: Option<Candidate>,
    found: Vec<String>,
}

impl Search {
    fn message(&mut self, message: &Message<'_>, depth: usize) -> Result<(), MailReportError> {
        for part in &message.parts {
            self.part(part, depth)?;
        }
        Ok(())
    }

    fn part(&mut self, part: &MessagePart<'_>, depth: usize) -> Result<(), MailReportError> {
        let media = media_type(part);
        match &part.body {
            PartType::Multipart(_) => Ok(()),
            PartType::Message(inner) => {
                if depth < MAX_NESTING {
                    self.message(inner, depth + 1)
                } else {
                    Ok(())
                }
            }
            _ => {
                if media.starts_with("multipart/") {
                    // mail-parser falls back to text when the boundary is missing or unused.
                    return Err(
                        match part.content_type().and_then(|c| c.attribute("boundary")) {
                            None => malformed(format!("{media} without a boundary parameter")),
                            Some(b) => malformed(format!(
                                "{media} boundary {:?} never occurs in the body",
                                crate::tlsrpt::truncate(b, 80)
                            )),
                        },
                    );
                }
                let filename = part
                    .attachment_name()
                    .map(|n| crate::tlsrpt::truncate(n, 200));
                let rank = rank(&media, filename.as_deref());
                if rank == 0 {
                    self.note(media);
                    return Ok(());
                }
                if part.is_encoding_problem {
                    return Err(malformed(format!(
                        "report part {media}{} is not valid {}",
                        filename
                            .as_deref()
                            .map(|f| format!(" ({f:?})"))
                            .unwrap_or_default(),
                        part.content_transfer_encoding()
                            .unwrap_or("transfer encoding")
                    )));
                }
                if self.best.as_ref().is_none_or(|b| b.rank < rank) {
                    let lower_name = filename.as_deref().map(str::to_ascii_lowercase);
                    self.best = Some(Candidate {
                        rank,
                        data: part.contents().to_vec(),
                        declared_json: media.ends_with("json")
                            || lower_name.is_some_and(|n| n.ends_with(".json")),
                        declared_type: media,
                        filename,
                    });
                }
                Ok(())
            }
        }
    }

    fn note(&mut self, media: String) {
        if self.found.len() < MAX_FOUND && !self.found.contains(&media) {
            self.found.push(media);
        }
    }
}

/// `type/subtype`, lowercased; `text/plain` when the part has no (usable) Content-Type.
fn media_type(part: &MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => {
            let sub = ct.subtype().unwrap_or("");
            let mut media = format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase();
            media.retain(|c| !c.is_control());
            crate::tlsrpt::truncate(&media, 100)
        }
        None => "text/plain".to_string(),
    }
}

/// 0 = not a report; higher is better.
fn rank(media: &str, filename: Option<&str>) -> u8 {
    match media {
        "application/tlsrpt+gzip" | "application/tlsrpt+json" => 3,
        "application/gzip" | "application/x-gzip" | "application/json" => 2,
        _ => {
            let named = filename.is_some_and(|n| {
                let n = n.to_ascii_lowercase();
                n.ends_with(".json.gz") || n.ends_with(".json") || n.ends_with(".gz")
            });
            u8::from(named)
        }
    }
}

/// The domain of a report address such as `mailto:tlsrpt@example.org?subject=x` or
/// `tlsrpt@Example.ORG.`: lowercased, without a trailing dot. `None` when there is no `@`.
pub(crate) fn report_address_domain(address: &str) -> Option<String> {
    let address = address.trim();
    let address = match address.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("mailto:") => &address[7..],
        _ => address,
    };
    let address = address.split(['?', '!']).next().unwrap_or("");
    let (_, domain) = address.rsplit_once('@')?;
    let domain = crate::tlsrpt::normalize_domain(domain);
    (!domain.is_empty()).then_some(domain)
}

/// Whether report mail to `address` would be delivered through the MX hosts the reports are
/// about: its domain is `domain` itself, or one of `mx_hosts` (mail to a host name without MX
/// records goes to that host). A TLS failure at those MX hosts would then also stop the
/// reports about it; `check-config` warns and suggests an address in another domain (or HTTPS
/// reporting).
///
/// Names compare case-insensitively and without a trailing dot; an address without `@` is not
/// judged (false).
pub(crate) fn report_address_behind_mx(address: &str, mx_hosts: &[String], domain: &str) -> bool {
    let Some(addr_domain) = report_address_domain(address) else {
        return false;
    };
    addr_domain == crate::tlsrpt::normalize_domain(domain)
        || mx_hosts
            .iter()
            .any(|mx| crate::tlsrpt::normalize_domain(mx) == addr_domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_rfc822_parts_that_crash_the_mime_parser_are_malformed() {
        // Found by `find_report_never_panics_on_mime_shaped_text`: mail-parser 0.11.9 panics.
        let raw = "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\nContent-Type: message/rfc822\n\n\n--b--\n";
        let e = find_report(raw.as_bytes()).unwrap_err();
        assert!(
            matches!(&e, MailReportError::Malformed { reason } if reason.contains("broken MIME")),
            "{e}"
        );
    }
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use proptest::prelude::*;
    use std::io::Write;

    const SAMPLE: &[u8] =
        include_bytes!("../../tests/fixtures/tlsrpt/google.com_smtp_tls_report.eml");
    const SAMPLE_JSON: &[u8] =
        include_bytes!("../../tests/fixtures/tlsrpt/google.com.from-eml.json");

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn b64(data: &[u8]) -> String {
        data_encoding::BASE64_MIME.encode(data)
    }

    /// A message with one text part and one attachment part (`headers` are its MIME headers).
    fn message_with(part_headers: &str, body: &str) -> Vec<u8> {
        format!(
            "From: a@example.net\r\nTo: tlsrpt@example.org\r\nSubject: r\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=tlsrpt; boundary=\"XX\"\r\n\r\n\
             --XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
             --XX\r\n{part_headers}\r\n\r\n{body}\r\n--XX--\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn google_sample_yields_the_gzip_attachment() {
        let r = find_report(SAMPLE).unwrap();
        assert_eq!(r.content_type, TLSRPT_GZIP);
        assert_eq!(r.declared_type, "application/tlsrpt+gzip");
        assert_eq!(
            r.filename.as_deref(),
            Some("google.com!cardinalhealth.ca!1725321600!1725407999!001.json.gz")
        );
        assert_eq!(r.submitter.as_deref(), Some("google.com"));
        assert_eq!(r.report_domain.as_deref(), Some("cardinalhealth.ca"));
        let json = crate::tlsrpt::decode::gunzip_capped(&r.data, 1 << 20).unwrap();
        assert_eq!(json, SAMPLE_JSON);
    }

    #[test]
    fn google_sample_with_lf_line_ends_works_too() {
        let lf: Vec<u8> = String::from_utf8_lossy(SAMPLE)
            .replace("\r\n", "\n")
            .into_bytes();
        let r = find_report(&lf).unwrap();
        assert_eq!(
            crate::tlsrpt::decode::gunzip_capped(&r.data, 1 << 20).unwrap(),
            SAMPLE_JSON
        );
    }

    #[test]
    fn the_usual_variants_are_found() {
        let z = gz(SAMPLE_JSON);
        let cases: Vec<(String, String, &'static str)> = vec![
            (
                "Content-Type: application/tlsrpt+json\r\nContent-Transfer-Encoding: base64".into(),
                b64(SAMPLE_JSON),
                TLSRPT_JSON,
            ),
            (
                "Content-Type: application/tlsrpt+json".into(),
                String::from_utf8(SAMPLE_JSON.to_vec()).unwrap(),
                TLSRPT_JSON,
            ),
            (
                "Content-Type: application/gzip\r\nContent-Transfer-Encoding: base64".into(),
                b64(&z),
                TLSRPT_GZIP,
            ),
            (
                "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; \
                 filename=\"r.json.gz\"\r\nContent-Transfer-Encoding: base64"
                    .into(),
                b64(&z),
                TLSRPT_GZIP,
            ),
            (
                "Content-Type: application/octet-stream; name=r.json\r\n\
                 Content-Transfer-Encoding: base64"
                    .into(),
                b64(SAMPLE_JSON),
                TLSRPT_JSON,
            ),
            (
                "Content-Type: APPLICATION/TLSRPT+GZIP\r\nContent-Transfer-Encoding: BASE64".into(),
                b64(&z),
                TLSRPT_GZIP,
            ),
        ];
        for (headers, body, want) in cases {
            let r = find_report(&message_with(&headers, &body))
                .unwrap_or_else(|e| panic!("{headers}: {e}"));
            assert_eq!(r.content_type, want, "{headers}");
            let json = if want == TLSRPT_GZIP {
                crate::tlsrpt::decode::gunzip_capped(&r.data, 1 << 20).unwrap()
            } else {
                r.data.clone()
            };
            assert_eq!(json, SAMPLE_JSON, "{headers}");
        }
    }

    #[test]
    fn nested_multipart_and_forwarded_message_are_searched() {
        let z = b64(&gz(SAMPLE_JSON));
        let nested = format!(
            "From: a@example.net\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
             --outer\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
             --outer\r\nContent-Type: multipart/report; report-type=tlsrpt; boundary=\"inner\"\r\n\r\n\
             --inner\r\nContent-Type: text/plain\r\n\r\nreport\r\n\
             --inner\r\nContent-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64\r\n\r\n{z}\r\n\
             --inner--\r\n--outer--\r\n"
        );
        let r = find_report(nested.as_bytes()).unwrap();
        assert_eq!(r.declared_type, "application/tlsrpt+gzip");

        let forwarded = format!(
            "From: me@example.org\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"fw\"\r\n\r\n\
             --fw\r\nContent-Type: text/plain\r\n\r\nforwarding\r\n\
             --fw\r\nContent-Type: message/rfc822\r\n\r\n{}\r\n--fw--\r\n",
            String::from_utf8_lossy(SAMPLE)
        );
        let r = find_report(forwarded.as_bytes()).unwrap();
        assert_eq!(
            crate::tlsrpt::decode::gunzip_capped(&r.data, 1 << 20).unwrap(),
            SAMPLE_JSON
        );
    }

    #[test]
    fn the_best_ranked_part_wins() {
        let z = b64(&gz(SAMPLE_JSON));
        let msg = format!(
            "From: a@example.net\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: application/octet-stream; name=other.gz\r\n\
             Content-Transfer-Encoding: base64\r\n\r\nAAAA\r\n\
             --b\r\nContent-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64\r\n\r\n{z}\r\n--b--\r\n"
        );
        let r = find_report(msg.as_bytes()).unwrap();
        assert_eq!(r.declared_type, "application/tlsrpt+gzip");
    }

    #[test]
    fn ordinary_mail_is_no_report_naming_what_was_found() {
        let plain = b"From: a@example.net\r\nSubject: hi\r\n\r\njust text\r\n";
        let e = find_report(plain).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no TLS-RPT report in message: found text/plain"
        );
        let alt = b"From: a@example.net\r\nMIME-Version: 1.0\r\n\
            Content-Type: multipart/alternative; boundary=\"a\"\r\n\r\n\
            --a\r\nContent-Type: text/plain\r\n\r\nx\r\n\
            --a\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n\
            --a\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--a--\r\n";
        let e = find_report(alt).unwrap_err();
        assert_eq!(
            e,
            MailReportError::NoReport {
                found: vec!["text/plain".into(), "text/html".into(), "image/png".into()]
            }
        );
    }

    #[test]
    fn malformed_mime_is_named() {
        let no_boundary = b"From: a@example.net\r\nMIME-Version: 1.0\r\n\
            Content-Type: multipart/report; report-type=tlsrpt\r\n\r\n--x\r\nstuff\r\n";
        let e = find_report(no_boundary).unwrap_err();
        assert!(
            matches!(&e, MailReportError::Malformed { reason } if reason.contains("without a boundary")),
            "{e}"
        );
        let unused = b"From: a@example.net\r\nMIME-Version: 1.0\r\n\
            Content-Type: multipart/report; boundary=\"zz\"\r\n\r\nno parts here\r\n";
        let e = find_report(unused).unwrap_err();
        assert!(
            matches!(&e, MailReportError::Malformed { reason } if reason.contains("never occurs")),
            "{e}"
        );
        let bad_b64 = message_with(
            "Content-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64",
            "!!!! not base64 at all ####",
        );
        let e = find_report(&bad_b64).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("malformed MIME: report part application/tlsrpt+gzip"),
            "{e}"
        );
        for garbage in [&b""[..], b"\r\n\r\n", b"\x00\xff\xfe"] {
            assert!(find_report(garbage).is_err());
        }
    }

    #[test]
    fn a_bad_gzip_attachment_is_handed_on_as_gzip() {
        // The intake's gunzip reports the error; here it is just bytes.
        let mut bad = gz(SAMPLE_JSON);
        bad.truncate(bad.len() / 2);
        let msg = message_with(
            "Content-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64",
            &b64(&bad),
        );
        let r = find_report(&msg).unwrap();
        assert_eq!(r.content_type, TLSRPT_GZIP);
        assert_eq!(r.data, bad);
    }

    #[test]
    fn report_address_behind_mx_cases() {
        let mx = vec![
            "mx1.example.org.".to_string(),
            "MX2.Example.org".to_string(),
        ];
        assert!(report_address_behind_mx(
            "mailto:tlsrpt@example.org",
            &mx,
            "example.org"
        ));
        assert!(report_address_behind_mx(
            "tlsrpt@EXAMPLE.ORG.",
            &mx,
            "example.org."
        ));
        assert!(report_address_behind_mx(
            "MAILTO:r@mx2.example.org?subject=x",
            &mx,
            "example.org"
        ));
        assert!(!report_address_behind_mx(
            "mailto:tlsrpt@reports.example.net",
            &mx,
            "example.org"
        ));
        assert!(!report_address_behind_mx(
            "mailto:tlsrpt@sub.example.org",
            &mx,
            "example.org"
        ));
        assert!(!report_address_behind_mx(
            "https://example.org/tlsrpt",
            &mx,
            "example.org"
        ));
        assert!(!report_address_behind_mx("", &mx, "example.org"));
        assert_eq!(
            report_address_domain("mailto:a@B.example!10m").as_deref(),
            Some("b.example")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn find_report_never_panics_on_bytes(raw in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = find_report(&raw);
        }

        #[test]
        fn find_report_never_panics_on_mangled_samples(
            cut in 0usize..SAMPLE.len(),
            at in 0usize..SAMPLE.len(),
            junk in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut raw = SAMPLE[..cut.max(at)].to_vec();
            let at = at.min(raw.len());
            raw.splice(at..at, junk);
            let _ = find_report(&raw);
        }

        #[test]
        fn find_report_never_panics_on_mime_shaped_text(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("--b".to_string()),
                    Just("--b--".to_string()),
                    Just("Content-Type: multipart/mixed; boundary=b".to_string()),
                    Just("Content-Type: application/tlsrpt+gzip".to_string()),
                    Just("Content-Type: message/rfc822".to_string()),
                    Just("Content-Transfer-Encoding: base64".to_string()),
                    Just("Content-Transfer-Encoding: quoted-printable".to_string()),
                    Just(String::new()),
                    "[ -~]{0,40}",
                ],
                0..40,
            )
        ) {
            let raw = format!("From: a@b\r\n{}", lines.join("\r\n"));
            let _ = find_report(raw.as_bytes());
        }
    }
}
