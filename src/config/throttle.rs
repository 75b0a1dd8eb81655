//! `[routes.throttle]` -> `ThrottleConfig`: whether an upstream's 429 (or 503 with a retry
//! header) holds the whole route until the announced time, and how many requests may wait
//! it out. On by default where the route injects a credential: there the quota is azgate's
//! principal's, so a 429 speaks for every request of the route.

use super::error::{Problems, join};
use super::raw::RawThrottle;

/// Requests that may wait out a hold at once, by default.
pub const DEFAULT_MAX_QUEUE: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// A 429 (or 503 with `Retry-After`) holds the route until the announced time.
    pub hold: bool,
    /// Requests waiting out a hold; beyond it they are answered 429 `throttled` at once.
    pub max_queue: usize,
    /// Pacing: at most this many requests per second on average (`rate = "25/s"`), with
    /// `burst` at once; `None` sends as they come.
    pub rate: Option<Pace>,
    /// Below this many requests left in an `x-ms-ratelimit-remaining-*` header, requests of
    /// its kind are spread out at ARM's refill rate; `None`: 5% of the largest value seen.
    pub min_remaining: Option<u64>,
    /// Each hold teaches the route a pace (slower than the rate the upstream took before
    /// it, growing again while no hold comes), so the route stays under a limit nobody
    /// configured. Only where the route holds.
    pub learn: bool,
}

/// A token bucket: `per_second` refill, `burst` capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    pub per_second: f64,
    pub burst: u32,
}

impl Eq for Pace {}

impl ThrottleConfig {
    /// The default for a route with (`true`) or without a credential.
    pub fn default_for(has_credential: bool) -> Self {
        Self {
            hold: has_credential,
            max_queue: DEFAULT_MAX_QUEUE,
            rate: None,
            min_remaining: None,
            learn: has_credential,
        }
    }
}

pub fn validate(
    raw: Option<&RawThrottle>,
    has_credential: bool,
    path: &str,
    problems: &mut Problems,
) -> ThrottleConfig {
    let mut config = ThrottleConfig::default_for(has_credential);
    let Some(raw) = raw else {
        return config;
    };
    if let Some(hold) = raw.hold {
        config.hold = hold;
        config.learn = hold;
    }
    match raw.learn {
        Some(true) if !config.hold => problems.push(
            join(&join(path, "throttle"), "learn"),
            "only applies where the route holds (hold = true)",
        ),
        Some(learn) => config.learn = learn,
        None => {}
    }
    match raw.max_queue {
        Some(0) => problems.push(
            join(&join(path, "throttle"), "max_queue"),
            "must be at least 1 (without a queue, hold = false answers throttled requests at once)",
        ),
        Some(n) => config.max_queue = n,
        None => {}
    }
    config.min_remaining = raw.min_remaining;
    let at = |key: &str| join(&join(path, "throttle"), key);
    match (raw.rate.as_deref(), raw.burst) {
        (Some(text), burst) => match parse_rate(text) {
            Ok(per_second) => {
                let burst = burst.unwrap_or_else(|| per_second.ceil().max(1.0) as u32);
                if burst == 0 {
                    problems.push(at("burst"), "must be at least 1");
                } else {
                    config.rate = Some(Pace { per_second, burst });
                }
            }
            Err(message) => problems.push(at("rate"), message),
        },
        (None, Some(_)) => problems.push(at("burst"), "only applies with `rate`"),
        (None, None) => {}
    }
    config
}

/// `"25/s"`, `"1500/min"`, `"90000/h"`: requests per second.
fn parse_rate(text: &str) -> Result<f64, String> {
    let bad = || format!("\"{text}\" is not a rate such as \"25/s\", \"1500/min\" or \"90000/h\"");
    let (count, unit) = text.trim().split_once('/').ok_or_else(bad)?;
    let count: f64 = count.trim().parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "s" | "sec" | "second" => 1.0,
        "min" | "m" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        _ => return Err(bad()),
    };
    if !(count.is_finite() && count > 0.0) {
        return Err(bad());
    }
    Ok(count / seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("25/s"), Ok(25.0));
        assert_eq!(parse_rate("1500/min"), Ok(25.0));
        assert_eq!(parse_rate("3600/h"), Ok(1.0));
        for bad in ["25", "0/s", "-1/s", "x/s", "25/day", "/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
