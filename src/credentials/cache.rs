//! One token cache per credential: single flight, refresh ahead in the background,
//! never an expired token, stale-while-valid on failure, backoff without stampedes, and a
//! throttled forced refresh after an upstream 401.
//!
//! The state sits behind a plain mutex that is never held across an `.await`; a fetch
//! runs as its own task (so a client that goes away cannot cancel it) and every waiter
//! shares its result.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio::time::Instant;

use super::token::{FetchError, SourceStep, Token, TokenSource};

/// No single fetch may take longer than this, whatever the source does.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// First wait after a failed fetch; doubles per consecutive failure.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// At most one forced refresh (after an upstream 401) per credential per this interval,
/// so an upstream that always answers 401 cannot make azgate hammer the token endpoint.
const FORCED_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

type SharedFetch = Shared<BoxFuture<'static, Result<Arc<Token>, FetchError>>>;

pub struct TokenCache {
    name: String,
    source: Box<dyn TokenSource>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    token: Option<Arc<Token>>,
    inflight: Option<SharedFetch>,
    /// Consecutive failures, for the backoff.
    failures: u32,
    /// No new fetch before this instant (set after a failure).
    retry_at: Option<Instant>,
    last_error: Option<FetchError>,
    last_refresh: Option<Instant>,
    last_forced: Option<Instant>,
    fetches: u64,
    successes: u64,
    failed_fetches: u64,
}

/// What the cache looks like now, for status pages and probes. Never the token.
#[derive(Debug, Clone)]
pub struct CacheStatus {
    pub has_token: bool,
    pub expires_in: Option<Duration>,
    pub last_refresh_ago: Option<Duration>,
    pub last_error: Option<String>,
    /// When a fetch may start next after a failure (zero: now, or one is running).
    pub next_attempt_in: Option<Duration>,
    pub fetches: u64,
    /// Fetches that returned a token, and that failed.
    pub successes: u64,
    pub failures: u64,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenCache({}, {})", self.name, self.source.describe())
    }
}

impl TokenCache {
    pub fn new(name: impl Into<String>, source: Box<dyn TokenSource>) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            source,
            state: Mutex::new(State::default()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// For chained sources (`default`): the sources the last fetch looked at.
    pub fn tried(&self) -> Vec<SourceStep> {
        self.source.tried()
    }

    /// A usable token. Returns at once while a valid token is held (starting a
    /// background refresh when one is due); otherwise waits for the one in-flight fetch,
    /// or fails at once while a failed fetch's backoff runs.
    pub async fn token(self: &Arc<Self>) -> Result<Arc<Token>, FetchError> {
        let fetch = {
            let mut state = self.lock();
            let now = Instant::now();
            if let Some(token) = state.token.clone().filter(|t| t.usable(now)) {
                if now >= token.refresh_due_at() && self.may_fetch(&state, now) {
                    tracing::debug!(credential = %self.name, "refreshing the token in the background");
                    drop(self.start_fetch(&mut state));
                }
                return Ok(token);
            }
            match &state.inflight {
                Some(fetch) => fetch.clone(),
                None if !self.may_fetch(&state, now) => {
                    return Err(state
                        .last_error
                        .clone()
                        .unwrap_or_else(|| FetchError::new("the token fetch is backing off")));
                }
                None => self.start_fetch(&mut state),
            }
        };
        let token = fetch.await?;
        if token.usable(Instant::now()) {
            Ok(token)
        } else {
            Err(FetchError::new(
                "the token endpoint returned a token that is already (nearly) expired",
            ))
        }
    }

    /// The upstream rejected `rejected` with a 401: drop it and fetch a new one. Returns
    /// whether a replay with a fresh token makes sense; false when a forced refresh
    /// already happened within the last few seconds.
    pub fn reject(self: &Arc<Self>, rejected: &Arc<Token>) -> bool {
        let mut state = self.lock();
        let now = Instant::now();
        let current = state
            .token
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, rejected));
        if !current {
            // Another request already replaced it; the new token deserves a try.
            return state.token.is_some() || state.inflight.is_some();
        }
        if state
            .last_forced
            .is_some_and(|at| now.duration_since(at) < FORCED_REFRESH_INTERVAL)
        {
            return false;
        }
        tracing::info!(credential = %self.name, "upstream answered 401: fetching a new token");
        state.last_forced = Some(now);
        state.token = None;
        state.retry_at = None;
        if state.inflight.is_none() {
            drop(self.start_fetch(&mut state));
        }
        true
    }

    pub fn status(&self) -> CacheStatus {
        let state = self.lock();
        let now = Instant::now();
        CacheStatus {
            has_token: state.token.as_ref().is_some_and(|t| t.usable(now)),
            expires_in: state.token.as_ref().map(|t| t.time_left(now)),
            last_refresh_ago: state.last_refresh.map(|at| now.duration_since(at)),
            last_error: state.last_error.as_ref().map(|e| e.message.clone()),
            next_attempt_in: state.last_error.as_ref().map(|_| {
                state
                    .retry_at
                    .filter(|_| state.inflight.is_none())
                    .map_or(Duration::ZERO, |at| at.saturating_duration_since(now))
            }),
            fetches: state.fetches,
            successes: state.successes,
            failures: state.failed_fetches,
        }
    }

    /// Starts the first fetch of a cache never used, so its state can be known before any
    /// request needs it (`/readyz` asks). Returns true while that first fetch is running,
    /// i.e. while there is neither a token nor an error to report.
    pub fn warm(self: &Arc<Self>) -> bool {
        let mut state = self.lock();
        if state.token.is_some() || state.last_error.is_some() {
            return false;
        }
        if state.inflight.is_none() {
            tracing::debug!(credential = %self.name, "readiness asked: fetching the first token");
            drop(self.start_fetch(&mut state));
        }
        true
    }

    /// Background upkeep without traffic (`refresher.rs` calls it): starts the fetch that
    /// is due for a cache that has been used — a retry once a failure's backoff has run
    /// out, or the refresh of a held token at its refresh point — and returns when it is
    /// due next. `None` when nothing is due: the cache was never used (tokens are fetched
    /// on first use), or a fetch is running.
    pub fn tend(self: &Arc<Self>) -> Option<Instant> {
        let mut state = self.lock();
        let now = Instant::now();
        if state.inflight.is_some() || (state.token.is_none() && state.last_error.is_none()) {
            return None;
        }
        let backoff_over = state.retry_at.unwrap_or(now);
        let due = match state.token.as_ref().filter(|t| t.usable(now)) {
            Some(token) => token.refresh_due_at().max(backoff_over),
            None => backoff_over,
        };
        if due > now {
            return Some(due);
        }
        tracing::debug!(credential = %self.name, "fetching a token in the background");
        drop(self.start_fetch(&mut state));
        None
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent state (every update is a
        // plain assignment), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn may_fetch(&self, state: &State, now: Instant) -> bool {
        state.inflight.is_none() && state.retry_at.is_none_or(|at| now >= at)
    }

    /// Spawns the fetch and records it as in flight. Called with the lock held, so no
    /// second fetch can start before this one is recorded.
    fn start_fetch(self: &Arc<Self>, state: &mut State) -> SharedFetch {
        let cache = Arc::clone(self);
        let task = tokio::spawn(async move {
            let result = match tokio::time::timeout(FETCH_TIMEOUT, cache.source.fetch()).await {
                Ok(result) => result,
                Err(_) => Err(FetchError::new(format!(
                    "the token source did not answer within {}s",
                    FETCH_TIMEOUT.as_secs()
                ))),
            };
            cache.complete(result)
        });
        let fetch = async move {
            task.await.unwrap_or_else(|e| {
                Err(FetchError::new(format!("the token fetch task failed: {e}")))
            })
        }
        .boxed()
        .shared();
        state.inflight = Some(fetch.clone());
        fetch
    }

    fn complete(&self, result: Result<Token, FetchError>) -> Result<Arc<Token>, FetchError> {
        let mut state = self.lock();
        let now = Instant::now();
        state.inflight = None;
        state.fetches += 1;
        // A token that cannot be injected (expires_in 0, or already expired) is a failed
        // fetch: backed off like one, not fetched again by every request.
        let result = result.and_then(|token| {
            if token.usable(now) {
                Ok(token)
            } else {
                Err(FetchError::new(format!(
                    "the token endpoint returned a token that expires in {}s, too soon to use",
                    token.time_left(now).as_secs()
                )))
            }
        });
        match result {
            Ok(token) => {
                let token = Arc::new(token);
                tracing::info!(
                    credential = %self.name,
                    expires_in_s = token.time_left(now).as_secs(),
                    "token fetched"
                );
                state.token = Some(token.clone());
                state.successes += 1;
                state.failures = 0;
                state.retry_at = None;
                state.last_error = None;
                state.last_refresh = Some(now);
                Ok(token)
            }
            Err(err) => {
                state.failures = state.failures.saturating_add(1);
                state.failed_fetches += 1;
                let backoff = BACKOFF_START
                    .saturating_mul(1u32 << (state.failures - 1).min(16))
                    .min(BACKOFF_MAX);
                let wait = err.retry_after.map_or(backoff, |asked| asked.max(backoff));
                state.retry_at = Some(now + wait);
                let still_valid = state.token.as_ref().is_some_and(|t| t.usable(now));
                tracing::warn!(
                    credential = %self.name,
                    failures = state.failures,
                    retry_in_ms = wait.as_millis() as u64,
                    still_valid,
                    "token fetch failed: {err}"
                );
                state.last_error = Some(err.clone());
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Answer = dyn Fn(usize) -> Result<(String, Duration), FetchError> + Send + Sync;

    /// A scripted source: each fetch waits `delay`, then asks `answer` for the result.
    struct Scripted {
        fetches: Arc<AtomicUsize>,
        delay: Duration,
        answer: Box<Answer>,
    }

    impl TokenSource for Scripted {
        fn fetch(&self) -> super::super::token::FetchFuture<'_> {
            Box::pin(async move {
                let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(self.delay).await;
                let (value, lifetime) = (self.answer)(n)?;
                Token::new(value, lifetime)
            })
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    fn cache(
        delay: Duration,
        answer: impl Fn(usize) -> Result<(String, Duration), FetchError> + Send + Sync + 'static,
    ) -> (Arc<TokenCache>, Arc<AtomicUsize>) {
        let fetches = Arc::new(AtomicUsize::new(0));
        let source = Scripted {
            fetches: fetches.clone(),
            delay,
            answer: Box::new(answer),
        };
        (TokenCache::new("test", Box::new(source)), fetches)
    }

    const HOUR: Duration = Duration::from_secs(3600);

    /// Lets spawned fetch tasks run up to their first await.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_cold_requests_share_one_fetch() {
        let (cache, fetches) = cache(Duration::from_millis(200), |n| Ok((format!("t{n}"), HOUR)));
        let tasks: Vec<_> = (0..500)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(
                    async move { cache.token().await.map(|t| t.value.expose().to_string()) },
                )
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), "t1");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_happens_in_the_background_without_blocking() {
        let (cache, fetches) = cache(Duration::from_secs(5), |n| Ok((format!("t{n}"), HOUR)));
        assert_eq!(cache.token().await.unwrap().value.expose(), "t1");
        // 5 min before expiry the refresh is due; the request must not wait for it.
        tokio::time::advance(HOUR - Duration::from_secs(290)).await;
        let started = Instant::now();
        assert_eq!(cache.token().await.unwrap().value.expose(), "t1");
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "a request waited on the refresh"
        );
        settle().await;
        assert_eq!(fetches.load(Ordering::SeqCst), 2, "the refresh started");
        // While it runs, requests keep the current token and start nothing new.
        assert_eq!(cache.token().await.unwrap().value.expose(), "t1");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(cache.token().await.unwrap().value.expose(), "t2");
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_in_hint_is_honoured() {
        let fetches = Arc::new(AtomicUsize::new(0));
        struct Hinted(Arc<AtomicUsize>);
        impl TokenSource for Hinted {
            fn fetch(&self) -> super::super::token::FetchFuture<'_> {
                Box::pin(async move {
                    let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
                    Ok(Token::new(format!("t{n}"), 2 * HOUR)?.with_refresh_in(Some(HOUR)))
                })
            }
            fn describe(&self) -> String {
                "hinted".into()
            }
        }
        let cache = TokenCache::new("hinted", Box::new(Hinted(fetches.clone())));
        cache.token().await.unwrap();
        tokio::time::advance(HOUR - Duration::from_secs(1)).await;
        cache.token().await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.token().await.unwrap();
        settle().await;
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn no_expired_token_is_ever_handed_out_across_rotations() {
        // Ten-minute tokens, requests every 7 s for three hours, fetches taking 3 s.
        let (cache, fetches) = cache(Duration::from_secs(3), |n| {
            Ok((format!("t{n}"), Duration::from_secs(600)))
        });
        let end = Instant::now() + 3 * HOUR;
        let mut seen = std::collections::HashSet::new();
        while Instant::now() < end {
            let token = cache.token().await.unwrap();
            let now = Instant::now();
            assert!(
                now + token.margin() < token.expires_at,
                "an expiring token was handed out"
            );
            seen.insert(token.value.expose().to_string());
            tokio::time::sleep(Duration::from_secs(7)).await;
        }
        let n = fetches.load(Ordering::SeqCst);
        assert!(
            (30..=40).contains(&n),
            "{n} fetches for 3 h of 10-minute tokens"
        );
        assert!(seen.len() >= 30);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_share_one_attempt_per_window() {
        let (cache, fetches) = cache(Duration::ZERO, |_| {
            Err(FetchError::new("AADSTS7000215: bad secret"))
        });
        let err = cache.token().await.unwrap_err();
        assert!(err.message.contains("AADSTS7000215"));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // Inside the 1 s window: answered at once from the last error, no new fetch.
        for _ in 0..100 {
            assert!(cache.token().await.is_err());
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(cache.token().await.is_err());
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // Second failure: a 2 s window.
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(cache.token().await.is_err());
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(cache.token().await.is_err());
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
        assert!(cache.status().last_error.unwrap().contains("AADSTS7000215"));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_from_the_endpoint_stretches_the_backoff() {
        let (cache, fetches) = cache(Duration::ZERO, |_| {
            Err(FetchError::new("throttled").with_retry_after(Some(Duration::from_secs(20))))
        });
        assert!(cache.token().await.is_err());
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(cache.token().await.is_err());
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(cache.token().await.is_err());
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_valid_token_is_served_through_an_outage() {
        let (cache, fetches) = cache(Duration::ZERO, |n| {
            if n == 1 {
                Ok(("t1".into(), HOUR))
            } else {
                Err(FetchError::new("HTTP 503"))
            }
        });
        cache.token().await.unwrap();
        tokio::time::advance(HOUR - Duration::from_secs(200)).await;
        // The refresh fails in the background; the still-valid token keeps flowing.
        for _ in 0..50 {
            assert_eq!(cache.token().await.unwrap().value.expose(), "t1");
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let attempts = fetches.load(Ordering::SeqCst);
        assert!(
            (2..=10).contains(&attempts),
            "{attempts} refresh attempts in 150 s"
        );
        // Past the expiry margin the token is no longer handed out.
        tokio::time::advance(Duration::from_secs(40)).await;
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(cache.token().await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_token_is_replaced_at_most_once_per_interval() {
        let (cache, fetches) = cache(Duration::ZERO, |n| Ok((format!("t{n}"), HOUR)));
        let t1 = cache.token().await.unwrap();
        assert!(cache.reject(&t1));
        let t2 = cache.token().await.unwrap();
        assert_eq!(t2.value.expose(), "t2");
        // Rejecting the old token again is answered by the newer one, without a fetch.
        assert!(cache.reject(&t1));
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // An upstream that refuses every token cannot make azgate loop.
        assert!(!cache.reject(&t2));
        assert_eq!(cache.token().await.unwrap().value.expose(), "t2");
        tokio::time::advance(FORCED_REFRESH_INTERVAL + Duration::from_millis(1)).await;
        assert!(cache.reject(&t2));
        assert_eq!(cache.token().await.unwrap().value.expose(), "t3");
    }

    #[tokio::test(start_paused = true)]
    async fn tending_retries_with_backoff_and_refreshes_ahead_without_traffic() {
        let (cache, fetches) = cache(Duration::ZERO, |n| {
            if n <= 3 {
                Err(FetchError::new("HTTP 503"))
            } else {
                Ok((format!("t{n}"), HOUR))
            }
        });
        assert_eq!(cache.tend(), None, "a cache nobody used is left alone");
        assert_eq!(fetches.load(Ordering::SeqCst), 0);
        assert!(cache.token().await.is_err());
        // Failure 1: the next attempt is due after the 1 s backoff, not before.
        let started = Instant::now();
        let due = cache.tend().unwrap();
        assert_eq!(due - started, Duration::from_secs(1));
        assert_eq!(cache.status().next_attempt_in, Some(Duration::from_secs(1)));
        let mut attempts = Vec::new();
        while fetches.load(Ordering::SeqCst) < 4 {
            match cache.tend() {
                Some(due) => tokio::time::sleep_until(due).await,
                None => {
                    attempts.push(Instant::now() - started);
                    settle().await;
                }
            }
        }
        // Retries at 1 s, then 2 s and 4 s later: the cache's own backoff.
        let secs: Vec<u64> = attempts.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [1, 3, 7]);
        assert!(cache.status().has_token);
        assert_eq!(cache.status().next_attempt_in, None);
        // A held token is refreshed at its refresh point, 5 min before expiry.
        let due = cache.tend().unwrap();
        assert_eq!(due - Instant::now(), HOUR - Duration::from_secs(300));
        tokio::time::sleep_until(due).await;
        assert_eq!(cache.tend(), None);
        settle().await;
        assert_eq!(fetches.load(Ordering::SeqCst), 5);
        assert_eq!(cache.token().await.unwrap().value.expose(), "t5");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_that_never_ends_is_cut_off() {
        let (cache, _) = cache(Duration::from_secs(3600 * 24), |_| {
            Ok(("late".into(), HOUR))
        });
        let err = cache.token().await.unwrap_err();
        assert!(err.message.contains("did not answer"), "{}", err.message);
    }
}
