//! When a sandbox expires: an absolute lifetime from creation, an idle timeout from its last
//! activity, and a limit on how long it may take to become ready. Pure arithmetic on times.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// Parses `90s`, `10m`, `2h`, `1h30m`, `45` (seconds) or `0` (off).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return None,
        };
        total = total.checked_add(number.parse::<u64>().ok()?.checked_mul(unit)?)?;
        number.clear();
    }
    (number.is_empty() && !text.is_empty()).then_some(Duration::from_secs(total))
}

/// The timers that apply to one sandbox (zero = off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timers {
    pub lifetime: Duration,
    pub idle: Duration,
    pub ready: Duration,
}

/// Why a sandbox is due for removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Lifetime,
    Idle,
    NeverReady,
}

fn after(t: Timestamp, d: Duration) -> Option<Timestamp> {
    (!d.is_zero())
        .then(|| t.checked_add(SignedDuration::try_from(d).ok()?).ok())
        .flatten()
}

impl Timers {
    /// A request's own lifetime and idle timeout, within these (the configured ceilings, which
    /// are also the defaults; a ceiling of zero means none).
    pub fn for_request(&self, ttl_seconds: Option<u32>, idle_seconds: Option<u32>) -> Timers {
        let pick = |asked: Option<u32>, ceiling: Duration| match asked
            .map(|s| Duration::from_secs(s.into()))
        {
            None => ceiling,
            Some(asked) if ceiling.is_zero() => asked,
            Some(asked) if asked.is_zero() => ceiling,
            Some(asked) => asked.min(ceiling),
        };
        Timers {
            lifetime: pick(ttl_seconds, self.lifetime),
            idle: pick(idle_seconds, self.idle),
            ready: self.ready,
        }
    }

    /// The deadline callers see: the earlier of lifetime and idle expiry, if any applies.
    pub fn expires_at(&self, created: Timestamp, last_activity: Timestamp) -> Option<Timestamp> {
        [
            after(created, self.lifetime),
            after(last_activity, self.idle),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether (and why) the sandbox is due at `now`.
    pub fn due(
        &self,
        now: Timestamp,
        created: Timestamp,
        last_activity: Timestamp,
        ready: bool,
    ) -> Option<Expiry> {
        if after(created, self.lifetime).is_some_and(|d| now >= d) {
            return Some(Expiry::Lifetime);
        }
        if after(last_activity, self.idle).is_some_and(|d| now >= d) {
            return Some(Expiry::Idle);
        }
        if !ready && after(created, self.ready).is_some_and(|d| now >= d) {
            return Some(Expiry::NeverReady);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "10x", "m", "1.5h", "-5s", "10m5"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn requests_are_clamped_to_the_ceilings() {
        let ceilings = Timers {
            lifetime: Duration::from_secs(3600),
            idle: Duration::ZERO,
            ready: Duration::from_secs(60),
        };
        let t = ceilings.for_request(Some(7200), Some(30));
        assert_eq!(
            (t.lifetime.as_secs(), t.idle.as_secs(), t.ready.as_secs()),
            (3600, 30, 60)
        );
        let t = ceilings.for_request(Some(60), None);
        assert_eq!((t.lifetime.as_secs(), t.idle.as_secs()), (60, 0));
        assert_eq!(ceilings.for_request(None, None), ceilings);
        assert_eq!(ceilings.for_request(Some(0), None).lifetime.as_secs(), 3600);
    }

    #[test]
    fn deadlines_and_reasons() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |s: i64| t0.checked_add(SignedDuration::from_secs(s)).unwrap();
        let timers = Timers {
            lifetime: Duration::from_secs(100),
            idle: Duration::from_secs(30),
            ready: Duration::from_secs(10),
        };
        assert_eq!(timers.expires_at(t0, at(50)), Some(at(80)));
        assert_eq!(timers.expires_at(t0, at(90)), Some(at(100)));
        assert_eq!(timers.due(at(5), t0, t0, false), None);
        assert_eq!(timers.due(at(11), t0, t0, false), Some(Expiry::NeverReady));
        assert_eq!(timers.due(at(11), t0, t0, true), None);
        assert_eq!(timers.due(at(31), t0, t0, true), Some(Expiry::Idle));
        assert_eq!(timers.due(at(40), t0, at(20), true), None);
        assert_eq!(
            timers.due(at(100), t0, at(99), true),
            Some(Expiry::Lifetime)
        );
        assert_eq!(Timers::default().expires_at(t0, t0), None);
        assert_eq!(Timers::default().due(at(1_000_000), t0, t0, false), None);
    }

    #[test]
    fn a_deadline_is_due_at_its_instant() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |ms: i64| t0.checked_add(SignedDuration::from_millis(ms)).unwrap();
        let idle = Timers {
            idle: Duration::from_secs(30),
            ..Timers::default()
        };
        assert_eq!(idle.due(at(29_999), t0, t0, true), None);
        assert_eq!(idle.due(at(30_000), t0, t0, true), Some(Expiry::Idle));
        assert_eq!(idle.expires_at(t0, t0), Some(at(30_000)));
    }

    #[test]
    fn timers_past_the_calendar_never_fire_and_never_panic() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let forever = Timers {
            lifetime: Duration::MAX,
            idle: Duration::from_secs(u64::MAX / 2),
            ready: Duration::MAX,
        };
        assert_eq!(forever.expires_at(t0, t0), None);
        assert_eq!(forever.due(Timestamp::MAX, t0, t0, false), None);
        assert_eq!(parse_duration("99999999999999999999s"), None);
        assert_eq!(parse_duration("999999999999999999d"), None);
        assert_eq!(parse_duration("1d2h"), Some(Duration::from_secs(93_600)));
    }
}
