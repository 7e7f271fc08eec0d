//! Hand-written SVG plots: the latency histogram (log-spaced buckets) and
//! IOPS over time. No plotting dependency: a few rectangles and a polyline.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::PerfError;
use crate::report::PerfReport;
use crate::stats::Summary;

const W: f64 = 720.0;
const H: f64 = 360.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn frame(title: &str, x_label: &str, y_label: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>
<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="black"/>
"##,
        W / 2.0,
        esc(title),
        LEFT + (W - LEFT - RIGHT) / 2.0,
        H - 10.0,
        esc(x_label),
        TOP + (H - TOP - BOTTOM) / 2.0,
        TOP + (H - TOP - BOTTOM) / 2.0,
        esc(y_label),
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM,
    );
    s
}

/// A "nice" axis maximum at or above `v`.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn y_ticks(s: &mut String, max: f64) {
    let ph = H - TOP - BOTTOM;
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = H - BOTTOM - ph * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT,
            W - RIGHT,
            LEFT - 4.0,
            y + 4.0,
            short(v)
        );
    }
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}K", v / 1e3)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Latency histogram of `s`: one bar per log-spaced bucket, the share of completions.
pub fn latency_histogram(s: &Summary, title: &str) -> String {
    let mut out = frame(title, "latency (µs, log scale)", "share of I/Os (%)");
    let total: u64 = s.histogram.iter().map(|b| b.count).sum();
    if total == 0 {
        out += "</svg>\n";
        return out;
    }
    let lo = (s.histogram[0].le_us / 1.2).max(0.1).log10();
    let hi = s.histogram[s.histogram.len() - 1].le_us.max(1.0).log10();
    let span = (hi - lo).max(1e-9);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |us: f64| LEFT + pw * (us.max(1e-3).log10() - lo) / span;
    let peak = s
        .histogram
        .iter()
        .map(|b| b.count as f64 * 100.0 / total as f64)
        .fold(0.0, f64::max);
    let ymax = nice_max(peak);
    y_ticks(&mut out, ymax);
    let mut prev = 10f64.powf(lo);
    for b in &s.histogram {
        let share = b.count as f64 * 100.0 / total as f64;
        let (x0, x1) = (x(prev), x(b.le_us));
        let h = ph * share / ymax;
        let _ = writeln!(
            out,
            r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>≤ {:.1} µs: {} I/Os</title></rect>"##,
            H - BOTTOM - h,
            (x1 - x0).max(0.5),
            COLORS[0],
            b.le_us,
            b.count
        );
        prev = b.le_us;
    }
    // Decade ticks on the x axis.
    let mut d = 10f64.powf(lo.floor());
    while d <= 10f64.powf(hi) * 1.0001 {
        if d >= 10f64.powf(lo) {
            let _ = writeln!(
                out,
                r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="black"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
                x(d),
                H - BOTTOM,
                H - BOTTOM + 5.0,
                H - BOTTOM + 18.0,
                short(d)
            );
        }
        d *= 10.0;
    }
    let l = &s.latency_us;
    for (name, v, color) in [
        ("p50", l.p50, "#2ca02c"),
        ("p99", l.p99, "#ff7f0e"),
        ("p99.9", l.p99_9, "#d62728"),
    ] {
        if v > 0.0 {
            let _ = writeln!(
                out,
                r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="{3}" stroke-dasharray="4 3"/><text x="{4:.1}" y="{5}" fill="{3}">{6} {7:.1}</text>"##,
                x(v),
                TOP,
                H - BOTTOM,
                color,
                x(v) + 3.0,
                TOP + 12.0
                    + if name == "p99" {
                        14.0
                    } else if name == "p99.9" {
                        28.0
                    } else {
                        0.0
                    },
                name,
                v
            );
        }
    }
    out += "</svg>\n";
    out
}

/// IOPS per interval of every summary (one line each).
pub fn iops_over_time(series: &[&Summary], title: &str) -> String {
    let mut out = frame(title, "time (s)", "IOPS");
    let n = series
        .iter()
        .map(|s| s.iops_over_time.len())
        .max()
        .unwrap_or(0);
    let iv = series.first().map_or(1.0, |s| s.interval_s);
    let peak = series
        .iter()
        .flat_map(|s| s.iops_over_time.iter().copied())
        .fold(0.0, f64::max);
    let ymax = nice_max(peak);
    y_ticks(&mut out, ymax);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let tmax = (n as f64 * iv).max(iv);
    let x = |t: f64| LEFT + pw * t / tmax;
    for i in 0..=4 {
        let t = tmax * f64::from(i) / 4.0;
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"##,
            x(t),
            H - BOTTOM + 18.0,
            short(t)
        );
    }
    for (k, s) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let pts: Vec<String> = s
            .iops_over_time
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    "{:.1},{:.1}",
                    x((i as f64 + 0.5) * iv),
                    H - BOTTOM - ph * v / ymax
                )
            })
            .collect();
        let _ = writeln!(
            out,
            r##"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"##,
            pts.join(" ")
        );
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" fill="{color}">{}</text>"##,
            LEFT + 8.0,
            TOP + 14.0 + 14.0 * k as f64,
            esc(&s.name)
        );
    }
    out += "</svg>\n";
    out
}

/// Writes `<prefix>latency.svg` and `<prefix>iops.svg` into `dir`; returns their paths.
pub fn write_report_svgs(
    report: &PerfReport,
    dir: &Path,
    prefix: &str,
) -> Result<Vec<PathBuf>, PerfError> {
    std::fs::create_dir_all(dir).map_err(|source| PerfError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let title = &report.description;
    let series: Vec<&Summary> = report.targets.iter().collect();
    let files = [
        (
            format!("{prefix}latency.svg"),
            latency_histogram(&report.total, &format!("latency: {title}")),
        ),
        (
            format!("{prefix}iops.svg"),
            iops_over_time(&series, &format!("IOPS over time: {title}")),
        ),
    ];
    let mut out = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| PerfError::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
        out.push(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Counters;
    use std::time::Duration;

    #[test]
    fn plots_are_well_formed() {
        let mut c = Counters::default();
        for i in 0..5000u64 {
            c.record(false, 4096, 8_000 + (i % 97) * 300, (i / 1000) as usize);
        }
        let s = c.summary("a<b", Duration::from_secs(5), Duration::from_secs(1));
        for svg in [latency_histogram(&s, "t"), iops_over_time(&[&s], "t")] {
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
            assert_eq!(svg.matches("<svg").count(), 1);
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
            assert!(!svg.contains("a<b"));
        }
        assert!(latency_histogram(&s, "t").matches("<rect").count() > 5);
        assert!(iops_over_time(&[&s], "t").contains("<polyline"));
        let empty =
            Counters::default().summary("e", Duration::from_secs(1), Duration::from_secs(1));
        assert!(latency_histogram(&empty, "t").ends_with("</svg>\n"));
        assert_eq!(nice_max(730.0), 1000.0);
        assert_eq!(nice_max(0.0), 1.0);
    }
}
