//! Retry decisions for the "send with retry" phase: which outcomes are retried, how long
//! to wait (the server's `x-ms-retry-after-ms`, `retry-after-ms`, `Retry-After`, else
//! exponential backoff with full jitter), and a per-route budget so that azgate never
//! multiplies an upstream outage.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, StatusCode};
use tokio::time::Instant;

use crate::config::RetryConfig;

/// First backoff step when the server names no wait; doubles per attempt.
const BACKOFF_BASE: Duration = Duration::from_millis(500);

/// What happened on one attempt.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// The upstream answered with response headers.
    Response(StatusCode, &'a HeaderMap),
    /// No response: refused, reset or closed before the response headers.
    ConnectionFailed,
    /// No response, and the upstream said it did not process the request (an HTTP/2
    /// stream refused, or left out by a graceful GOAWAY).
    Unprocessed,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Retry {
        wait: Duration,
        reason: &'static str,
    },
    /// Hand the outcome to the client as it is.
    Stop(&'static str),
}

/// The `reason` label of a retry after a connection failure.
pub const CONNECTION_REASON: &str = "connection";

/// The `reason` label of a retry after the upstream answered `status`.
pub fn reason_for(status: u16) -> &'static str {
    match status {
        429 => "429",
        504 => "504",
        _ => "status",
    }
}

/// Decides after attempt number `attempt` (1-based).
pub fn decide(
    policy: &RetryConfig,
    method: &Method,
    outcome: Outcome<'_>,
    attempt: u32,
    body_replayable: bool,
) -> Decision {
    let retryable_method = policy.non_idempotent || is_idempotent(method);
    let (reason, asked) = match outcome {
        Outcome::Response(status, headers) => {
            if !policy.on.contains(&status.as_u16()) {
                return Decision::Stop("not a retried status");
            }
            // A 429 means the request was not processed, whatever the method.
            if status != StatusCode::TOO_MANY_REQUESTS && !retryable_method {
                return Decision::Stop("method is not idempotent");
            }
            (reason_for(status.as_u16()), requested_wait(headers))
        }
        Outcome::ConnectionFailed => {
            if !retryable_method {
                return Decision::Stop("method is not idempotent");
            }
            (CONNECTION_REASON, None)
        }
        // Whatever the method, and at once: the next attempt goes on another connection.
        Outcome::Unprocessed => (CONNECTION_REASON, Some(Duration::ZERO)),
    };
    if attempt >= policy.max_attempts {
        return Decision::Stop("attempts exhausted");
    }
    if !body_replayable {
        return Decision::Stop("body too large to replay");
    }
    let wait = match asked {
        Some(wait) if wait > policy.max_delay => {
            return Decision::Stop("requested wait exceeds max_delay");
        }
        Some(wait) => wait,
        None => backoff(attempt, policy.max_delay),
    };
    Decision::Retry { wait, reason }
}

/// GET, HEAD, OPTIONS, PUT and DELETE may be repeated without changing the outcome.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

/// The wait the server asked for: `x-ms-retry-after-ms`, then `retry-after-ms`
/// (milliseconds), then `Retry-After` (delta-seconds or an HTTP date).
pub fn requested_wait(headers: &HeaderMap) -> Option<Duration> {
    for name in ["x-ms-retry-after-ms", "retry-after-ms"] {
        if let Some(ms) = header_number(headers, name) {
            return Some(Duration::from_millis(ms));
        }
    }
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    let text = headers.get(name)?.to_str().ok()?.trim();
    text.parse::<u64>().ok().or_else(|| {
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// Full jitter: uniformly random in `[0, min(max_delay, 500 ms × 2^(attempt-1))]`.
pub fn backoff(attempt: u32, max_delay: Duration) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max_delay);
    let millis = ceiling.as_millis() as u64;
    Duration::from_millis(fastrand::u64(0..=millis))
}

/// Retries may be at most 20% of a route's requests over a sliding 10 s window, with a
/// floor of 3 retries per second so that a quiet route can still retry.
#[derive(Debug)]
pub struct RetryBudget {
    window: Mutex<Window>,
}

const WINDOW_SECS: usize = 10;
const RATIO: f64 = 0.2;
const FLOOR_PER_SEC: u32 = 3;

#[derive(Debug)]
struct Window {
    origin: Instant,
    /// The second (since `origin`) that `buckets[second % WINDOW_SECS]` counts.
    newest: u64,
    /// (requests, retries) per second.
    buckets: [(u32, u32); WINDOW_SECS],
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            window: Mutex::new(Window {
                origin: Instant::now(),
                newest: 0,
                buckets: [(0, 0); WINDOW_SECS],
            }),
        }
    }
}

impl RetryBudget {
    /// Counts a client request (not a retry).
    pub fn record_request(&self) {
        let mut w = self.lock();
        let slot = w.advance();
        w.buckets[slot].0 = w.buckets[slot].0.saturating_add(1);
    }

    /// Takes one retry from the budget; false when the window's budget is spent.
    pub fn try_retry(&self) -> bool {
        let mut w = self.lock();
        let slot = w.advance();
        let (requests, retries) = w.buckets.iter().fold((0u64, 0u64), |(q, r), (bq, br)| {
            (q + *bq as u64, r + *br as u64)
        });
        let allowed =
            ((requests as f64 * RATIO) as u64).max(FLOOR_PER_SEC as u64 * WINDOW_SECS as u64);
        if retries >= allowed {
            return false;
        }
        w.buckets[slot].1 = w.buckets[slot].1.saturating_add(1);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Window {
    /// Moves the window to now, clearing seconds that fell out; returns now's bucket.
    fn advance(&mut self) -> usize {
        let now = Instant::now().duration_since(self.origin).as_secs();
        if now > self.newest {
            let stale = (now - self.newest).min(WINDOW_SECS as u64);
            for i in 1..=stale {
                self.buckets[((self.newest + i) % WINDOW_SECS as u64) as usize] = (0, 0);
            }
            self.newest = now;
        }
        (self.newest % WINDOW_SECS as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn requested_wait_forms_and_precedence() {
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let cases: Vec<(HeaderMap, Option<u64>)> = vec![
            (headers(&[("retry-after", "7")]), Some(7000)),
            (headers(&[("retry-after-ms", "250")]), Some(250)),
            (headers(&[("x-ms-retry-after-ms", "1500")]), Some(1500)),
            (
                headers(&[
                    ("x-ms-retry-after-ms", "100"),
                    ("retry-after-ms", "200"),
                    ("retry-after", "3"),
                ]),
                Some(100),
            ),
            (
                headers(&[("retry-after-ms", "200"), ("retry-after", "3")]),
                Some(200),
            ),
            (
                headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]),
                Some(0),
            ),
            (headers(&[("retry-after", "soon")]), None),
            (headers(&[]), None),
        ];
        for (h, want) in cases {
            assert_eq!(
                requested_wait(&h).map(|d| d.as_millis() as u64),
                want,
                "{h:?}"
            );
        }
        let from_date = requested_wait(&headers(&[("retry-after", &date)])).unwrap();
        assert!((118..=120).contains(&from_date.as_secs()), "{from_date:?}");
    }

    #[test]
    fn a_request_the_upstream_did_not_process_is_sent_again_at_once_whatever_the_method() {
        let policy = RetryConfig::default();
        for method in [Method::POST, Method::PATCH, Method::GET] {
            assert_eq!(
                decide(&policy, &method, Outcome::Unprocessed, 1, true),
                Decision::Retry {
                    wait: Duration::ZERO,
                    reason: CONNECTION_REASON
                }
            );
        }
        let last = decide(&policy, &Method::POST, Outcome::Unprocessed, 4, true);
        assert_eq!(last, Decision::Stop("attempts exhausted"));
        let streamed = decide(&policy, &Method::POST, Outcome::Unprocessed, 1, false);
        assert_eq!(streamed, Decision::Stop("body too large to replay"));
    }

    #[test]
    fn decisions() {
        let policy = RetryConfig::default();
        let none = HeaderMap::new();
        let r429 = Outcome::Response(StatusCode::TOO_MANY_REQUESTS, &none);
        let r504 = Outcome::Response(StatusCode::GATEWAY_TIMEOUT, &none);
        let r500 = Outcome::Response(StatusCode::INTERNAL_SERVER_ERROR, &none);
        let retry = |d: Decision| matches!(d, Decision::Retry { .. });
        assert!(retry(decide(&policy, &Method::POST, r429, 1, true)));
        assert!(retry(decide(&policy, &Method::GET, r504, 1, true)));
        assert!(retry(decide(&policy, &Method::PUT, r504, 3, true)));
        assert!(
            !retry(decide(&policy, &Method::PUT, r504, 4, true)),
            "4 attempts in all"
        );
        assert!(!retry(decide(&policy, &Method::POST, r504, 1, true)));
        assert!(!retry(decide(
            &policy,
            &Method::PATCH,
            Outcome::ConnectionFailed,
            1,
            true
        )));
        assert!(retry(decide(
            &policy,
            &Method::DELETE,
            Outcome::ConnectionFailed,
            1,
            true
        )));
        assert!(!retry(decide(&policy, &Method::GET, r500, 1, true)));
        assert!(
            !retry(decide(&policy, &Method::GET, r429, 1, false)),
            "unreplayable body"
        );
        let lenient = RetryConfig {
            non_idempotent: true,
            ..RetryConfig::default()
        };
        assert!(retry(decide(&lenient, &Method::POST, r504, 1, true)));
        let long = headers(&[("retry-after", "31")]);
        assert_eq!(
            decide(
                &policy,
                &Method::GET,
                Outcome::Response(StatusCode::TOO_MANY_REQUESTS, &long),
                1,
                true
            ),
            Decision::Stop("requested wait exceeds max_delay")
        );
        let asked = headers(&[("retry-after", "2")]);
        assert_eq!(
            decide(
                &policy,
                &Method::GET,
                Outcome::Response(StatusCode::TOO_MANY_REQUESTS, &asked),
                1,
                true
            ),
            Decision::Retry {
                wait: Duration::from_secs(2),
                reason: "429"
            }
        );
    }

    #[test]
    fn jitter_stays_inside_its_bounds() {
        let max = Duration::from_secs(30);
        for attempt in 1..=8u32 {
            let ceiling = (BACKOFF_BASE * 2u32.pow(attempt - 1)).min(max);
            let samples: Vec<Duration> = (0..2000).map(|_| backoff(attempt, max)).collect();
            assert!(samples.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            // Full jitter spreads over the whole range, not just near the ceiling.
            assert!(
                samples.iter().any(|d| *d < ceiling / 4),
                "attempt {attempt}"
            );
            assert!(
                samples.iter().any(|d| *d > ceiling * 3 / 4),
                "attempt {attempt}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn budget_is_a_fifth_of_requests_with_a_floor() {
        let budget = RetryBudget::default();
        // A quiet route: the floor of 30 retries per 10 s applies.
        let granted = (0..100).filter(|_| budget.try_retry()).count();
        assert_eq!(granted, 30);
        // After the window slides past, the budget is back.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(budget.try_retry());
        // A busy route: 1000 requests in the window allow 200 retries.
        tokio::time::advance(Duration::from_secs(11)).await;
        for _ in 0..1000 {
            budget.record_request();
        }
        let granted = (0..1000).filter(|_| budget.try_retry()).count();
        assert_eq!(granted, 200);
    }
}
