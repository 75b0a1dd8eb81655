//! Tokens and the sources that fetch them. The wire-format helpers every source shares
//! (expiry fields in their several shapes, Entra ID error bodies, `Retry-After`) are in
//! `wire`, re-exported here.

mod wire;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

use crate::secret::Secret;

pub use wire::{entra_error, parse_expiry, remaining, retry_after, snippet};

/// Longest a margin may be: a token is not injected in its last 30 s.
const MAX_EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Longest token lifetime believed: Entra ID and managed identity tokens live at most a
/// day; an `expires_in` of years is a broken endpoint (and would overflow the clock).
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Refresh starts at most this long before expiry (when the source gives no `refresh_in`).
const MAX_REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);

/// A fetched access token. Times are on tokio's clock, so tests can pause it.
#[derive(Debug)]
pub struct Token {
    /// The token itself. `Debug`/`Display` print `***`.
    pub value: Secret,
    /// `Bearer <token>`, built once and marked sensitive.
    pub bearer: HeaderValue,
    pub fetched_at: Instant,
    pub expires_at: Instant,
    /// When the source asked to be refreshed (`refresh_in`), if it did.
    pub refresh_at: Option<Instant>,
}

impl Token {
    /// A token that expires `expires_in` from now. Fails if the token cannot be sent in a
    /// header (the source returned garbage).
    pub fn new(value: String, expires_in: Duration) -> Result<Self, FetchError> {
        if expires_in > MAX_LIFETIME {
            return Err(FetchError::new(format!(
                "its expires_in of {}s is not a plausible lifetime (tokens live minutes to hours)",
                expires_in.as_secs()
            )));
        }
        let mut bearer = HeaderValue::from_str(&format!("Bearer {value}"))
            .map_err(|_| FetchError::new("the token holds characters not allowed in a header"))?;
        bearer.set_sensitive(true);
        let now = Instant::now();
        Ok(Self {
            value: Secret::new(value),
            bearer,
            fetched_at: now,
            expires_at: now + expires_in,
            refresh_at: None,
        })
    }

    /// Sets the source's own refresh hint (`refresh_in`).
    pub fn with_refresh_in(mut self, refresh_in: Option<Duration>) -> Self {
        // A hint past expiry means nothing: refresh by the usual rule then.
        self.refresh_at = refresh_in
            .filter(|d| *d < self.lifetime())
            .map(|d| self.fetched_at + d);
        self
    }

    pub fn lifetime(&self) -> Duration {
        self.expires_at.saturating_duration_since(self.fetched_at)
    }

    /// 30 s, or a tenth of the lifetime for short-lived tokens.
    pub fn margin(&self) -> Duration {
        MAX_EXPIRY_MARGIN.min(self.lifetime() / 10)
    }

    /// Whether the token may still be injected at `now`.
    pub fn usable(&self, now: Instant) -> bool {
        now + self.margin() < self.expires_at
    }

    /// When a background refresh should start: `refresh_in` when given, else when
    /// `min(5 min, half the lifetime)` remains.
    pub fn refresh_due_at(&self) -> Instant {
        self.refresh_at
            .unwrap_or_else(|| self.expires_at - MAX_REFRESH_AHEAD.min(self.lifetime() / 2))
    }

    pub fn time_left(&self, now: Instant) -> Duration {
        self.expires_at.saturating_duration_since(now)
    }
}

/// Why a source could not produce a token. The message names the cause (the Entra
/// `AADSTS` code and description when there is one), never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub message: String,
    /// How long the endpoint asked us to wait (`Retry-After`), if it did.
    pub retry_after: Option<Duration>,
    /// The source is not set up here (variables unset, no identity endpoint answering,
    /// `az` missing or not logged in), as opposed to set up and failing. The `default`
    /// chain moves on only past unavailable sources.
    pub unavailable: bool,
    /// The HTTP status the token service refused with, when it answered with an error.
    pub status: Option<u16>,
}

impl FetchError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry_after: None,
            unavailable: false,
            status: None,
        }
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Marks the source as not available here (see `unavailable`).
    pub fn unavailable(mut self) -> Self {
        self.unavailable = true;
        self
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// One source a chained credential (`default`) looked at, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStep {
    /// "environment", "workload identity", "managed identity", "Azure CLI".
    pub source: &'static str,
    pub outcome: StepOutcome,
    /// Why it was passed over or failed. Never a secret.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Not set up here: the chain moved on.
    Unavailable,
    /// Gave the token.
    Used,
    /// Set up here but failed: the chain stopped, and retries this source.
    Failed,
}

impl StepOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Unavailable => "unavailable",
            StepOutcome::Used => "used",
            StepOutcome::Failed => "failed",
        }
    }
}

pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Token, FetchError>> + Send + 'a>>;

/// Where tokens come from: one implementation per credential `type`. The cache calls
/// `fetch` at most once at a time per credential.
pub trait TokenSource: Send + Sync + 'static {
    fn fetch(&self) -> FetchFuture<'_>;

    /// What the source is, for `check --probe` and the status page ("client_secret, tenant
    /// contoso, v2 endpoint"). Never a secret.
    fn describe(&self) -> String;

    /// For chained sources: the sources the last fetch looked at, in order. Empty for the
    /// others.
    fn tried(&self) -> Vec<SourceStep> {
        Vec::new()
    }
}

/// A reqwest client for token endpoints: bounded connect and total time, rustls with the
/// process's crypto provider, no redirects (a token endpoint that redirects is misconfigured).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, FetchError> {
    // reqwest panics without a provider; installing is idempotent, so a library caller
    // (or a unit test run alone) that skipped `install_crypto_provider` still gets a client.
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("azgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| FetchError::new(format!("cannot build the HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn margins_and_refresh_points() {
        let hour = Token::new("t".into(), Duration::from_secs(3600)).unwrap();
        assert_eq!(hour.margin(), Duration::from_secs(30));
        assert_eq!(
            hour.refresh_due_at() - hour.fetched_at,
            Duration::from_secs(3300)
        );
        let short = Token::new("t".into(), Duration::from_secs(120)).unwrap();
        assert_eq!(short.margin(), Duration::from_secs(12));
        assert_eq!(
            short.refresh_due_at() - short.fetched_at,
            Duration::from_secs(60)
        );
        let hinted = Token::new("t".into(), Duration::from_secs(7200))
            .unwrap()
            .with_refresh_in(Some(Duration::from_secs(3600)));
        assert_eq!(
            hinted.refresh_due_at() - hinted.fetched_at,
            Duration::from_secs(3600)
        );
        assert!(hour.usable(hour.fetched_at + Duration::from_secs(3569)));
        assert!(!hour.usable(hour.fetched_at + Duration::from_secs(3570)));
        assert!(Token::new("bad\nvalue".into(), Duration::from_secs(1)).is_err());
        assert!(!format!("{hour:?}").contains("Bearer t"));
    }
}
