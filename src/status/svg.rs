//! Charts as inline SVG, drawn by the server: no script, no external asset. Each chart is an
//! `<svg class="chart" data-chart="…" data-points="N">` with one `<rect>` per value and a
//! `<title>` on each, so a browser shows the numbers on hover and a test can count them.
//!
//! Pure: data in, markup out.

use std::fmt::Write;

use super::html::esc;

pub const GREEN: &str = "#2e7d32";
pub const RED: &str = "#c62828";
const GRID: &str = "#ddd";
const TEXT: &str = "#333";

/// One day's bar: successful and failed sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayBar {
    /// Days since 1970-01-01.
    pub day: i64,
    pub successful: u64,
    pub failed: u64,
}

fn date(day: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(day * 86_400)
        .map(|t| {
            let d = t.date();
            format!("{}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
        })
        .unwrap_or_else(|_| day.to_string())
}

/// Successful (green) over failed (red) sessions per day, `days` days ending at `last_day`.
pub fn daily(name: &str, label: &str, bars: &[DayBar], last_day: i64, days: i64) -> String {
    let (w, h, left, bottom, top) = (640.0_f64, 180.0_f64, 48.0, 22.0, 10.0);
    let plot_w = w - left - 8.0;
    let plot_h = h - bottom - top;
    let max = bars
        .iter()
        .map(|b| b.successful.saturating_add(b.failed))
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = plot_w / days as f64;
    let bar_w = (slot * 0.8).max(1.0);
    let first_day = last_day - days + 1;
    let mut s = String::new();
    let points = bars
        .iter()
        .filter(|b| b.day >= first_day && b.day <= last_day)
        .count();
    let _ = write!(
        s,
        "<svg class=\"chart\" data-chart=\"{}\" data-points=\"{points}\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(name),
        esc(label)
    );
    // Axis: zero line, the maximum, first and last date.
    let base = top + plot_h;
    let _ = write!(
        s,
        "<line x1=\"{left}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"{GRID}\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{}\" y2=\"{top}\" stroke=\"{GRID}\" stroke-dasharray=\"3 3\"/>",
        w - 8.0,
        w - 8.0
    );
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\" fill=\"{TEXT}\">{max}</text><text x=\"{}\" y=\"{base}\" font-size=\"11\" text-anchor=\"end\" fill=\"{TEXT}\">0</text>",
        left - 4.0,
        top + 4.0,
        left - 4.0
    );
    let _ = write!(
        s,
        "<text x=\"{left}\" y=\"{}\" font-size=\"11\" fill=\"{TEXT}\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\" fill=\"{TEXT}\">{}</text>",
        h - 6.0,
        date(first_day),
        w - 8.0,
        h - 6.0,
        date(last_day)
    );
    for b in bars
        .iter()
        .filter(|b| b.day >= first_day && b.day <= last_day)
    {
        let x = left + (b.day - first_day) as f64 * slot + (slot - bar_w) / 2.0;
        let ok_h = plot_h * b.successful as f64 / max as f64;
        let fail_h = plot_h * b.failed as f64 / max as f64;
        let tip = format!(
            "{}: {} successful, {} failed",
            date(b.day),
            b.successful,
            b.failed
        );
        let _ = write!(
            s,
            "<rect class=\"ok\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{ok_h:.1}\" fill=\"{GREEN}\"><title>{}</title></rect>",
            base - ok_h,
            esc(&tip)
        );
        let _ = write!(
            s,
            "<rect class=\"failed\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{fail_h:.1}\" fill=\"{RED}\"><title>{}</title></rect>",
            base - ok_h - fail_h,
            esc(&tip)
        );
    }
    s.push_str("</svg>");
    s
}

/// Horizontal bars: one row per (label, total, failed); the failed part red, the rest green.
pub fn rows(name: &str, label: &str, items: &[(String, u64, u64)]) -> String {
    let row_h = 22.0_f64;
    let (w, label_w) = (640.0_f64, 220.0_f64);
    let h = (items.len().max(1) as f64) * row_h + 6.0;
    let max = items.iter().map(|i| i.1).max().unwrap_or(0).max(1);
    let plot_w = w - label_w - 70.0;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" data-chart=\"{}\" data-points=\"{}\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(name),
        items.len(),
        esc(label)
    );
    for (i, (text, total, failed)) in items.iter().enumerate() {
        let y = 3.0 + i as f64 * row_h;
        let total_w = plot_w * *total as f64 / max as f64;
        let fail_w = plot_w * *failed.min(total) as f64 / max as f64;
        let shown: String = if text.chars().count() > 32 {
            text.chars().take(31).collect::<String>() + "…"
        } else {
            text.clone()
        };
        let tip = format!("{text}: {total} sessions, {failed} failed");
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\" fill=\"{TEXT}\">{}</text>",
            label_w - 6.0,
            y + 15.0,
            esc(&shown)
        );
        let _ = write!(
            s,
            "<rect class=\"ok\" x=\"{label_w}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"16\" fill=\"{GREEN}\"><title>{}</title></rect>",
            total_w - fail_w,
            esc(&tip)
        );
        let _ = write!(
            s,
            "<rect class=\"failed\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{fail_w:.1}\" height=\"16\" fill=\"{RED}\"><title>{}</title></rect>",
            label_w + total_w - fail_w,
            esc(&tip)
        );
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"{TEXT}\">{total}</text>",
            label_w + total_w + 6.0,
            y + 13.0
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_chart_has_a_bar_pair_per_day_in_range_with_the_numbers() {
        let bars = [
            DayBar {
                day: 20_000,
                successful: 90,
                failed: 10,
            },
            DayBar {
                day: 20_005,
                successful: 40,
                failed: 0,
            },
            // Outside the 30 days: not drawn.
            DayBar {
                day: 19_000,
                successful: 1,
                failed: 1,
            },
        ];
        let svg = daily("daily-sts", "sts sessions", &bars, 20_010, 30);
        assert!(svg.starts_with("<svg class=\"chart\" data-chart=\"daily-sts\" data-points=\"2\""));
        assert_eq!(svg.matches("<rect class=\"ok\"").count(), 2);
        assert_eq!(svg.matches("<rect class=\"failed\"").count(), 2);
        assert!(
            svg.contains("<title>2024-10-04: 90 successful, 10 failed</title>"),
            "{svg}"
        );
        assert!(
            svg.contains(">100</text>"),
            "the maximum is labelled: {svg}"
        );
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn row_chart_escapes_labels_and_splits_failures() {
        let svg = rows(
            "orgs",
            "organizations",
            &[("<Evil & Co>".into(), 10, 4), ("ok.example".into(), 5, 0)],
        );
        assert!(svg.contains("&lt;Evil &amp; Co&gt;"), "{svg}");
        assert!(!svg.contains("<Evil"));
        assert!(svg.contains("data-points=\"2\""));
        assert!(svg.contains("<title>&lt;Evil &amp; Co&gt;: 10 sessions, 4 failed</title>"));
    }
}
