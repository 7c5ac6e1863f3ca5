//! Server-side SVG charts: bars for counts with a line for bytes, no script, no library.

use std::fmt::Write as _;

use super::html::{bytes, esc};

/// One bar: a label, a count, and bytes.
#[derive(Debug, Clone)]
pub struct Point {
    /// X label (shown every few bars).
    pub label: String,
    /// Tooltip title.
    pub title: String,
    /// Bar height value.
    pub count: i64,
    /// Failures (drawn red at the bar's foot).
    pub failures: i64,
    /// Line value.
    pub bytes: i64,
}

/// A bar + line chart `w` x `h` (user units; it scales to its box).
pub fn bars(points: &[Point], caption: &str, label_every: usize) -> String {
    let (w, h, pad_l, pad_b, pad_t) = (960.0_f64, 220.0_f64, 44.0_f64, 22.0_f64, 10.0_f64);
    let n = points.len().max(1) as f64;
    let max_c = points.iter().map(|p| p.count).max().unwrap_or(0).max(1) as f64;
    let max_b = points.iter().map(|p| p.bytes).max().unwrap_or(0).max(1) as f64;
    let plot_w = w - pad_l - 8.0;
    let plot_h = h - pad_b - pad_t;
    let bw = plot_w / n;
    let mut o = String::with_capacity(points.len() * 200 + 1024);
    let _ = write!(
        o,
        "<figure class=\"chart\"><div class=\"scroll\"><svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\"><title>{}</title>",
        esc(caption),
        esc(caption)
    );
    for i in 0..=4 {
        let y = pad_t + plot_h * f64::from(i) / 4.0;
        let v = max_c * (1.0 - f64::from(i) / 4.0);
        let _ = write!(
            o,
            "<line x1=\"{pad_l}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e5e7eb\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text>",
            w - 8.0,
            pad_l - 4.0,
            y + 3.0
        );
    }
    let mut line = String::new();
    for (i, p) in points.iter().enumerate() {
        let x = pad_l + bw * i as f64;
        let bh = plot_h * p.count as f64 / max_c;
        let fh = plot_h * p.failures as f64 / max_c;
        let _ = write!(
            o,
            "<g><title>{} — {} results, {} failed, {}</title><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#93c5fd\"/>",
            esc(&p.title),
            p.count,
            p.failures,
            bytes(p.bytes),
            x + 0.5,
            pad_t + plot_h - bh,
            (bw - 1.0).max(0.5)
        );
        if p.failures > 0 {
            let _ = write!(
                o,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#dc2626\"/>",
                x + 0.5,
                pad_t + plot_h - fh.max(1.5),
                (bw - 1.0).max(0.5),
                fh.max(1.5)
            );
        }
        o.push_str("</g>");
        let by = pad_t + plot_h - plot_h * p.bytes as f64 / max_b;
        let _ = write!(
            line,
            "{}{:.1},{by:.1}",
            if i == 0 { "" } else { " " },
            x + bw / 2.0
        );
        if label_every > 0 && i % label_every == 0 {
            let _ = write!(
                o,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + bw / 2.0,
                h - 6.0,
                esc(&p.label)
            );
        }
    }
    let _ = write!(
        o,
        "<polyline points=\"{line}\" fill=\"none\" stroke=\"#1d4ed8\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#1d4ed8\">max {}</text></svg></div>",
        w - 10.0,
        pad_t + 10.0,
        bytes(max_b as i64)
    );
    let _ = write!(
        o,
        "<figcaption class=\"muted\">{} <span style=\"color:#60a5fa\">■</span> results <span style=\"color:#dc2626\">■</span> failures <span style=\"color:#1d4ed8\">—</span> bytes</figcaption></figure>",
        esc(caption)
    );
    o
}
