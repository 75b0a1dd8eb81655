//! Send phase, across requests: a route's hold window (`[routes.throttle]`). An upstream's
//! 429, or 503 with a retry header, holds the whole route until the announced time (the
//! latest announced end wins), because on a route that injects a credential the quota is
//! azgate's principal's: while it holds, no request of the route goes upstream. A request
//! whose deadline allows the wait joins a bounded queue; any other is answered at once with
//! 429 `throttled` and `Retry-After` set to the whole seconds left. When the hold ends one
//! probe request goes first; if it succeeds the queue drains in a slow start (two more for
//! each success, open again at 64 at once), and waits again if anything is throttled. A
//! client that disconnects leaves the queue (its future is dropped). Then the route's pace
//! (`pace.rs`): `rate`, the spreading by quota headers, and the pace each hold teaches; a
//! request waiting for its paced slot when the route starts holding gives the slot back and
//! waits the hold out instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::ProxyError;
use crate::config::ThrottleConfig;

mod pace;
use crate::telemetry::Telemetry;
use pace::Pacing;

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
    /// The hold and the queue outlive a reload that changes the route's throttle settings
    /// (`continuing`): they are the upstream's state, not the config's.
    phase: Arc<watch::Sender<Phase>>,
    queued: Arc<AtomicUsize>,
    /// `rate`/`burst` pacing and the spreading of requests by quota headers (`pace.rs`).
    pace: Pacing,
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

/// Counts a waiting request for as long as it waits, and how its wait ended: `queued`
/// (sent after it), `abandoned` (the client went away); `None` when it was refused, which
/// `refused` counts.
struct Waiting<'a, 't> {
    throttle: &'a Throttle,
    telemetry: &'t Telemetry,
    outcome: Option<&'static str>,
}

impl Drop for Waiting<'_, '_> {
    fn drop(&mut self) {
        self.throttle.queued.fetch_sub(1, Ordering::AcqRel);
        if let Some(outcome) = self.outcome {
            self.telemetry
                .record_throttled(&self.throttle.route, outcome);
        }
    }
}

impl Throttle {
    pub fn new(config: ThrottleConfig, route: Arc<str>) -> Self {
        Self {
            route,
            pace: Pacing::new(config.rate, config.hold && config.learn, None),
            phase: Arc::new(watch::Sender::new(Phase::Open)),
            queued: Arc::new(AtomicUsize::new(0)),
            config,
        }
    }

    /// The same route after a reload changed its throttle settings: the hold, its queue
    /// and the learned pace go on (requests already waiting are still counted and still
    /// released by the probe); the new settings apply to what comes next.
    pub fn continuing(config: ThrottleConfig, route: Arc<str>, previous: &Throttle) -> Self {
        let learn = config.hold && config.learn;
        Self {
            route,
            pace: Pacing::new(config.rate, learn, Some(&previous.pace)),
            phase: previous.phase.clone(),
            queued: previous.queued.clone(),
            config,
        }
    }

    /// Notes what an `x-ms-ratelimit-remaining-*` header said is left.
    pub fn note_quota(&self, header: &'static str, left: i64) {
        self.pace.note_quota(header, left);
    }

    /// 429 `throttled` for a request that cannot wait `wait`, counted.
    fn refused(&self, wait: Duration, queue_full: bool, telemetry: &Telemetry) -> ProxyError {
        telemetry.record_throttled(&self.route, "rejected");
        ProxyError::Throttled {
            route: self.route.to_string(),
            retry_after: wait,
            queue_full,
        }
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

    /// The pace a hold taught the route, requests per second, if one did.
    pub fn learned_per_second(&self) -> Option<f64> {
        self.pace.learned_per_second(Instant::now())
    }

    /// Waits until this attempt of a `method` request may go upstream: after the route's
    /// hold (and the probe) and at its pace, when `deadline` allows; else 429 `throttled`.
    pub async fn admit(
        &self,
        method: &http::Method,
        deadline: Instant,
        telemetry: &Telemetry,
    ) -> Result<Pass<'_>, ProxyError> {
        if !self.config.hold {
            let pass = Pass {
                throttle: None,
                probe: false,
                ramp: false,
            };
            let (wait, slot) = self.reserve(method, deadline, telemetry)?;
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            slot.keep();
            return Ok(pass);
        }
        let mut seen = self.phase.subscribe();
        loop {
            let pass = self.wait_out_hold(&mut seen, deadline, telemetry).await?;
            let (wait, slot) = self.reserve(method, deadline, telemetry)?;
            if wait.is_zero() || self.slept_unheld(&mut seen, Instant::now() + wait).await {
                slot.keep();
                return Ok(pass);
            }
            // The route started holding: the slot goes back (dropped) and so does the pass.
        }
    }

    /// A paced slot for a `method` request, or 429 `throttled` when it comes too late.
    fn reserve(
        &self,
        method: &http::Method,
        deadline: Instant,
        telemetry: &Telemetry,
    ) -> Result<(Duration, pace::Reservation<'_>), ProxyError> {
        self.pace
            .reserve(method, self.config.min_remaining, Instant::now(), deadline)
            .map_err(|wait| self.refused(wait, true, telemetry))
    }

    /// Sleeps until `until`: true, or false as soon as the route starts holding.
    async fn slept_unheld(&self, seen: &mut watch::Receiver<Phase>, until: Instant) -> bool {
        let sleep = tokio::time::sleep_until(until);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                changed = seen.changed() => {
                    if changed.is_err() {
                        return true;
                    }
                    if matches!(*seen.borrow_and_update(), Phase::Holding { .. }) {
                        return false;
                    }
                }
            }
        }
    }

    /// Waits until the route's hold lets this request go: at once while it is open, after
    /// the hold (and the probe) when `deadline` allows; else 429 `throttled`.
    async fn wait_out_hold(
        &self,
        seen: &mut watch::Receiver<Phase>,
        deadline: Instant,
        telemetry: &Telemetry,
    ) -> Result<Pass<'_>, ProxyError> {
        // Dropped with the future when the client goes away: then `abandoned`.
        let mut waiting: Option<Waiting<'_, '_>> = None;
        let admitted = self
            .hold_turn(seen, deadline, telemetry, &mut waiting)
            .await;
        if let Some(waiting) = waiting.as_mut() {
            waiting.outcome = admitted.is_ok().then_some("queued");
        }
        admitted
    }

    async fn hold_turn<'a, 't>(
        &'a self,
        seen: &mut watch::Receiver<Phase>,
        deadline: Instant,
        telemetry: &'t Telemetry,
        waiting: &mut Option<Waiting<'a, 't>>,
    ) -> Result<Pass<'a>, ProxyError> {
        // Open while this request waits, when it is traced; ends when it stops waiting.
        let mut _hold_span = None;
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
            // Checked again each time the hold changes: other requests' 429s can push it
            // past the deadline of one already waiting.
            let over_deadline = until.is_some_and(|until| until > deadline);
            let full =
                waiting.is_none() && self.queued.load(Ordering::Acquire) >= self.config.max_queue;
            if over_deadline || full {
                let left = until.map_or(Duration::from_secs(1), |u| u - now);
                return Err(self.refused(left, full && !over_deadline, telemetry));
            }
            if waiting.is_none() {
                self.queued.fetch_add(1, Ordering::AcqRel);
                *waiting = Some(Waiting {
                    throttle: self,
                    telemetry,
                    outcome: Some("abandoned"),
                });
                _hold_span = crate::trace::span_in_current(
                    "throttle hold",
                    vec![KeyValue::new("azgate.route", self.route.to_string())],
                );
            }
            tokio::select! {
                changed = seen.changed() => {
                    if changed.is_err() {
                        return Err(self.refused(Duration::from_secs(1), false, telemetry));
                    }
                }
                () = tokio::time::sleep_until(until.unwrap_or(deadline)) => {
                    if until.is_none() {
                        // Still probing at the deadline.
                        return Err(self.refused(Duration::from_secs(1), false, telemetry));
                    }
                }
            }
        }
    }

    /// What the upstream answered an attempt sent with `pass`: a throttling answer opens
    /// (or extends) the hold; the probe's other answers open the route again.
    /// `over_quota`: the answer was a 429, which also teaches the route a pace (a 503's
    /// wait holds the route but says nothing about its rate).
    pub fn observe(
        &self,
        mut pass: Pass<'_>,
        throttled_for: Option<Duration>,
        over_quota: bool,
        telemetry: &Telemetry,
    ) {
        if !self.config.hold {
            return;
        }
        let probe = std::mem::replace(&mut pass.probe, false);
        let ramp = std::mem::replace(&mut pass.ramp, false);
        if throttled_for.is_none() {
            self.pace.accepted(Instant::now());
        }
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
                if opened && over_quota {
                    self.pace.held(Instant::now(), until);
                }
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
/// second), or a 503 that announces one. `announced` (the wait headers, three lookups by
/// name) is read for those two statuses only.
pub fn throttled_for(
    status: http::StatusCode,
    announced: impl FnOnce() -> Option<Duration>,
) -> Option<Duration> {
    match status.as_u16() {
        429 => Some(announced().unwrap_or(UNANNOUNCED_HOLD)),
        503 => announced(),
        _ => None,
    }
}
