//! Scoped Video Indexer tokens: one account's tokens for a project, a video, or the
//! account without edit rights, fetched on demand and kept in a bounded moka cache keyed
//! by (scope, edit). Each entry expires at its token's refresh point (JWT `exp` less
//! five minutes, or half the lifetime of a short token), so whoever receives a token has
//! most of its life left. Concurrent requests for one key share one fetch
//! (`try_get_with`); failures are not cached.
//!
//! The account token at the credential's own level is not duplicated here: it comes from
//! the credential's `TokenCache`, which refreshes it ahead of expiry.

use std::sync::Arc;
use std::time::Duration;

use moka::Expiry;
use moka::future::Cache;
use tokio::time::Instant;

use super::super::cache::TokenCache;
use super::super::token::{FetchError, Token};
use super::VideoIndexer;

/// Scoped tokens kept per credential; the least recently used go first beyond it.
const MAX_ENTRIES: u64 = 10_000;

/// What a token gives access to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Account,
    Project(String),
    Video(String),
}

impl Scope {
    /// A project scope, if `id` is a valid id (see `valid_id`).
    pub fn project(id: &str) -> Option<Self> {
        valid_id(id).then(|| Scope::Project(id.to_string()))
    }

    /// A video scope, if `id` is a valid id (see `valid_id`).
    pub fn video(id: &str) -> Option<Self> {
        valid_id(id).then(|| Scope::Video(id.to_string()))
    }
}

/// Video, project and account ids azgate passes on: one path segment of
/// `[A-Za-z0-9_-]{1,64}`, so nothing a client sends can change the URL they go into.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The video or project a Video Indexer data-plane path is about:
/// `…/Videos/{videoId}[/…]` or `…/Projects/{projectId}[/…]` (names in any case), when the
/// id is a valid id. The last such pair wins (`/Projects/p/Videos/v` is about the video).
/// Account-wide operations under those names (`Videos/Search`) are about no one video.
pub fn scope_in_path(path: &str) -> Option<Scope> {
    let segments: Vec<&str> = path.split('/').collect();
    segments.windows(2).rev().find_map(|pair| {
        let [kind, id] = pair else { return None };
        if ACCOUNT_WIDE.iter().any(|op| id.eq_ignore_ascii_case(op)) {
            return None;
        }
        if kind.eq_ignore_ascii_case("Videos") {
            Scope::video(id)
        } else if kind.eq_ignore_ascii_case("Projects") {
            Scope::project(id)
        } else {
            None
        }
    })
}

/// Video Indexer operations on the `Videos` and `Projects` collections, not on one item.
const ACCOUNT_WIDE: &[&str] = &["Search", "GetIdByExternalId"];

type Key = (Scope, bool);

/// The scoped tokens of one Video Indexer credential.
pub struct ScopedTokens {
    source: Arc<VideoIndexer>,
    /// The credential's own account token.
    account: Arc<TokenCache>,
    cache: Cache<Key, Arc<Token>>,
}

impl std::fmt::Debug for ScopedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ScopedTokens({}, {} cached)",
            self.source.account_id(),
            self.cache.entry_count()
        )
    }
}

/// Entries live until their token's refresh point.
struct UntilRefresh;

impl Expiry<Key, Arc<Token>> for UntilRefresh {
    fn expire_after_create(
        &self,
        _key: &Key,
        token: &Arc<Token>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(
            token
                .refresh_due_at()
                .saturating_duration_since(Instant::now()),
        )
    }
}

impl ScopedTokens {
    pub fn new(source: Arc<VideoIndexer>, account: Arc<TokenCache>) -> Self {
        Self {
            source,
            account,
            cache: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(UntilRefresh)
                .build(),
        }
    }

    /// The Video Indexer account and how its tokens are bought.
    pub fn source(&self) -> &Arc<VideoIndexer> {
        &self.source
    }

    /// The account's location (`trial` or a region).
    pub fn location(&self) -> &str {
        self.source.location()
    }

    pub fn account_id(&self) -> &str {
        self.source.account_id()
    }

    /// Whether the credential may give out edit rights at all.
    pub fn allows_edit(&self) -> bool {
        self.source.allows_edit()
    }

    /// A token for `scope`, with edit rights when `edit` is asked for and the credential
    /// has them (never above the credential's). Ids in `scope` must pass `valid_id`.
    pub async fn token(&self, scope: Scope, edit: bool) -> Result<Arc<Token>, FetchError> {
        let edit = edit && self.allows_edit();
        if scope == Scope::Account && edit == self.allows_edit() {
            return self.account.token().await;
        }
        let key = (scope, edit);
        // The cache's own expiry runs on the wall clock; this check on tokio's keeps the
        // rule exact (and testable with a paused clock).
        if let Some(token) = self.cache.get(&key).await {
            if Instant::now() < token.refresh_due_at() {
                return Ok(token);
            }
            self.cache.invalidate(&key).await;
        }
        let source = &self.source;
        let (scope, edit) = (&key.0, key.1);
        let fetch = async move {
            let token = source.fetch_scoped(scope, edit).await?;
            if token.usable(Instant::now()) {
                Ok(Arc::new(token))
            } else {
                Err(FetchError::new(
                    "Video Indexer returned a token that is already (nearly) expired",
                ))
            }
        };
        self.cache
            .try_get_with(key.clone(), fetch)
            .await
            .map_err(|err| (*err).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_plain_segment() {
        for good in ["a", "07ec9e38d4", "A-b_9", &"x".repeat(64)] {
            assert!(valid_id(good), "{good}");
        }
        for bad in [
            "",
            &"x".repeat(65),
            "a.b",
            "a/b",
            "..",
            "a%2Fb",
            "a b",
            "é",
            "a?b",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
        assert_eq!(Scope::video("v1"), Some(Scope::Video("v1".into())));
        assert_eq!(Scope::project("p/1"), None);
    }

    #[test]
    fn the_video_or_project_a_path_is_about() {
        let cases = [
            (
                "/trial/Accounts/a/Videos/v1/Index",
                Some(Scope::Video("v1".into())),
            ),
            (
                "/trial/Accounts/a/videos/v1",
                Some(Scope::Video("v1".into())),
            ),
            (
                "/trial/Accounts/a/Projects/p1/Render",
                Some(Scope::Project("p1".into())),
            ),
            (
                "/trial/Accounts/a/Projects/p1/Videos/v2",
                Some(Scope::Video("v2".into())),
            ),
            ("/trial/Accounts/a/Videos", None),
            ("/trial/Accounts/a/Videos/", None),
            ("/trial/Accounts/a/Videos/a.b/Index", None),
            ("/trial/Accounts/a/Videos/Search", None),
            ("/trial/Accounts/a/Videos/GetIdByExternalId", None),
        ];
        for (path, want) in cases {
            assert_eq!(scope_in_path(path), want, "{path}");
        }
    }
}
