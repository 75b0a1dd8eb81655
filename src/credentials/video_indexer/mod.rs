//! `video_indexer`: the access tokens Video Indexer expects on data-plane calls.
//!
//! Classic (API key) accounts buy them with the subscription key at
//! `{api_url}/auth/{location}/Accounts/{id}[/Projects/{pid}|/Videos/{vid}]/AccessToken`;
//! ARM-based accounts buy them with another credential's ARM token at
//! `generateAccessToken`. Neither answer says when the token expires, so the expiry comes
//! from the JWT's `exp` claim (one hour without it).
//!
//! The account token at the credential's own level sits in the credential's `TokenCache`
//! (`AccountToken` is its source; `mod.rs` one level up puts it in the query or a bearer
//! header). Narrower tokens — a project, a video, or without edit rights — are fetched by
//! the same `VideoIndexer` and kept in `scoped.rs`'s keyed cache; the read-only tokens a
//! vending route hands to browsers are kept in `viewer.rs`'s. Wire formats: `wire.rs`.

mod scoped;
#[cfg(test)]
mod tests;
mod viewer;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode, header};

use super::cache::TokenCache;
use super::token::{FetchError, FetchFuture, Token, TokenSource, http_client, remaining};
use crate::config::{VideoIndexerAuth, VideoIndexerConfig};
use crate::secret::Secret;
pub use scoped::{Scope, ScopedTokens, scope_in_path, valid_id};
pub use viewer::{Outcome, Viewer, ViewerTokens, expires_on, is_refusal};
use wire::{
    CALL_TIMEOUT, abbreviate, arm_access_token, classic_token, jwt_expiry, read, redact, segment,
    transport_error,
};

/// What `generateAccessToken` is called with; the ARM REST spec version AZURE.md quotes.
const ARM_API_VERSION: &str = "2024-01-01";
/// Video Indexer tokens live one hour; used when the token does not say.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// One Video Indexer account and how its tokens are bought.
pub struct VideoIndexer {
    location: String,
    account_id: String,
    account: Account,
    /// Built once; if that failed, every fetch reports why.
    client: Result<reqwest::Client, FetchError>,
}

enum Account {
    Classic(Classic),
    Arm(Arm),
}

struct Classic {
    api_url: String,
    /// `{api_url}/auth/{location}/Accounts/{id}`: scope and `/AccessToken` follow.
    account_url: String,
    subscription_key: Secret,
    allow_edit: bool,
}

struct Arm {
    /// The name of the credential that gives the ARM token.
    credential: String,
    /// `None` only if config validation let an unknown `arm` through.
    cache: Option<Arc<TokenCache>>,
    management_url: String,
    /// The full `generateAccessToken` URL, query included.
    url: String,
    /// The full `generateRestrictedViewerAccessToken` URL, query included.
    viewer_url: String,
    account_name: String,
    permission: String,
}

impl VideoIndexer {
    pub fn new(config: &VideoIndexerConfig, arm: Option<Arc<TokenCache>>) -> Self {
        let account = match &config.auth {
            VideoIndexerAuth::Classic {
                subscription_key,
                allow_edit,
            } => Account::Classic(Classic {
                api_url: config.api_url.clone(),
                account_url: format!(
                    "{}/auth/{}/Accounts/{}",
                    config.api_url.trim_end_matches('/'),
                    segment(&config.location),
                    segment(&config.account_id),
                ),
                subscription_key: subscription_key.clone(),
                allow_edit: *allow_edit,
            }),
            VideoIndexerAuth::Arm {
                arm: credential,
                subscription_id,
                resource_group,
                account_name,
                permission,
            } => Account::Arm(Arm {
                credential: credential.clone(),
                cache: arm,
                management_url: config.management_url.clone(),
                url: arm_action(
                    config,
                    subscription_id,
                    resource_group,
                    account_name,
                    "generateAccessToken",
                ),
                viewer_url: arm_action(
                    config,
                    subscription_id,
                    resource_group,
                    account_name,
                    "generateRestrictedViewerAccessToken",
                ),
                account_name: account_name.clone(),
                permission: permission.clone(),
            }),
        };
        Self {
            location: config.location.clone(),
            account_id: config.account_id.clone(),
            account,
            client: http_client(CALL_TIMEOUT),
        }
    }

    /// `trial` or the Azure region of the account.
    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// Whether this credential may hand out tokens with edit rights: classic
    /// `allow_edit = true`, ARM `permission = "Contributor"`.
    pub fn allows_edit(&self) -> bool {
        match &self.account {
            Account::Classic(classic) => classic.allow_edit,
            Account::Arm(arm) => arm.permission == "Contributor",
        }
    }

    /// A token for `scope`, with edit rights only when `edit` and the credential has them.
    pub async fn fetch_scoped(&self, scope: &Scope, edit: bool) -> Result<Token, FetchError> {
        let edit = edit && self.allows_edit();
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let value = match &self.account {
            Account::Classic(classic) => classic.fetch(client, scope, edit).await?,
            Account::Arm(arm) => arm.fetch(client, scope, edit).await?,
        };
        let expires_in = jwt_expiry(&value).map_or(DEFAULT_LIFETIME, remaining);
        Token::new(value, expires_in)
    }

    /// A read-only token for `scope` to hand to a browser: a restricted viewer token on ARM
    /// accounts, an `allowEdit=false` token on classic ones. Never edit rights, whatever
    /// the credential's permission.
    pub async fn fetch_viewer(&self, scope: &Scope) -> Result<Token, FetchError> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let value = match &self.account {
            Account::Classic(classic) => classic.fetch(client, scope, false).await?,
            Account::Arm(arm) => arm.fetch_viewer(client, scope).await?,
        };
        let expires_in = jwt_expiry(&value).map_or(DEFAULT_LIFETIME, remaining);
        Token::new(value, expires_in)
    }

    /// Whether tokens come from ARM (restricted viewer tokens) rather than the classic
    /// auth endpoint.
    pub fn is_arm(&self) -> bool {
        matches!(self.account, Account::Arm(_))
    }

    fn describe(&self) -> String {
        match &self.account {
            Account::Classic(classic) => format!(
                "video_indexer (classic, location {}, account {}, {}, {})",
                self.location,
                abbreviate(&self.account_id),
                if classic.allow_edit {
                    "allow_edit"
                } else {
                    "read-only"
                },
                classic.api_url,
            ),
            Account::Arm(arm) => format!(
                "video_indexer (ARM account {} via credential {}, {}, {})",
                arm.account_name, arm.credential, arm.permission, arm.management_url,
            ),
        }
    }
}

/// The token source of a Video Indexer credential's `TokenCache`: the account token at the
/// credential's own level (its edit rights included).
pub struct AccountToken(pub Arc<VideoIndexer>);

impl TokenSource for AccountToken {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(self.0.fetch_scoped(&Scope::Account, self.0.allows_edit()))
    }

    fn describe(&self) -> String {
        self.0.describe()
    }
}

impl Classic {
    /// The auth URL for `scope`, query included.
    fn url(&self, scope: &Scope, edit: bool) -> String {
        let scoped = match scope {
            Scope::Account => String::new(),
            Scope::Project(id) => format!("/Projects/{}", segment(id)),
            Scope::Video(id) => format!("/Videos/{}", segment(id)),
        };
        format!("{}{scoped}/AccessToken?allowEdit={edit}", self.account_url)
    }

    async fn fetch(
        &self,
        client: &reqwest::Client,
        scope: &Scope,
        edit: bool,
    ) -> Result<String, FetchError> {
        let mut key = HeaderValue::from_str(self.subscription_key.expose()).map_err(|_| {
            FetchError::new("subscription_key holds characters not allowed in a header")
        })?;
        key.set_sensitive(true);
        let response = client
            .get(self.url(scope, edit))
            .header("Ocp-Apim-Subscription-Key", key)
            .send()
            .await
            .map_err(|e| transport_error("Video Indexer", &e))?;
        let (status, headers, body) = read(response, "Video Indexer").await?;
        classic_token(status, &headers, &body)
            .map_err(|e| redact(e, self.subscription_key.expose()))
    }
}

impl Arm {
    async fn fetch(
        &self,
        client: &reqwest::Client,
        scope: &Scope,
        edit: bool,
    ) -> Result<String, FetchError> {
        let permission = if edit { "Contributor" } else { "Reader" };
        let body = match scope {
            Scope::Account => serde_json::json!({"permissionType": permission, "scope": "Account"}),
            Scope::Project(id) => serde_json::json!(
                {"permissionType": permission, "scope": "Project", "projectId": id}
            ),
            Scope::Video(id) => {
                serde_json::json!({"permissionType": permission, "scope": "Video", "videoId": id})
            }
        };
        self.post(client, &self.url, &body, "ARM generateAccessToken")
            .await
    }

    /// `generateRestrictedViewerAccessToken`: the body names the scope and its id only.
    async fn fetch_viewer(
        &self,
        client: &reqwest::Client,
        scope: &Scope,
    ) -> Result<String, FetchError> {
        let body = match scope {
            Scope::Account => serde_json::json!({"scope": "Account"}),
            Scope::Project(id) => serde_json::json!({"scope": "Project", "projectId": id}),
            Scope::Video(id) => serde_json::json!({"scope": "Video", "videoId": id}),
        };
        self.post(
            client,
            &self.viewer_url,
            &body,
            "ARM generateRestrictedViewerAccessToken",
        )
        .await
    }

    /// POSTs `body` to `url` with the ARM credential's token; the answer's `accessToken`.
    async fn post(
        &self,
        client: &reqwest::Client,
        url: &str,
        body: &serde_json::Value,
        what: &str,
    ) -> Result<String, FetchError> {
        let cache = self.cache.as_ref().ok_or_else(|| {
            FetchError::new(format!(
                "the ARM credential \"{}\" was not built (it must be an Entra ID token credential)",
                self.credential
            ))
        })?;
        // The ARM cache keeps its own backoff; its Retry-After is not ours to repeat.
        let arm_token = cache.token().await.map_err(|e| {
            FetchError::new(format!(
                "the ARM credential \"{}\" failed: {}",
                self.credential, e.message
            ))
        })?;
        let response = client
            .post(url)
            .header(header::AUTHORIZATION, arm_token.bearer.clone())
            .json(body)
            .send()
            .await
            .map_err(|e| transport_error(what, &e))?;
        let (status, headers, body) = read(response, what).await?;
        if status == StatusCode::UNAUTHORIZED {
            // ARM refused the token itself (revoked, or expired early): the next attempt
            // should not present it again.
            cache.reject(&arm_token);
        }
        arm_access_token(status, &headers, &body, what)
            .map_err(|e| redact(e, arm_token.value.expose()))
    }
}

/// `{management_url}/subscriptions/…/accounts/{name}/{action}?api-version=…`.
fn arm_action(
    config: &VideoIndexerConfig,
    subscription_id: &str,
    resource_group: &str,
    account_name: &str,
    action: &str,
) -> String {
    format!(
        "{}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.VideoIndexer/accounts/{}/{action}?api-version={ARM_API_VERSION}",
        config.management_url.trim_end_matches('/'),
        segment(subscription_id),
        segment(resource_group),
        segment(account_name),
    )
}
