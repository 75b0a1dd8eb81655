//! A pace learned from a route's holds, for routes whose quota nobody wrote down (`learn`,
//! on wherever the route holds). Each hold says the route went faster than the upstream
//! takes: the pace drops to `DECREASE` of the rate the upstream took in the seconds before
//! it (or of the pace already learned, if lower), then grows by `GROWTH` of itself per
//! second without a hold, until the next hold finds the limit again (additive increase,
//! multiplicative decrease). Paced requests leave evenly instead of in a burst, so reaching
//! the limit costs one throttled call instead of a queue's worth. Until the first hold
//! teaches a rate nothing is paced, and a hold that follows too few answers to measure a
//! rate (a single request's 429) teaches nothing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::Bucket;

/// After a hold, the pace is this share of the rate the upstream took before it.
const DECREASE: f64 = 0.85;
/// Per second without a hold, the pace grows by this share of itself.
const GROWTH: f64 = 0.01;
/// The slowest pace a hold teaches, requests per second.
const SLOWEST: f64 = 0.5;
/// The fastest a learned pace grows to, requests per second (beyond it, it paces nothing).
const FASTEST: f64 = 1.0e6;
/// A hold teaches a pace only when the upstream took at least this many calls in the two
/// seconds before it.
const MIN_CALLS: u64 = 4;

#[derive(Debug)]
pub(super) struct Learned {
    meter: Meter,
    /// Set once a hold taught a pace: until then nothing is locked per request.
    taught: AtomicBool,
    pace: Mutex<Option<Pace>>,
}

#[derive(Debug)]
struct Pace {
    /// Requests per second at `since`.
    per_second: f64,
    since: Instant,
    /// Burst of one: paced requests leave evenly.
    bucket: Bucket,
}

impl Pace {
    fn at(&self, now: Instant) -> f64 {
        let grown = now.saturating_duration_since(self.since).as_secs_f64();
        (self.per_second * (1.0 + GROWTH * grown)).min(FASTEST)
    }
}

impl Learned {
    pub(super) fn new() -> Self {
        Self {
            meter: Meter::new(Instant::now()),
            taught: AtomicBool::new(false),
            pace: Mutex::new(None),
        }
    }

    pub(super) fn accepted(&self, now: Instant) {
        self.meter.count(now);
    }

    pub(super) fn held(&self, now: Instant, until: Instant) {
        let (calls, seconds) = self.meter.recent(now);
        if calls < MIN_CALLS {
            return;
        }
        let took = calls as f64 / seconds;
        let mut pace = self.pace.lock().unwrap_or_else(|p| p.into_inner());
        let went = pace.as_ref().map_or(took, |p| p.at(now).min(took));
        let per_second = (went * DECREASE).max(SLOWEST);
        match pace.as_mut() {
            Some(pace) => {
                pace.per_second = per_second;
                pace.since = until;
            }
            None => {
                *pace = Some(Pace {
                    per_second,
                    since: until,
                    bucket: Bucket::full(per_second, 1.0),
                });
            }
        }
        self.taught.store(true, Ordering::Release);
    }

    pub(super) fn per_second(&self, now: Instant) -> Option<f64> {
        if !self.taught.load(Ordering::Acquire) {
            return None;
        }
        let pace = self.pace.lock().unwrap_or_else(|p| p.into_inner());
        pace.as_ref().map(|p| p.at(now))
    }

    /// `Ok(None)`: no pace learned yet; `Ok(Some(wait))`: a token reserved, due after
    /// `wait`; `Err(wait)` when that passes `deadline`.
    pub(super) fn reserve(
        &self,
        now: Instant,
        deadline: Instant,
    ) -> Result<Option<Duration>, Duration> {
        if !self.taught.load(Ordering::Acquire) {
            return Ok(None);
        }
        let mut pace = self.pace.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pace) = pace.as_mut() else {
            return Ok(None);
        };
        pace.bucket.per_second = pace.at(now);
        pace.bucket.reserve(now, deadline).map(Some)
    }

    pub(super) fn refund(&self) {
        let mut pace = self.pace.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pace) = pace.as_mut() {
            pace.bucket.refund();
        }
    }
}

/// Calls the upstream took in the last whole second and this one so far: two slots, each
/// the second it counts (high 32 bits) and its count (low 32 bits), so counting is one
/// atomic operation and never a lock.
#[derive(Debug)]
struct Meter {
    origin: Instant,
    slots: [AtomicU64; 2],
}

impl Meter {
    fn new(origin: Instant) -> Self {
        Self {
            origin,
            slots: [AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)],
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs() & 0xffff_ffff
    }

    fn count(&self, now: Instant) {
        let second = self.second(now);
        let slot = &self.slots[(second & 1) as usize];
        let mut seen = slot.load(Ordering::Relaxed);
        loop {
            let next = if seen >> 32 == second {
                seen + 1
            } else {
                (second << 32) | 1
            };
            match slot.compare_exchange_weak(seen, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now_seen) => seen = now_seen,
            }
        }
    }

    /// (calls, seconds they span).
    fn recent(&self, now: Instant) -> (u64, f64) {
        let elapsed = now.saturating_duration_since(self.origin);
        let second = self.second(now);
        let calls = [Some(second), second.checked_sub(1)]
            .into_iter()
            .flatten()
            .map(|s| {
                let slot = self.slots[(s & 1) as usize].load(Ordering::Relaxed);
                if slot >> 32 == s {
                    slot & 0xffff_ffff
                } else {
                    0
                }
            })
            .sum();
        let seconds = (1.0 + elapsed.as_secs_f64().fract()).min(elapsed.as_secs_f64().max(1e-3));
        (calls, seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_hold_after_enough_calls_teaches_a_pace_that_then_grows() {
        let learned = Learned::new();
        tokio::time::advance(Duration::from_millis(1500)).await;
        let now = Instant::now();
        learned.held(now, now + Duration::from_secs(1));
        assert_eq!(learned.per_second(now), None, "no calls: nothing learned");

        // 20 calls over the last 1.5 s... counted in the current and previous second.
        for _ in 0..20 {
            learned.accepted(Instant::now());
        }
        tokio::time::advance(Duration::from_millis(500)).await;
        let now = Instant::now();
        let until = now + Duration::from_secs(1);
        learned.held(now, until);
        // 20 calls over 1.0 s (the last whole second, the current one just begun).
        let taught = learned.per_second(now).unwrap();
        assert!((taught - 20.0 * DECREASE).abs() < 0.01, "{taught}");
        // Grows by GROWTH per second after the hold ends.
        let later = until + Duration::from_secs(10);
        let grown = learned.per_second(later).unwrap();
        assert!(
            (grown - taught * (1.0 + 10.0 * GROWTH)).abs() < 0.01,
            "{grown}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_hold_lowers_the_pace_from_the_slower_of_pace_and_measured_rate() {
        let learned = Learned::new();
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..40 {
            learned.accepted(Instant::now());
        }
        let now = Instant::now();
        learned.held(now, now);
        let first = learned.per_second(now).unwrap();
        // Two seconds later: 6 calls in the last whole second.
        tokio::time::advance(Duration::from_secs(2)).await;
        for _ in 0..6 {
            learned.accepted(Instant::now());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        learned.held(now, now);
        let second = learned.per_second(now).unwrap();
        assert!(second < first);
        assert!((second - 6.0 * DECREASE).abs() < 0.01, "{second}");
    }

    #[tokio::test(start_paused = true)]
    async fn paced_reservations_leave_evenly_and_a_refund_gives_the_slot_back() {
        let learned = Learned::new();
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..20 {
            learned.accepted(Instant::now());
        }
        let now = Instant::now();
        learned.held(now, now);
        let per_second = learned.per_second(now).unwrap();
        let far = now + Duration::from_secs(60);
        let waits: Vec<Duration> = (0..4)
            .map(|_| learned.reserve(now, far).unwrap().unwrap())
            .collect();
        let gap = Duration::from_secs_f64(1.0 / per_second);
        for (i, wait) in waits.iter().enumerate() {
            let expected = gap * i as u32;
            assert!(
                wait.abs_diff(expected) < Duration::from_millis(2),
                "{i}: {wait:?}"
            );
        }
        learned.refund();
        let next = learned.reserve(now, far).unwrap().unwrap();
        assert!(
            next.abs_diff(gap * 3) < Duration::from_millis(2),
            "{next:?}"
        );
        // A wait past the deadline is refused.
        assert!(learned.reserve(now, now).is_err());
    }
}
