//! The result of a check run: one finding per check and host, the verdicts derived from them,
//! and the two ways of printing it (text for people, a stable JSON document for scripts).
//!
//! Pure: no I/O.

use serde::Serialize;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Mail is, or may be, not protected as intended: exit 1.
    Fail,
    /// Worth fixing, does not break delivery or protection today.
    Warn,
    /// Not checked, with the reason in `seen`.
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "ok",
            Status::Fail => "FAIL",
            Status::Warn => "warn",
            Status::Skip => "skip",
        }
    }
}

/// One check on one host: what was seen and, when it is not a pass, the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// A stable id, e.g. `dane.match` or `mta-sts.mx-covered`.
    pub check: &'static str,
    /// The domain or MX host the check is about.
    pub host: String,
    pub status: Status,
    pub seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The verdict of one protection for a domain or an MX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Fail,
    /// MTA-STS in `testing` mode: senders report but deliver anyway.
    Testing,
    Absent,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Fail => "fail",
            Verdict::Testing => "testing",
            Verdict::Absent => "absent",
        }
    }
}

/// The certificate an MX presented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// The `3 1 1` data of its key (hex SHA-256 of the SPKI).
    pub key: String,
    pub names: Vec<String>,
    /// RFC 3339.
    pub not_after: String,
    pub issuer: String,
}

/// One MX host of a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MxReport {
    pub host: String,
    pub addresses: Vec<String>,
    /// Where STARTTLS was tried.
    pub endpoint: Option<String>,
    pub dane: Verdict,
    pub mta_sts: Verdict,
    /// The TLSA records as published (`usage selector mtype data`).
    pub tlsa: Vec<String>,
    pub certificate: Option<CertInfo>,
}

/// One domain: verdicts, MX hosts and every finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainReport {
    pub domain: String,
    pub dane: Verdict,
    pub mta_sts: Verdict,
    pub tls_rpt: Verdict,
    /// The policy mode served, when a policy was fetched.
    pub policy_mode: Option<String>,
    pub mx: Vec<MxReport>,
    pub checks: Vec<Finding>,
}

impl DomainReport {
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|f| f.status == Status::Fail)
    }
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The document's format version.
    pub version: u32,
    pub ok: bool,
    pub domains: Vec<DomainReport>,
}

impl Report {
    pub fn new(domains: Vec<DomainReport>) -> Report {
        Report {
            version: 1,
            ok: !domains.iter().any(DomainReport::failed),
            domains,
        }
    }

    /// The text for people: verdicts first, then one line per finding that is not a pass.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for d in &self.domains {
            let mode = d
                .policy_mode
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            out.push_str(&format!(
                "{}: DANE {}  MTA-STS {}{mode}  TLS-RPT {}\n",
                d.domain,
                d.dane.as_str(),
                d.mta_sts.as_str(),
                d.tls_rpt.as_str()
            ));
            for m in &d.mx {
                let cert = m
                    .certificate
                    .as_ref()
                    .map(|c| format!("  certificate until {}", c.not_after))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "  {}: DANE {}  MTA-STS {}  [{}]{cert}\n",
                    m.host,
                    m.dane.as_str(),
                    m.mta_sts.as_str(),
                    m.addresses.join(", ")
                ));
            }
            for f in d.checks.iter().filter(|f| f.status != Status::Pass) {
                out.push_str(&format!(
                    "  {} {} {}: {}",
                    f.status.label(),
                    f.check,
                    terminal(&f.host),
                    terminal(&f.seen)
                ));
                if let Some(fix) = &f.fix {
                    out.push_str(&format!(" — fix: {}", terminal(fix)));
                }
                out.push('\n');
            }
        }
        out
    }
}

/// Text for a terminal: control characters (from DNS or HTTP answers) shown as `?`.
fn terminal(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Collects findings while a domain is checked.
#[derive(Debug, Default)]
pub struct Findings(pub Vec<Finding>);

impl Findings {
    pub fn pass(&mut self, check: &'static str, host: &str, seen: impl Into<String>) {
        self.push(check, host, Status::Pass, seen.into(), None);
    }

    pub fn fail(
        &mut self,
        check: &'static str,
        host: &str,
        seen: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(check, host, Status::Fail, seen.into(), Some(fix.into()));
    }

    pub fn warn(
        &mut self,
        check: &'static str,
        host: &str,
        seen: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(check, host, Status::Warn, seen.into(), Some(fix.into()));
    }

    pub fn skip(&mut self, check: &'static str, host: &str, why: impl Into<String>) {
        self.push(check, host, Status::Skip, why.into(), None);
    }

    fn push(
        &mut self,
        check: &'static str,
        host: &str,
        status: Status,
        seen: String,
        fix: Option<String>,
    ) {
        self.0.push(Finding {
            check,
            host: host.to_string(),
            status,
            seen,
            fix,
        });
    }

    /// True when a check of this id about `host` failed.
    pub fn failed(&self, host: &str, checks: &[&str]) -> bool {
        self.0
            .iter()
            .any(|f| f.status == Status::Fail && f.host == host && checks.contains(&f.check))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut f = Findings::default();
        f.pass("dns.mx", "example.com", "1 MX, secure");
        f.fail(
            "dane.match",
            "mx1.example.com",
            "presented key 3 1 1 ab… matches no TLSA record",
            "publish the live key's record",
        );
        f.skip(
            "dnssec.ds",
            "example.com",
            "trust anchor is the zone's own key",
        );
        Report::new(vec![DomainReport {
            domain: "example.com".into(),
            dane: Verdict::Fail,
            mta_sts: Verdict::Ok,
            tls_rpt: Verdict::Absent,
            policy_mode: Some("enforce".into()),
            mx: vec![MxReport {
                host: "mx1.example.com".into(),
                addresses: vec!["192.0.2.1".into()],
                endpoint: Some("192.0.2.1:25".into()),
                dane: Verdict::Fail,
                mta_sts: Verdict::Ok,
                tlsa: vec!["3 1 1 cd".into()],
                certificate: None,
            }],
            checks: f.0,
        }])
    }

    #[test]
    fn a_failed_check_fails_the_run_and_is_printed_with_its_fix() {
        let r = sample();
        assert!(!r.ok);
        let text = r.render_text();
        assert!(
            text.starts_with("example.com: DANE fail  MTA-STS ok (enforce)  TLS-RPT absent\n"),
            "{text}"
        );
        assert!(text.contains("  mx1.example.com: DANE fail  MTA-STS ok  [192.0.2.1]\n"));
        assert!(text.contains(
            "  FAIL dane.match mx1.example.com: presented key 3 1 1 ab… matches no TLSA record — fix: publish the live key's record\n"
        ));
        assert!(text.contains("  skip dnssec.ds example.com: trust anchor"));
        assert!(!text.contains("dns.mx"), "passes are not listed: {text}");
    }

    #[test]
    fn json_document_is_stable() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["ok"], false);
        let d = &v["domains"][0];
        assert_eq!(d["dane"], "fail");
        assert_eq!(d["tls_rpt"], "absent");
        assert_eq!(d["mx"][0]["mta_sts"], "ok");
        assert_eq!(d["checks"][1]["status"], "fail");
        assert_eq!(d["checks"][1]["check"], "dane.match");
        assert!(d["checks"][0].get("fix").is_none());
    }
}
