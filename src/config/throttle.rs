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
}

impl ThrottleConfig {
    /// The default for a route with (`true`) or without a credential.
    pub fn default_for(has_credential: bool) -> Self {
        Self {
            hold: has_credential,
            max_queue: DEFAULT_MAX_QUEUE,
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
    }
    match raw.max_queue {
        Some(0) => problems.push(
            join(&join(path, "throttle"), "max_queue"),
            "must be at least 1 (set hold = false to answer at once)",
        ),
        Some(n) => config.max_queue = n,
        None => {}
    }
    config
}
