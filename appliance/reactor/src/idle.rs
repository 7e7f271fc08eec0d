//! What a reactor does when none of its tasks has work.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::IdlePolicyError;

/// Idle behaviour of a reactor.
///
/// `Poll` spins forever (lowest latency, burns the core). `Park { after, max }` switches to
/// interrupt mode once the reactor has been idle for `after`: it blocks in `epoll_wait` on its
/// eventfd (written by `send`) and every registered wakeup fd, for at most `max` or until the
/// earliest `wake_at` a task asked for. Timeouts have millisecond granularity (rounded up).
///
/// The default is `Park { after: 1ms, max: 1ms }`: an idle appliance sleeps, a task that polls
/// something without a wakeup fd still sees at most ~1 ms extra latency, and a reactor under
/// load never parks.
///
/// Text form: `poll`, `park` (defaults), `park:AFTER` or `park:AFTER:MAX`, durations with a unit
/// (`ns`, `us`, `ms`, `s`), e.g. `park:200us:10ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePolicy {
    Poll,
    Park { after: Duration, max: Duration },
}

impl IdlePolicy {
    pub const DEFAULT_AFTER: Duration = Duration::from_millis(1);
    pub const DEFAULT_MAX: Duration = Duration::from_millis(1);
}

impl Default for IdlePolicy {
    fn default() -> Self {
        Self::Park {
            after: Self::DEFAULT_AFTER,
            max: Self::DEFAULT_MAX,
        }
    }
}

/// Parses `200us`, `1ms`, `2s`, `500ns`.
pub fn parse_duration(text: &str) -> Result<Duration, IdlePolicyError> {
    let t = text.trim();
    let bad = || IdlePolicyError::BadDuration(t.to_string());
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    match unit {
        "ns" => Ok(Duration::from_nanos(n)),
        "us" | "µs" => Ok(Duration::from_micros(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        _ => Err(bad()),
    }
}

/// Formats with the largest unit that represents the duration exactly.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        "0ms".to_string()
    } else if ns % 1_000_000_000 == 0 {
        format!("{}s", ns / 1_000_000_000)
    } else if ns % 1_000_000 == 0 {
        format!("{}ms", ns / 1_000_000)
    } else if ns % 1_000 == 0 {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

impl FromStr for IdlePolicy {
    type Err = IdlePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let mut parts = text.split(':');
        match parts.next().map(str::to_ascii_lowercase).as_deref() {
            Some("poll") if parts.next().is_none() => Ok(Self::Poll),
            Some("park") => {
                let after = parts
                    .next()
                    .map(parse_duration)
                    .transpose()?
                    .unwrap_or(Self::DEFAULT_AFTER);
                let max = parts
                    .next()
                    .map(parse_duration)
                    .transpose()?
                    .unwrap_or(Self::DEFAULT_MAX);
                if parts.next().is_some() {
                    return Err(IdlePolicyError::Unknown(text.to_string()));
                }
                if max.is_zero() {
                    return Err(IdlePolicyError::ZeroMax);
                }
                Ok(Self::Park { after, max })
            }
            _ => Err(IdlePolicyError::Unknown(text.to_string())),
        }
    }
}

impl fmt::Display for IdlePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Poll => f.write_str("poll"),
            Self::Park { after, max } => write!(
                f,
                "park:{}:{}",
                format_duration(*after),
                format_duration(*max)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_policies() {
        assert_eq!("poll".parse(), Ok(IdlePolicy::Poll));
        assert_eq!("park".parse(), Ok(IdlePolicy::default()));
        assert_eq!(
            "park:200us:10ms".parse(),
            Ok(IdlePolicy::Park {
                after: Duration::from_micros(200),
                max: Duration::from_millis(10)
            })
        );
        assert_eq!(
            "PARK:0ms".parse(),
            Ok(IdlePolicy::Park {
                after: Duration::ZERO,
                max: IdlePolicy::DEFAULT_MAX
            })
        );
        for text in ["poll", "park:200us:10ms", "park:1ms:1s", "park:0ms:1500ns"] {
            let p: IdlePolicy = text.parse().expect("valid policy");
            assert_eq!(p.to_string(), text);
        }
        assert_eq!(IdlePolicy::default().to_string(), "park:1ms:1ms");
    }

    #[test]
    fn rejects_bad_policies() {
        let err = |s: &str| s.parse::<IdlePolicy>().expect_err(s);
        assert_eq!(err("spin"), IdlePolicyError::Unknown("spin".into()));
        assert_eq!(err("poll:1ms"), IdlePolicyError::Unknown("poll:1ms".into()));
        assert_eq!(
            err("park:1ms:1ms:1ms"),
            IdlePolicyError::Unknown("park:1ms:1ms:1ms".into())
        );
        assert_eq!(err("park:200"), IdlePolicyError::BadDuration("200".into()));
        assert_eq!(err("park:ms"), IdlePolicyError::BadDuration("ms".into()));
        assert_eq!(err("park:1h"), IdlePolicyError::BadDuration("1h".into()));
        assert_eq!(err("park:1ms:0us"), IdlePolicyError::ZeroMax);
    }
}
