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
    /// The start of the hour the bar is, when it is one: `app.js` writes its label in the
    /// reader's time zone.
    pub hour_ms: Option<i64>,
}

/// The step of an axis of about four steps up to `max`: 1, 2 or 5 times a power of ten, so
/// the ticks are round numbers (not 167, 334, …). At least 1.
pub fn nice_step(max: f64) -> f64 {
    let raw = (max / 4.0).max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// [`nice_step`] in the binary unit the step falls in (KiB, MiB, GiB, …), so the bytes axis
/// reads 20 GiB, 40 GiB, … rather than 18.6 GiB, 37.3 GiB.
pub fn nice_bytes_step(max: f64) -> f64 {
    let mut unit = 1.0_f64;
    while max / 4.0 >= unit * 1024.0 && unit < 1024f64.powi(6) {
        unit *= 1024.0;
    }
    nice_step(max / unit) * unit
}

/// A bar + line chart `w` x `h` (user units; it scales to its box).
pub fn bars(points: &[Point], caption: &str, label_every: usize) -> String {
    let (w, h, pad_l, pad_r, pad_b, pad_t) =
        (960.0_f64, 220.0_f64, 44.0_f64, 70.0_f64, 22.0_f64, 10.0_f64);
    let n = points.len().max(1) as f64;
    // Both axes end on round numbers: results on the left, bytes (the line) on the right.
    let step_c = nice_step(points.iter().map(|p| p.count).max().unwrap_or(0) as f64);
    let max_c = (points.iter().map(|p| p.count).max().unwrap_or(0) as f64 / step_c)
        .ceil()
        .max(1.0)
        * step_c;
    let steps_c = (max_c / step_c).round().max(1.0) as i32;
    // The bytes share the gridlines: as many steps, each a round number of bytes.
    let raw_b = points.iter().map(|p| p.bytes).max().unwrap_or(0) as f64;
    let step_b = nice_bytes_step(raw_b * 4.0 / f64::from(steps_c));
    let max_b = step_b * f64::from(steps_c);
    let plot_w = w - pad_l - pad_r;
    let plot_h = h - pad_b - pad_t;
    let bw = plot_w / n;
    let mut o = String::with_capacity(points.len() * 200 + 1024);
    let _ = write!(
        o,
        "<figure class=\"chart\"><div class=\"scroll\"><svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\"><title>{}</title>",
        esc(caption),
        esc(caption)
    );
    for i in 0..=steps_c {
        let share = f64::from(i) / f64::from(steps_c);
        let y = pad_t + plot_h * (1.0 - share);
        let _ = write!(
            o,
            "<line x1=\"{pad_l}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e5e7eb\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}</text><text x=\"{}\" y=\"{:.1}\" text-anchor=\"start\" fill=\"#1d4ed8\">{}</text>",
            w - pad_r,
            pad_l - 4.0,
            y + 3.0,
            max_c * share,
            w - pad_r + 4.0,
            y + 3.0,
            bytes((max_b * share) as i64)
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
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\"{}>{}</text>",
                x + bw / 2.0,
                h - 6.0,
                p.hour_ms
                    .map(|t| format!(" data-hour-ms=\"{t}\""))
                    .unwrap_or_default(),
                esc(&p.label)
            );
        }
    }
    let _ = write!(
        o,
        "<polyline points=\"{line}\" fill=\"none\" stroke=\"#1d4ed8\" stroke-width=\"2\"/></svg></div>"
    );
    let _ = write!(
        o,
        "<figcaption class=\"muted\">{} <span style=\"color:#60a5fa\">■</span> results (left axis) <span style=\"color:#dc2626\">■</span> failures <span style=\"color:#1d4ed8\">—</span> bytes (right axis)</figcaption></figure>",
        esc(caption)
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_step_by_round_numbers() {
        assert_eq!(nice_step(667.0), 200.0);
        assert_eq!(nice_step(28.0), 10.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(4.0), 1.0);
        assert_eq!(nice_step(1.0e12), 5.0e11);
        // 75 GiB over four steps: 20 GiB each.
        assert_eq!(
            nice_bytes_step(75.0 * 1024f64.powi(3)),
            20.0 * 1024f64.powi(3)
        );
        assert_eq!(nice_bytes_step(3000.0), 1000.0);
        let p = |count, bytes| Point {
            label: String::new(),
            title: String::new(),
            count,
            failures: 0,
            bytes,
            hour_ms: None,
        };
        let svg = bars(&[p(667, 3 << 30), p(12, 0)], "c", 1);
        // Left axis 0, 200, … 800; no "max" label over the bars.
        for t in [">0<", ">200<", ">400<", ">600<", ">800<"] {
            assert!(svg.contains(t), "{t}");
        }
        assert!(!svg.contains(">334<") && !svg.contains("max "));
    }
}
