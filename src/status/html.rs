//! The status page as HTML: per domain the posture verdicts with their problem lines, the
//! certificates, the rollover state, the last changes and the TLS-RPT charts. Rendered on
//! the server, works without JavaScript, loads nothing else (styles inline).
//!
//! Pure: [`PageData`] in, HTML out. Every string is escaped.

use std::fmt::Write;

use super::svg;
use crate::check::report::{DomainReport, Status, Verdict};
use crate::dane::view::RollView;
use crate::tlsrpt::summary::DailySessions;

/// HTML escaping for text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Where the posture checks stand.
#[derive(Debug, Clone)]
pub enum Checks {
    Off,
    Pending,
    /// The last run could not check (resolver, roots): why.
    Failed {
        at: String,
        why: String,
    },
    Ran {
        at: String,
    },
}

/// One certificate row.
#[derive(Debug, Clone)]
pub struct CertRow {
    pub name: String,
    pub key: String,
    pub not_after: Option<String>,
    pub next_renewal: Option<String>,
    pub problem: Option<String>,
}

/// One line of the timeline.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: u64,
    /// `rollover`, `certificate`, `policy`, `reload`, `failing`, `recovered`.
    pub kind: String,
    pub text: String,
}

/// What TLS-RPT says about the domain over the charted days.
#[derive(Debug, Clone, Default)]
pub struct TlsRpt {
    pub daily: Vec<DailySessions>,
    /// (result type, failed sessions).
    pub result_types: Vec<(String, u64)>,
    /// (organization, sessions, failed sessions), most sessions first.
    pub organizations: Vec<(String, u64, u64)>,
    /// Set when the store could not be read.
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DomainData {
    pub name: String,
    /// Push mode: the primary and the last failure of a push, if any.
    pub push: Option<(String, Option<String>)>,
    pub report: Option<DomainReport>,
    pub certs: Vec<CertRow>,
    pub rolls: Vec<(String, RollView)>,
    pub events: Vec<Event>,
    /// `None`: TLS-RPT intake is off.
    pub tlsrpt: Option<TlsRpt>,
}

#[derive(Debug, Clone)]
pub struct PageData {
    pub generated: String,
    /// Today, in days since 1970-01-01 (the charts end here).
    pub today: i64,
    /// Days charted.
    pub days: i64,
    pub checks: Checks,
    pub domains: Vec<DomainData>,
}

/// Policy types charted one by one (the others together).
const MAX_TYPES: usize = 4;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#222}\
header{background:#263238;color:#fff;padding:12px 24px}header h1{margin:0;font-size:20px}\
header p{margin:4px 0 0;color:#cfd8dc}main{padding:8px 24px 40px}\
section.domain{background:#fff;border:1px solid #ddd;border-radius:6px;margin:16px 0;padding:12px 18px}\
h2{margin:4px 0 8px;font-size:18px}h3{font-size:14px;margin:14px 0 6px;color:#455a64}\
.v{display:inline-block;padding:2px 8px;border-radius:10px;color:#fff;font-weight:600;margin-right:6px}\
.v.ok{background:#2e7d32}.v.fail{background:#c62828}.v.testing{background:#ef6c00}.v.absent{background:#78909c}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:3px 8px;border-bottom:1px solid #eee;vertical-align:top}\
th{color:#607d8b;font-weight:600}.problem{color:#b71c1c}.warn{color:#e65100}.skip{color:#607d8b}\
code{font-size:12px;word-break:break-all}.muted{color:#78909c}ul{margin:4px 0;padding-left:18px}";

fn verdict(label: &str, v: Verdict) -> String {
    format!(
        "<span class=\"v {}\" data-verdict=\"{}\">{} {}</span>",
        v.as_str(),
        esc(label),
        esc(label),
        v.as_str()
    )
}

fn time_of(at: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(at as i64)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| at.to_string())
}

pub fn render(p: &PageData) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>mxguard status</title><style>{STYLE}</style></head><body><header><h1>mxguard status</h1><p>{}</p></header><main>",
        esc(&format!(
            "{} · {}",
            p.generated,
            match &p.checks {
                Checks::Off => "posture checks are off ([check] interval = 0)".to_string(),
                Checks::Pending => "posture checks: first run pending".to_string(),
                Checks::Failed { at, why } =>
                    format!("posture checks could not run at {at}: {why}"),
                Checks::Ran { at } => format!("posture checked {at}"),
            }
        ))
    );
    if p.domains.is_empty() {
        s.push_str("<p>No domains configured.</p>");
    }
    for d in &p.domains {
        domain(&mut s, d, p);
    }
    s.push_str("</main></body></html>\n");
    s
}

fn domain(s: &mut String, d: &DomainData, p: &PageData) {
    let _ = write!(
        s,
        "<section class=\"domain\" id=\"{}\"><h2>{}</h2>",
        esc(&d.name),
        esc(&d.name)
    );
    if let Some((server, failure)) = &d.push {
        let _ = write!(
            s,
            "<p class=\"muted\">records pushed by RFC 2136 to {}</p>",
            esc(server)
        );
        if let Some(f) = failure {
            let _ = write!(s, "<p class=\"problem\">push failing: {}</p>", esc(f));
        }
    }
    // Verdicts and problems.
    match &d.report {
        None => s.push_str("<p class=\"muted\">No posture check result yet.</p>"),
        Some(r) => {
            s.push_str("<p>");
            s.push_str(&verdict("DANE", r.dane));
            s.push_str(&verdict("MTA-STS", r.mta_sts));
            s.push_str(&verdict("TLS-RPT", r.tls_rpt));
            if let Some(m) = &r.policy_mode {
                let _ = write!(s, "<span class=\"muted\">policy mode {}</span>", esc(m));
            }
            s.push_str("</p>");
            if !r.mx.is_empty() {
                s.push_str(
                    "<table><tr><th>MX</th><th>DANE</th><th>MTA-STS</th><th>addresses</th></tr>",
                );
                for m in &r.mx {
                    let _ = write!(
                        s,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&m.host),
                        verdict("DANE", m.dane),
                        verdict("MTA-STS", m.mta_sts),
                        esc(&m.addresses.join(", "))
                    );
                }
                s.push_str("</table>");
            }
            let problems: Vec<_> = r
                .checks
                .iter()
                .filter(|f| f.status != Status::Pass)
                .collect();
            if !problems.is_empty() {
                s.push_str("<h3>Problems and notes</h3><ul class=\"problems\">");
                for f in problems {
                    let class = match f.status {
                        Status::Fail => "problem",
                        Status::Warn => "warn",
                        _ => "skip",
                    };
                    let _ = write!(
                        s,
                        "<li class=\"{class}\"><b>{}</b> {} — {}{}</li>",
                        esc(f.check),
                        esc(&f.host),
                        esc(&f.seen),
                        f.fix
                            .as_deref()
                            .map(|x| format!(" <span class=\"muted\">fix: {}</span>", esc(x)))
                            .unwrap_or_default()
                    );
                }
                s.push_str("</ul>");
            }
        }
    }
    // Certificates.
    if !d.certs.is_empty() {
        s.push_str("<h3>Certificates</h3><table><tr><th>name</th><th>key (SPKI SHA-256)</th><th>expires</th><th>next renewal</th><th></th></tr>");
        for c in &d.certs {
            let _ = write!(
                s,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"problem\">{}</td></tr>",
                esc(&c.name),
                esc(&c.key),
                esc(c.not_after.as_deref().unwrap_or("not issued yet")),
                esc(c.next_renewal.as_deref().unwrap_or("-")),
                esc(c.problem.as_deref().unwrap_or(""))
            );
        }
        s.push_str("</table>");
    }
    // Rollover.
    if !d.rolls.is_empty() {
        s.push_str("<h3>DANE key rollover</h3><table><tr><th>MX</th><th>TLSA 3 1 1</th><th>state</th></tr>");
        for (host, v) in &d.rolls {
            let records: Vec<String> = v
                .records
                .iter()
                .map(|(k, role)| {
                    format!(
                        "<code>{}</code> <span class=\"muted\">{}</span>",
                        esc(k),
                        esc(role)
                    )
                })
                .collect();
            let mut state = esc(&v.state);
            if let Some(h) = &v.held {
                let _ = write!(state, "<br><span class=\"warn\">held: {}</span>", esc(h));
            }
            if let Some(e) = &v.last_error {
                let _ = write!(
                    state,
                    "<br><span class=\"problem\">last error: {}</span>",
                    esc(e)
                );
            }
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{state}</td></tr>",
                esc(host),
                records.join("<br>")
            );
        }
        s.push_str("</table>");
    }
    // Timeline.
    s.push_str("<h3>Last changes</h3>");
    if d.events.is_empty() {
        s.push_str("<p class=\"muted\">None recorded yet.</p>");
    } else {
        s.push_str("<table class=\"timeline\">");
        for e in &d.events {
            let class = match e.kind.as_str() {
                "failing" => " class=\"problem\"",
                _ => "",
            };
            let _ = write!(
                s,
                "<tr{class}><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&time_of(e.at)),
                esc(&e.kind),
                esc(&e.text)
            );
        }
        s.push_str("</table>");
    }
    // TLS-RPT.
    match &d.tlsrpt {
        None => s.push_str("<h3>TLS-RPT</h3><p class=\"muted\">TLS-RPT intake is off.</p>"),
        Some(t) => tlsrpt(s, d, t, p),
    }
    s.push_str("</section>");
}

fn tlsrpt(s: &mut String, d: &DomainData, t: &TlsRpt, p: &PageData) {
    let _ = write!(s, "<h3>TLS-RPT, last {} days</h3>", p.days);
    if let Some(e) = &t.error {
        let _ = write!(
            s,
            "<p class=\"problem\">reports unavailable: {}</p>",
            esc(e)
        );
        return;
    }
    if t.daily.is_empty() {
        s.push_str("<p class=\"muted\">No reports in this period.</p>");
        return;
    }
    // The policy types with the most sessions get a chart each; reporters may invent types,
    // so the rest are drawn together as "other".
    let mut totals: std::collections::BTreeMap<&str, u64> = Default::default();
    for x in &t.daily {
        let e = totals.entry(x.policy_type.as_str()).or_default();
        *e = e.saturating_add(x.successful.saturating_add(x.failed));
    }
    let mut ranked: Vec<(&str, u64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let shown: Vec<&str> = ranked.iter().take(MAX_TYPES).map(|(t, _)| *t).collect();
    let mut charts: Vec<&str> = shown.clone();
    charts.sort();
    if ranked.len() > MAX_TYPES {
        charts.push("other");
    }
    for ty in charts {
        let mut per_day: std::collections::BTreeMap<i64, (u64, u64)> = Default::default();
        for x in t.daily.iter().filter(|x| {
            if ty == "other" {
                !shown.contains(&x.policy_type.as_str())
            } else {
                x.policy_type == ty
            }
        }) {
            let e = per_day.entry(x.day).or_default();
            e.0 = e.0.saturating_add(x.successful);
            e.1 = e.1.saturating_add(x.failed);
        }
        let bars: Vec<svg::DayBar> = per_day
            .into_iter()
            .map(|(day, (successful, failed))| svg::DayBar {
                day,
                successful,
                failed,
            })
            .collect();
        let _ = write!(
            s,
            "<p>Sessions per day, policy type <b>{}</b> (<span style=\"color:{}\">successful</span> / <span style=\"color:{}\">failed</span>)</p>",
            esc(ty),
            svg::GREEN,
            svg::RED
        );
        s.push_str(&svg::daily(
            &format!("daily-{ty}"),
            &format!("{}: {ty} sessions per day", d.name),
            &bars,
            p.today,
            p.days,
        ));
    }
    if !t.result_types.is_empty() {
        s.push_str("<p>Failures by result type</p>");
        let items: Vec<(String, u64, u64)> = t
            .result_types
            .iter()
            .map(|(k, n)| (k.clone(), *n, *n))
            .collect();
        s.push_str(&svg::rows(
            "result-types",
            &format!("{}: failures by result type", d.name),
            &items,
        ));
    }
    if !t.organizations.is_empty() {
        s.push_str("<p>Top reporting organizations (sessions; failed in red)</p>");
        s.push_str(&svg::rows(
            "organizations",
            &format!("{}: reporting organizations", d.name),
            &t.organizations,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::report::{Findings, MxReport};

    fn page() -> PageData {
        let mut f = Findings::default();
        f.fail(
            "dane.match",
            "mx1.example.com",
            "key <abc> matches no TLSA record",
            "publish it",
        );
        PageData {
            generated: "2026-11-30 06:00 UTC".into(),
            today: 20_000,
            days: 30,
            checks: Checks::Ran {
                at: "2026-11-30 05:59 UTC".into(),
            },
            domains: vec![DomainData {
                name: "example.com".into(),
                push: None,
                report: Some(DomainReport {
                    domain: "example.com".into(),
                    dane: Verdict::Fail,
                    mta_sts: Verdict::Ok,
                    tls_rpt: Verdict::Ok,
                    policy_mode: Some("enforce".into()),
                    mx: vec![MxReport {
                        host: "mx1.example.com".into(),
                        addresses: vec!["192.0.2.1".into()],
                        endpoint: None,
                        dane: Verdict::Fail,
                        mta_sts: Verdict::Ok,
                        tlsa: vec![],
                        certificate: None,
                    }],
                    checks: f.0,
                }),
                certs: vec![],
                rolls: vec![],
                events: vec![Event {
                    at: 1_700_000_000,
                    kind: "rollover".into(),
                    text: "key roll starts".into(),
                }],
                tlsrpt: Some(TlsRpt {
                    daily: vec![DailySessions {
                        day: 19_999,
                        policy_type: "sts".into(),
                        successful: 10,
                        failed: 2,
                    }],
                    result_types: vec![("validation-failure".into(), 2)],
                    organizations: vec![("Org <1>".into(), 12, 2)],
                    error: None,
                }),
            }],
        }
    }

    #[test]
    fn page_shows_verdicts_problems_timeline_and_charts_escaped() {
        let html = render(&page());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<span class=\"v fail\" data-verdict=\"DANE\">DANE fail</span>"));
        assert!(html.contains("<span class=\"v ok\" data-verdict=\"MTA-STS\">MTA-STS ok</span>"));
        assert!(html.contains("key &lt;abc&gt; matches no TLSA record"));
        assert!(!html.contains("<abc>"));
        assert!(html.contains("2023-11-14 22:13 UTC"), "{html}");
        assert!(html.contains("data-chart=\"daily-sts\" data-points=\"1\""));
        assert!(html.contains("data-chart=\"organizations\""));
        assert!(html.contains("Org &lt;1&gt;"));
        assert!(!html.contains("<script"), "no script");
        assert!(
            !html.contains("http://")
                || html.matches("http://").count()
                    == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
            "no external asset"
        );
    }

    #[test]
    fn escaping_covers_quotes_and_controls() {
        assert_eq!(
            esc("a\"b'c<d>&\u{1b}"),
            "a&quot;b&#39;c&lt;d&gt;&amp;\u{fffd}"
        );
    }
}
