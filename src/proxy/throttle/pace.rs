//! A route's pace: `rate`/`burst` as a token bucket; the spreading of requests whose
//! kind (reads, writes, deletes, as ARM counts them) runs low in the upstream's
//! `x-ms-ratelimit-remaining-*` headers — a bucket of one at ARM's refill rate for that
//! kind; and a pace learned from the route's holds (`learn.rs`). Waiters reserve their
//! token first, so they go in the order they came; a reservation not used (the route
//! started holding, or the client went away) is given back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Pace;

mod learn;
use learn::Learned;

/// ARM's per-principal refill rates (reads, writes, deletes per second): below
/// `min_remaining`, requests of a kind are spread out at this pace, so the quota refills
/// as fast as it is spent instead of reaching zero.
const REFILL: [f64; 3] = [25.0, 10.0, 10.0];

/// A token bucket; `tokens` goes negative while waiters hold reservations.
#[derive(Debug)]
struct Bucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(per_second: f64, burst: f64) -> Self {
        Self {
            per_second,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Reserves a token at `now`: `Ok` with the wait until it is due, or `Err` with that
    /// wait when it would pass `deadline` (then nothing is reserved).
    fn reserve(&mut self, now: Instant, deadline: Instant) -> Result<Duration, Duration> {
        let refilled = (self.tokens
            + now.duration_since(self.last).as_secs_f64() * self.per_second)
            .min(self.burst);
        let after = refilled - 1.0;
        let wait = if after >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-after / self.per_second)
        };
        self.last = now;
        if now + wait > deadline {
            self.tokens = refilled;
            return Err(wait);
        }
        self.tokens = after;
        Ok(wait)
    }

    /// Gives back a token reserved and not used.
    fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }
}

/// Per quota header, the largest value seen and the last; per kind, its bucket.
#[derive(Debug)]
struct Quota {
    headers: Vec<(&'static str, i64, i64)>,
    kinds: [Bucket; 3],
}

#[derive(Debug)]
pub(super) struct Pacing {
    rate: Option<Mutex<Bucket>>,
    /// Set once a quota header was seen: until then nothing is locked per request.
    quota_seen: AtomicBool,
    quota: Mutex<Quota>,
    /// The pace learned from holds; `None` when `learn = false`.
    learned: Option<Arc<Learned>>,
}

/// The tokens one request reserved: given back on drop unless `keep` says it used them.
#[must_use]
pub(super) struct Reservation<'a> {
    pacing: &'a Pacing,
    rate: bool,
    kind: Option<usize>,
    learned: bool,
}

impl Reservation<'_> {
    /// The request goes now: its tokens are spent.
    pub(super) fn keep(mut self) {
        (self.rate, self.kind, self.learned) = (false, None, false);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let pacing = self.pacing;
        if let Some(bucket) = pacing.rate.as_ref().filter(|_| self.rate) {
            bucket.lock().unwrap_or_else(|p| p.into_inner()).refund();
        }
        if let Some(kind) = self.kind {
            pacing.quota.lock().unwrap_or_else(|p| p.into_inner()).kinds[kind].refund();
        }
        if let Some(learned) = pacing.learned.as_ref().filter(|_| self.learned) {
            learned.refund();
        }
    }
}

impl Pacing {
    /// `previous`: the same route's pacing before a reload; its learned pace goes on.
    pub(super) fn new(rate: Option<Pace>, learn: bool, previous: Option<&Pacing>) -> Self {
        let learned = learn.then(|| {
            previous
                .and_then(|p| p.learned.clone())
                .unwrap_or_else(|| Arc::new(Learned::new()))
        });
        Self {
            rate: rate.map(|p| Mutex::new(Bucket::full(p.per_second, f64::from(p.burst)))),
            quota_seen: AtomicBool::new(false),
            quota: Mutex::new(Quota {
                headers: Vec::new(),
                kinds: REFILL.map(|per_second| Bucket::full(per_second, 1.0)),
            }),
            learned,
        }
    }

    /// An attempt the upstream took (not throttled): the rate a later hold learns from.
    pub(super) fn accepted(&self, now: Instant) {
        if let Some(learned) = &self.learned {
            learned.accepted(now);
        }
    }

    /// A hold opened at `now` and ends at `until`: the learned pace slows down.
    pub(super) fn held(&self, now: Instant, until: Instant) {
        if let Some(learned) = &self.learned {
            learned.held(now, until);
        }
    }

    /// The learned pace now, requests per second, once a hold taught one.
    pub(super) fn learned_per_second(&self, now: Instant) -> Option<f64> {
        self.learned.as_ref().and_then(|l| l.per_second(now))
    }

    pub(super) fn note_quota(&self, header: &'static str, left: i64) {
        let mut quota = self.quota.lock().unwrap_or_else(|p| p.into_inner());
        match quota
            .headers
            .iter_mut()
            .find(|(name, _, _)| *name == header)
        {
            Some(entry) => {
                entry.1 = entry.1.max(left);
                entry.2 = left;
            }
            None => quota.headers.push((header, left, left)),
        }
        self.quota_seen.store(true, Ordering::Release);
    }

    /// The wait before a request of `method` may go, and the tokens it reserved; `Err`
    /// with the wait when it would pass `deadline` (then nothing stays reserved).
    pub(super) fn reserve(
        &self,
        method: &http::Method,
        min_remaining: Option<u64>,
        now: Instant,
        deadline: Instant,
    ) -> Result<(Duration, Reservation<'_>), Duration> {
        let mut taken = Reservation {
            pacing: self,
            rate: false,
            kind: None,
            learned: false,
        };
        let mut wait = Duration::ZERO;
        if let Some(bucket) = &self.rate {
            wait = bucket
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .reserve(now, deadline)?;
            taken.rate = true;
        }
        if let Some(kind) = kind_of_method(method)
            && self.quota_seen.load(Ordering::Acquire)
        {
            let mut quota = self.quota.lock().unwrap_or_else(|p| p.into_inner());
            let low = quota.headers.iter().any(|(name, max, last)| {
                let threshold = min_remaining.map_or(*max as f64 * 0.05, |f| f as f64);
                kind_of_header(name) == Some(kind) && (*last as f64) < threshold
            });
            if low {
                wait = wait.max(quota.kinds[kind].reserve(now, deadline)?);
                taken.kind = Some(kind);
            } else {
                // Not low: the next time it is, the first request goes at once.
                quota.kinds[kind] = Bucket::full(REFILL[kind], 1.0);
            }
        }
        if let Some(learned) = &self.learned
            && let Some(learned_wait) = learned.reserve(now, deadline)?
        {
            wait = wait.max(learned_wait);
            taken.learned = true;
        }
        Ok((wait, taken))
    }
}

/// Reads (GET, HEAD), writes (PUT, POST, PATCH) or deletes, as ARM counts them.
fn kind_of_method(method: &http::Method) -> Option<usize> {
    match *method {
        http::Method::GET | http::Method::HEAD => Some(0),
        http::Method::PUT | http::Method::POST | http::Method::PATCH => Some(1),
        http::Method::DELETE => Some(2),
        _ => None,
    }
}

fn kind_of_header(name: &str) -> Option<usize> {
    if name.ends_with("-reads") {
        Some(0)
    } else if name.ends_with("-writes") {
        Some(1)
    } else if name.ends_with("-deletes") {
        Some(2)
    } else {
        None
    }
}
