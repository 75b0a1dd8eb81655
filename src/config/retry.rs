//! `[retry]` (defaults for every route) and `[routes.retry]` (per-route overrides, key by
//! key) -> `RetryConfig`.

use std::time::Duration;

use serde::Deserialize;

use super::RetryConfig;
use super::error::{Problems, join};
use super::units;

/// Largest replay buffer a route may ask for: it is held per request in flight.
const MAX_BUFFER: u64 = 64 << 20;
const MAX_ATTEMPTS: u32 = 10;
const MAX_MAX_DELAY: Duration = Duration::from_secs(600);

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct RawRetry {
    pub on: Option<Vec<u16>>,
    pub max_attempts: Option<u32>,
    pub max_delay: Option<String>,
    pub buffer: Option<String>,
    pub non_idempotent: Option<bool>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            on: vec![429, 504],
            max_attempts: 4,
            max_delay: Duration::from_secs(30),
            buffer: 1 << 20,
            non_idempotent: false,
        }
    }
}

/// `raw` laid over `base`: each key the table sets replaces the base's.
pub fn resolve(
    raw: &RawRetry,
    base: &RetryConfig,
    path: &str,
    problems: &mut Problems,
) -> RetryConfig {
    let mut out = base.clone();
    if let Some(on) = &raw.on {
        let mut statuses = Vec::new();
        for (i, status) in on.iter().enumerate() {
            match status {
                401 => problems.push(
                    format!("{}[{i}]", join(path, "on")),
                    "401 is answered by refreshing the token, not by retrying",
                ),
                400..=599 => {
                    if !statuses.contains(status) {
                        statuses.push(*status);
                    }
                }
                _ => problems.push(
                    format!("{}[{i}]", join(path, "on")),
                    format!("{status} is not an error status (400-599)"),
                ),
            }
        }
        out.on = statuses;
    }
    if let Some(n) = raw.max_attempts {
        if (1..=MAX_ATTEMPTS).contains(&n) {
            out.max_attempts = n;
        } else {
            problems.push(
                join(path, "max_attempts"),
                format!("must be between 1 (no retries) and {MAX_ATTEMPTS}"),
            );
        }
    }
    if let Some(text) = &raw.max_delay {
        match units::parse_duration(text) {
            Ok(d) if d.is_zero() || d > MAX_MAX_DELAY => problems.push(
                join(path, "max_delay"),
                "must be greater than zero and at most 10m",
            ),
            Ok(d) => out.max_delay = d,
            Err(m) => problems.push(join(path, "max_delay"), m),
        }
    }
    if let Some(text) = &raw.buffer {
        match units::parse_size(text) {
            Ok(n) if n > MAX_BUFFER => problems.push(
                join(path, "buffer"),
                "must be at most 64MiB: it is held in memory for every request in flight",
            ),
            Ok(n) => out.buffer = n,
            Err(m) => problems.push(join(path, "buffer"), m),
        }
    }
    if let Some(flag) = raw.non_idempotent {
        out.non_idempotent = flag;
    }
    out
}
