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
use opentelemetry::KeyValue;
use opentelemetry::trace::Span as _;
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
        // The traced request that needs the token, if any: the fetch's span goes under it.
        let parent = crate::trace::Parent::current();
        let task = tokio::spawn(async move {
            let mut span = parent.and_then(|parent| {
                parent.span(
                    "token fetch",
                    vec![
                        KeyValue::new("azgate.credential", cache.name.clone()),
                        KeyValue::new("azgate.token_source", cache.source.describe()),
                    ],
                )
            });
            let result = match tokio::time::timeout(FETCH_TIMEOUT, cache.source.fetch()).await {
                Ok(result) => result,
                Err(_) => Err(FetchError::new(format!(
                    "the token source did not answer within {}s",
                    FETCH_TIMEOUT.as_secs()
                ))),
            };
            // A failed fetch marks its span, with azgate's code but not the source's
            // message (an identity provider's text is not for a trace backend).
            if let (Some(span), Err(_)) = (span.as_mut(), &result) {
                span.set_attribute(KeyValue::new("error.type", "credential_unavailable"));
                span.set_status(opentelemetry::trace::Status::error(
                    "the token fetch failed",
                ));
            }
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
mod tests;
