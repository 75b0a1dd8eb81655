//! Send phase, across requests: a route's hold window (`[routes.throttle]`). An upstream's
//! 429, or 503 with a retry header, holds the whole route until the announced time (the
//! latest announced end wins), because on a route that injects a credential the quota is
//! azgate's principal's: while it holds, no request of the route goes upstream. A request
//! whose deadline allows the wait joins a bounded queue; any other is answered at once with
//! 429 `throttled` and `Retry-After` set to the whole seconds left. When the hold ends one
//! probe request goes first; if it succeeds the queue drains in a slow start (two more for
//! each success, open again at 64 at once), and waits again if anything is throttled. A client that disconnects leaves the queue (its future is dropped).
//! With `rate`, requests are also paced by a token bucket, to stay under a known quota.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::error::ProxyError;
use crate::config::ThrottleConfig;
use crate::telemetry::Telemetry;

/// The wait assumed for a 429 that announces none.
const UNANNOUNCED_HOLD: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Requests go upstream.
    Open,
    /// Nothing goes upstream until then.
    Holding { until: Instant },
    /// The hold ended; one request is finding out whether the upstream takes requests
    /// again. The others wait for its answer.
    Probing,
    /// The probe succeeded: the queue drains in a slow start, `budget` requests may go now
    /// and each success lets two more go, until the route is open again.
    Ramp { budget: u32 },
}

/// The slow start after a hold ends open once this many requests may go at once.
const RAMP_OPEN: u32 = 64;

/// One route's hold state.
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    route: Arc<str>,
    phase: watch::Sender<Phase>,
    queued: AtomicUsize,
    /// The token bucket of `rate`/`burst`: tokens left (negative: reserved by waiters) and
    /// when it was last refilled.
    bucket: std::sync::Mutex<(f64, Instant)>,
    /// What the upstream's quota headers said, to spread requests out when it runs low.
    quota: std::sync::Mutex<Quota>,
}

/// ARM's per-principal refill rates (reads, writes, deletes per second): below
/// `min_remaining`, requests of a kind are spread out at this pace, so the quota refills
/// as fast as it is spent instead of reaching zero.
const REFILL: [f64; 3] = [25.0, 10.0, 10.0];

/// Per quota header: the largest value seen and the last; per kind, a pacing bucket.
#[derive(Debug, Default)]
struct Quota {
    headers: Vec<(&'static str, i64, i64)>,
    next_slot: [Option<Instant>; 3],
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

/// Leave to send one attempt. The probe's pass resolves the probe when it is observed;
/// dropped unobserved (the client went away), it lets the next request probe instead.
#[derive(Debug)]
pub struct Pass<'a> {
    throttle: Option<&'a Throttle>,
    probe: bool,
    /// Sent during the slow start: its answer widens it.
    ramp: bool,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        // A slow-start slot not used (the client went away) goes back.
        if let Some(throttle) = self.throttle.filter(|_| self.ramp) {
            throttle.phase.send_if_modified(|phase| match phase {
                Phase::Ramp { budget } => {
                    *budget += 1;
                    true
                }
                _ => false,
            });
        }
        if let Some(throttle) = self.throttle.filter(|_| self.probe) {
            throttle.phase.send_if_modified(|phase| {
                let stuck = *phase == Phase::Probing;
                if stuck {
                    *phase = Phase::Holding {
                        until: Instant::now(),
                    };
                }
                stuck
            });
        }
    }
}

/// Counts a waiting request for as long as it waits.
struct Waiting<'a>(&'a Throttle);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Throttle {
    pub fn new(config: ThrottleConfig, route: Arc<str>) -> Self {
        Self {
            route,
            bucket: std::sync::Mutex::new((
                config.rate.map_or(0.0, |pace| f64::from(pace.burst)),
                Instant::now(),
            )),
            phase: watch::Sender::new(Phase::Open),
            queued: AtomicUsize::new(0),
            quota: std::sync::Mutex::default(),
            config,
        }
    }

    /// Notes what an `x-ms-ratelimit-remaining-*` header said is left.
    pub fn note_quota(&self, header: &'static str, left: i64) {
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
    }

    /// Spreads out a request of a kind whose quota runs low (below `min_remaining`, else 5%
    /// of the largest value seen): one request per refill interval of that kind, in the
    /// order they came; a wait past `deadline` is 429 `throttled`.
    pub async fn spread(
        &self,
        method: &http::Method,
        deadline: Instant,
        telemetry: &Telemetry,
    ) -> Result<(), ProxyError> {
        let Some(kind) = kind_of_method(method) else {
            return Ok(());
        };
        let wait = {
            let mut quota = self.quota.lock().unwrap_or_else(|p| p.into_inner());
            let floor = self.config.min_remaining;
            let low = quota.headers.iter().any(|(name, max, last)| {
                let threshold = floor.map_or(*max as f64 * 0.05, |f| f as f64);
                kind_of_header(name) == Some(kind) && (*last as f64) < threshold
            });
            if !low {
                quota.next_slot[kind] = None;
                return Ok(());
            }
            let now = Instant::now();
            let slot = quota.next_slot[kind].map_or(now, |at| at.max(now));
            if slot > deadline {
                drop(quota);
                telemetry.record_throttled(&self.route, "rejected");
                return Err(ProxyError::Throttled {
                    route: self.route.to_string(),
                    retry_after: slot - now,
                    queue_full: true,
                });
            }
            quota.next_slot[kind] = Some(slot + Duration::from_secs_f64(1.0 / REFILL[kind]));
            slot - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Paces the route at its `rate`: takes a token, waiting for one if the bucket is
    /// empty, unless the wait would pass `deadline` (then 429 `throttled`). Waiters
    /// reserve their token first, so they go in the order they came.
    pub async fn pace(&self, deadline: Instant, telemetry: &Telemetry) -> Result<(), ProxyError> {
        let Some(pace) = self.config.rate else {
            return Ok(());
        };
        let wait = {
            let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let (tokens, last) = *bucket;
            let refilled = (tokens + now.duration_since(last).as_secs_f64() * pace.per_second)
                .min(f64::from(pace.burst));
            let after = refilled - 1.0;
            let wait = if after >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-after / pace.per_second)
            };
            if now + wait > deadline {
                *bucket = (refilled, now);
                drop(bucket);
                telemetry.record_throttled(&self.route, "rejected");
                return Err(ProxyError::Throttled {
                    route: self.route.to_string(),
                    retry_after: wait,
                    queue_full: true,
                });
            }
            *bucket = (after, now);
            wait
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    pub fn holds(&self) -> bool {
        self.config.hold
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The time left on the hold, if the route holds.
    pub fn hold_left(&self) -> Option<Duration> {
        match *self.phase.borrow() {
            Phase::Holding { until } => Some(until.saturating_duration_since(Instant::now())),
            Phase::Probing => Some(Duration::ZERO),
            Phase::Open | Phase::Ramp { .. } => None,
        }
    }

    /// Waits until this request may go upstream: at once when the route does not hold;
    /// after the hold (and the probe) when `deadline` allows; else 429 `throttled`.
    pub async fn admit(
        &self,
        deadline: Instant,
        telemetry: &Telemetry,
    ) -> Result<Pass<'_>, ProxyError> {
        if !self.config.hold {
            return Ok(Pass {
                throttle: None,
                probe: false,
                ramp: false,
            });
        }
        let mut seen = self.phase.subscribe();
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            let now = Instant::now();
            let phase = *seen.borrow_and_update();
            let until = match phase {
                Phase::Open => {
                    return Ok(Pass {
                        throttle: Some(self),
                        probe: false,
                        ramp: false,
                    });
                }
                Phase::Ramp { budget } if budget > 0 => {
                    let took = self.phase.send_if_modified(|p| {
                        let same = *p == phase;
                        if same {
                            *p = Phase::Ramp { budget: budget - 1 };
                        }
                        same
                    });
                    if took {
                        return Ok(Pass {
                            throttle: Some(self),
                            probe: false,
                            ramp: true,
                        });
                    }
                    continue;
                }
                Phase::Holding { until } if now >= until => {
                    // The first request after the hold probes; the rest see Probing.
                    let became_probe = self.phase.send_if_modified(|p| {
                        let first = *p == phase;
                        if first {
                            *p = Phase::Probing;
                        }
                        first
                    });
                    if became_probe {
                        return Ok(Pass {
                            throttle: Some(self),
                            probe: true,
                            ramp: false,
                        });
                    }
                    continue;
                }
                Phase::Holding { until } => Some(until),
                // The probe's (or the slow start's) answers are due within one attempt:
                // the deadline bounds the wait.
                Phase::Probing | Phase::Ramp { .. } => None,
            };
            if waiting.is_none() {
                let over_deadline = until.is_some_and(|until| until > deadline);
                let full = self.queued.load(Ordering::Acquire) >= self.config.max_queue;
                if over_deadline || full {
                    telemetry.record_throttled(&self.route, "rejected");
                    let left = until.map_or(Duration::from_secs(1), |u| u - now);
                    return Err(ProxyError::Throttled {
                        route: self.route.to_string(),
                        retry_after: left,
                        queue_full: full && !over_deadline,
                    });
                }
                self.queued.fetch_add(1, Ordering::AcqRel);
                waiting = Some(Waiting(self));
                telemetry.record_throttled(&self.route, "queued");
            }
            tokio::select! {
                changed = seen.changed() => {
                    if changed.is_err() {
                        return Err(ProxyError::Throttled {
                            route: self.route.to_string(),
                            retry_after: Duration::from_secs(1),
                            queue_full: false,
                        });
                    }
                }
                () = tokio::time::sleep_until(until.unwrap_or(deadline)) => {
                    if until.is_none() {
                        // Still probing at the deadline.
                        telemetry.record_throttled(&self.route, "rejected");
                        return Err(ProxyError::Throttled {
                            route: self.route.to_string(),
                            retry_after: Duration::from_secs(1),
                            queue_full: false,
                        });
                    }
                }
            }
        }
    }

    /// What the upstream answered an attempt sent with `pass`: a throttling answer opens
    /// (or extends) the hold; the probe's other answers open the route again.
    pub fn observe(
        &self,
        mut pass: Pass<'_>,
        throttled_for: Option<Duration>,
        telemetry: &Telemetry,
    ) {
        if !self.config.hold {
            return;
        }
        let probe = std::mem::replace(&mut pass.probe, false);
        let ramp = std::mem::replace(&mut pass.ramp, false);
        match throttled_for {
            Some(wait) => {
                let until = Instant::now() + wait;
                let mut opened = false;
                self.phase.send_if_modified(|phase| match *phase {
                    Phase::Holding { until: current } if current >= until => false,
                    Phase::Holding { .. } => {
                        *phase = Phase::Holding { until };
                        true
                    }
                    Phase::Open | Phase::Probing | Phase::Ramp { .. } => {
                        *phase = Phase::Holding { until };
                        opened = true;
                        true
                    }
                });
                if opened {
                    telemetry.record_throttle_hold(&self.route);
                    tracing::info!(
                        route = %self.route,
                        hold_ms = wait.as_millis() as u64,
                        "upstream throttled the route: holding its requests"
                    );
                }
            }
            None if probe => {
                self.phase.send_replace(Phase::Ramp { budget: 2 });
            }
            None if ramp => {
                self.phase.send_if_modified(|phase| match phase {
                    Phase::Ramp { budget } => {
                        *budget += 2;
                        if *budget >= RAMP_OPEN {
                            *phase = Phase::Open;
                        }
                        true
                    }
                    _ => false,
                });
            }
            None => {}
        }
    }
}

/// How long an upstream's answer holds the route: a 429 (the announced wait, else a
/// second), or a 503 that announces one.
pub fn throttled_for(status: http::StatusCode, announced: Option<Duration>) -> Option<Duration> {
    match status.as_u16() {
        429 => Some(announced.unwrap_or(UNANNOUNCED_HOLD)),
        503 => announced,
        _ => None,
    }
}
