//! When dirty data goes to the backing store: the write-back schedule and its parser.

use std::time::Duration;

/// How writes reach the backing store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePolicy {
    /// A write completes once the backing store has it; the cache keeps a clean copy.
    WriteThrough,
    /// A write completes once the cache has it; dirty data goes back on `schedule`.
    WriteBack(Schedule),
}

/// When a write-back cache drains its dirty data (the dirty limit drains it at any time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// As soon as the cache is idle.
    Immediate,
    /// Every period, all the data dirty at that moment.
    Interval(Duration),
    /// Only while the UTC time of day is in `[start, end)` minutes (wraps past midnight
    /// when `end < start`).
    Window { start_min: u16, end_min: u16 },
}

impl std::fmt::Display for WritePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WritePolicy::WriteThrough => f.write_str("write_through"),
            WritePolicy::WriteBack(Schedule::Immediate) => f.write_str("immediate"),
            WritePolicy::WriteBack(Schedule::Interval(d)) => {
                write!(f, "interval:{}s", d.as_secs())
            }
            WritePolicy::WriteBack(Schedule::Window { start_min, end_min }) => write!(
                f,
                "window:{:02}:{:02}-{:02}:{:02}",
                start_min / 60,
                start_min % 60,
                end_min / 60,
                end_min % 60
            ),
        }
    }
}

impl std::str::FromStr for WritePolicy {
    type Err = String;

    /// `write_through`, `immediate`, `interval:30s` (also `500ms`, `5m`, `1h`) or
    /// `window:02:00-04:00` (UTC).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "write policy {s:?}: {why} (expected write_through, immediate, interval:30s or window:02:00-04:00)"
            )
        };
        if s == "write_through" {
            return Ok(WritePolicy::WriteThrough);
        }
        if s == "immediate" {
            return Ok(WritePolicy::WriteBack(Schedule::Immediate));
        }
        if let Some(d) = s.strip_prefix("interval:") {
            let d = parse_duration(d).map_err(|e| bad(&e))?;
            if d.is_zero() || d > Duration::from_secs(7 * 86400) {
                return Err(bad("the interval must be above zero and at most 7 days"));
            }
            return Ok(WritePolicy::WriteBack(Schedule::Interval(d)));
        }
        if let Some(w) = s.strip_prefix("window:") {
            let (a, b) = w
                .split_once('-')
                .ok_or_else(|| bad("a window is START-END"))?;
            let start_min = parse_hhmm(a).map_err(|e| bad(&e))?;
            let end_min = parse_hhmm(b).map_err(|e| bad(&e))?;
            if start_min == end_min {
                return Err(bad("the window is empty"));
            }
            return Ok(WritePolicy::WriteBack(Schedule::Window {
                start_min,
                end_min,
            }));
        }
        Err(bad("unknown policy"))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit (ms, s, m, h)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("unknown unit {unit:?} (ms, s, m, h)")),
    }
    .ok_or_else(|| format!("{s:?} is too long"))?;
    Ok(Duration::from_millis(ms))
}

fn parse_hhmm(s: &str) -> Result<u16, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not HH:MM"))?;
    let h: u16 = h.parse().map_err(|_| format!("{s:?} is not HH:MM"))?;
    let m: u16 = m.parse().map_err(|_| format!("{s:?} is not HH:MM"))?;
    if h > 23 || m > 59 || s.len() != 5 {
        return Err(format!("{s:?} is not a time of day HH:MM"));
    }
    Ok(h * 60 + m)
}

impl Schedule {
    /// True when `minute_of_day` (UTC) is inside the window; always true for the others.
    pub fn in_window(&self, minute_of_day: u16) -> bool {
        match *self {
            Schedule::Window { start_min, end_min } if start_min < end_min => {
                (start_min..end_min).contains(&minute_of_day)
            }
            Schedule::Window { start_min, end_min } => {
                minute_of_day >= start_min || minute_of_day < end_min
            }
            _ => true,
        }
    }
}

/// The UTC minute of the day now.
pub fn utc_minute_now() -> u16 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    ((secs % 86_400) / 60) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_policy() {
        for s in [
            "write_through",
            "immediate",
            "interval:30s",
            "window:02:00-04:00",
            "window:23:30-01:15",
        ] {
            let p: WritePolicy = s.parse().expect(s);
            assert_eq!(p.to_string(), s);
        }
        assert_eq!(
            "interval:500ms".parse::<WritePolicy>(),
            Ok(WritePolicy::WriteBack(Schedule::Interval(
                Duration::from_millis(500)
            )))
        );
        assert_eq!(
            "interval:2m".parse::<WritePolicy>(),
            Ok(WritePolicy::WriteBack(Schedule::Interval(
                Duration::from_secs(120)
            )))
        );
    }

    #[test]
    fn refuses_bad_policies_with_the_reason() {
        for (s, why) in [
            ("write_back", "unknown policy"),
            ("interval:", "no unit"),
            ("interval:0s", "above zero"),
            ("interval:10d", "unknown unit"),
            (
                "interval:99999999999999999999h",
                "does not start with a number",
            ),
            ("window:02:00", "START-END"),
            ("window:24:00-01:00", "time of day"),
            ("window:2:00-04:00", "time of day"),
            ("window:03:00-03:00", "empty"),
        ] {
            let e = s.parse::<WritePolicy>().expect_err(s);
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn windows_wrap_past_midnight() {
        let w = Schedule::Window {
            start_min: 120,
            end_min: 240,
        };
        assert!(!w.in_window(119));
        assert!(w.in_window(120));
        assert!(w.in_window(239));
        assert!(!w.in_window(240));
        let night = Schedule::Window {
            start_min: 23 * 60,
            end_min: 60,
        };
        assert!(night.in_window(23 * 60 + 5));
        assert!(night.in_window(0));
        assert!(!night.in_window(60));
        assert!(!night.in_window(12 * 60));
        assert!(Schedule::Immediate.in_window(5));
    }
}
