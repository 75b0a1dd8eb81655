//! Viewer tokens for one vending route (`proxy::vend`): read-only Video Indexer tokens per
//! account, project or video, kept in a bounded moka cache keyed by scope.
//!
//! - An entry serves until its token's margin (30 s before expiry, or the last tenth of a
//!   short lifetime), the rule the credential cache injects by; then it is fetched again.
//! - Concurrent requests for one key share one fetch (`try_get_with`); distinct keys are
//!   fetched in parallel, at most `max_concurrent_fetches` at once, so a crawler walking
//!   many videos cannot push Video Indexer past its per-account rate.
//! - A refusal (4xx other than 429) is remembered for 30 s per key: a storm of requests
//!   for a missing video costs one upstream call per 30 s.
//! - A 429 holds every fetch of the route until its `Retry-After` (a second if none): the
//!   rate limit is the account's. Cached tokens are still served; the client gets the 429
//!   with the time left.
//!
//! Times are checked on tokio's clock (moka's own expiry runs on the wall clock), so the
//! rules are exact and testable with a paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moka::Expiry;
use moka::future::Cache;
use moka::policy::EvictionPolicy;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::super::token::{FetchError, Token};
use super::wire::jwt_expiry;
use super::{DEFAULT_LIFETIME, Scope, VideoIndexer};

/// How long a refusal is answered from memory.
const REFUSAL_MEMORY: Duration = Duration::from_secs(30);

/// A vended token and the wall-clock time it expires (from the JWT's `exp`).
#[derive(Debug)]
pub struct Viewer {
    pub token: Token,
    pub expires_on: SystemTime,
}

/// How a request for a token was served, for metrics and the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Refused,
    Error,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }
}

/// Counts since the route was built.
#[derive(Debug, Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub refused: AtomicU64,
    pub errors: AtomicU64,
}

/// A refusal and when it was received.
#[derive(Clone)]
struct Refusal {
    error: FetchError,
    at: Instant,
}

/// The viewer tokens of one vending route.
pub struct ViewerTokens {
    source: Arc<VideoIndexer>,
    tokens: Cache<Scope, Arc<Viewer>>,
    refusals: Cache<Scope, Refusal>,
    fetches: Arc<Semaphore>,
    /// After Video Indexer's 429: no fetch until then (the rate limit is the account's, so
    /// it holds for every key); cached tokens are still served.
    held_until: std::sync::Mutex<Option<Instant>>,
    pub stats: Stats,
}

impl std::fmt::Debug for ViewerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ViewerTokens({}, {} cached)",
            self.source.account_id(),
            self.tokens.entry_count()
        )
    }
}

/// Entries live until their token's margin.
struct UntilMargin;

impl Expiry<Scope, Arc<Viewer>> for UntilMargin {
    fn expire_after_create(
        &self,
        _key: &Scope,
        viewer: &Arc<Viewer>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(serve_until(&viewer.token).saturating_duration_since(Instant::now()))
    }
}

/// The last moment a token is handed out.
fn serve_until(token: &Token) -> Instant {
    token.expires_at - token.margin()
}

impl ViewerTokens {
    pub fn new(source: Arc<VideoIndexer>, max_entries: u64, max_concurrent_fetches: usize) -> Self {
        Self {
            source,
            tokens: Cache::builder()
                .max_capacity(max_entries)
                .eviction_policy(EvictionPolicy::lru())
                .expire_after(UntilMargin)
                .build(),
            refusals: Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(REFUSAL_MEMORY)
                .build(),
            fetches: Arc::new(Semaphore::new(max_concurrent_fetches.max(1))),
            held_until: std::sync::Mutex::new(None),
            stats: Stats::default(),
        }
    }

    /// The account the tokens are for.
    pub fn source(&self) -> &Arc<VideoIndexer> {
        &self.source
    }

    pub fn account_id(&self) -> &str {
        self.source.account_id()
    }

    pub fn location(&self) -> &str {
        self.source.location()
    }

    /// Tokens cached now (evictions are settled after each fetch).
    pub fn entries(&self) -> u64 {
        self.tokens.entry_count()
    }

    /// A viewer token for `scope` (ids already checked), and how it was served.
    pub async fn token(&self, scope: Scope) -> (Result<Arc<Viewer>, FetchError>, Outcome) {
        let now = Instant::now();
        if let Some(viewer) = self.tokens.get(&scope).await {
            if now < serve_until(&viewer.token) {
                return self.counted(Ok(viewer), Outcome::Hit);
            }
            self.tokens.invalidate(&scope).await;
        }
        if let Some(refusal) = self.refusals.get(&scope).await {
            if now.duration_since(refusal.at) < REFUSAL_MEMORY {
                return self.counted(Err(refusal.error), Outcome::Refused);
            }
            self.refusals.invalidate(&scope).await;
        }
        if let Some(left) = self.held_for(now) {
            let held = FetchError::new(format!(
                "Video Indexer throttled this account; no token is asked for {}s more",
                left.as_secs_f64().ceil()
            ))
            .with_status(429)
            .with_retry_after(Some(left));
            return self.counted(Err(held), Outcome::Refused);
        }
        let fetched = self
            .tokens
            .try_get_with(scope.clone(), self.fetch(&scope))
            .await
            .map_err(|err| (*err).clone());
        match fetched {
            Ok(viewer) => {
                // Evictions run now, not at some later call: the size bound holds and the
                // entry count is exact (a miss costs an upstream call anyway).
                self.tokens.run_pending_tasks().await;
                self.counted(Ok(viewer), Outcome::Miss)
            }
            Err(error) if remembered(&error) => {
                let refusal = Refusal {
                    error: error.clone(),
                    at: Instant::now(),
                };
                self.refusals.insert(scope, refusal).await;
                self.counted(Err(error), Outcome::Refused)
            }
            Err(error) if is_refusal(&error) => {
                if error.status == Some(429) {
                    let wait = error.retry_after.unwrap_or(Duration::from_secs(1));
                    let mut held = self.held_until.lock().unwrap_or_else(|p| p.into_inner());
                    let until = Instant::now() + wait;
                    *held = Some(held.map_or(until, |at| at.max(until)));
                }
                self.counted(Err(error), Outcome::Refused)
            }
            Err(error) => self.counted(Err(error), Outcome::Error),
        }
    }

    /// The time left on a hold after Video Indexer's 429, if one holds at `now`.
    fn held_for(&self, now: Instant) -> Option<Duration> {
        let held = self.held_until.lock().unwrap_or_else(|p| p.into_inner());
        held.filter(|until| *until > now).map(|until| until - now)
    }

    /// One upstream fetch, waiting for a fetch slot first.
    async fn fetch(&self, scope: &Scope) -> Result<Arc<Viewer>, FetchError> {
        let _slot = self
            .fetches
            .acquire()
            .await
            .map_err(|_| FetchError::new("the vending route is shutting down"))?;
        let token = self.source.fetch_viewer(scope).await?;
        if !token.usable(Instant::now()) {
            return Err(FetchError::new(
                "Video Indexer returned a token that is already (nearly) expired",
            ));
        }
        let expires_on = expires_on(token.value.expose());
        Ok(Arc::new(Viewer { token, expires_on }))
    }

    fn counted(
        &self,
        result: Result<Arc<Viewer>, FetchError>,
        outcome: Outcome,
    ) -> (Result<Arc<Viewer>, FetchError>, Outcome) {
        let counter = match outcome {
            Outcome::Hit => &self.stats.hits,
            Outcome::Miss => &self.stats.misses,
            Outcome::Refused => &self.stats.refused,
            Outcome::Error => &self.stats.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        (result, outcome)
    }
}

/// Video Indexer (or ARM) refused the request itself: a 4xx.
pub fn is_refusal(error: &FetchError) -> bool {
    error.status.is_some_and(|s| (400..500).contains(&s))
}

/// Refusals worth remembering: not 429, whose wait is Video Indexer's to announce.
fn remembered(error: &FetchError) -> bool {
    is_refusal(error) && error.status != Some(429)
}

/// When a Video Indexer token expires on the wall clock: its JWT's `exp`, else an hour
/// from now (the documented lifetime).
pub fn expires_on(token: &str) -> SystemTime {
    jwt_expiry(token).map_or_else(
        || SystemTime::now() + DEFAULT_LIFETIME,
        |exp| UNIX_EPOCH + Duration::from_secs(exp),
    )
}
