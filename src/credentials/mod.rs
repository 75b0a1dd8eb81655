//! Credentials: what the "prepare upstream request" phase injects.
//!
//! A `Credential` is built from one `[credentials.NAME]` table. Fixed values (`static`,
//! `subscription_key`) answer at once; token sources (one file each) sit behind a
//! `TokenCache` that refreshes ahead of expiry, so requests do not wait on token
//! endpoints while a valid token is held.

mod azure_cli;
mod cache;
mod default_chain;
mod entra;
mod fixed;
mod managed_identity;
pub mod refresher;
pub mod token;
pub mod video_indexer;

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, header};

pub use cache::{CacheStatus, TokenCache};

use crate::config::{CredentialConfig, VideoIndexerInject};
use crate::env::Env;
use crate::secret::Secret;
use token::{Token, TokenSource};

/// What a credential adds to an upstream request.
#[derive(Debug, Clone)]
pub enum Injection {
    /// A header; replaces any header of that name the client sent. Marked sensitive, so
    /// hyper's HPACK never indexes it and `Debug` output hides it.
    Header {
        name: HeaderName,
        value: HeaderValue,
    },
    /// A query parameter, appended after the client's (own copies of it are stripped).
    Query { name: &'static str, value: Secret },
}

impl Injection {
    /// The secret part of the injection (the token without `Bearer `, or the key).
    pub fn secret_bytes(&self) -> &[u8] {
        match self {
            Injection::Header { value, .. } => {
                let bytes = value.as_bytes();
                bytes.strip_prefix(b"Bearer ").unwrap_or(bytes)
            }
            Injection::Query { value, .. } => value.expose().as_bytes(),
        }
    }
}

/// Why a credential could not produce an injection. The message names the credential and
/// the cause (an Entra `AADSTS` code when there is one), never a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("credential \"{credential}\" is unavailable: {reason}")]
pub struct CredentialError {
    pub credential: String,
    pub reason: String,
}

/// The injection for one request, and the token behind it (to reject it on a 401).
#[derive(Debug, Clone)]
pub struct Authorization {
    pub injection: Injection,
    token: Option<Arc<Token>>,
    /// For fixed credentials: which value (primary or secondary) was sent.
    slot: Option<fixed::Slot>,
}

/// What an upstream's refusal (401, or 403 for keys) leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing better to send: the refusal goes back to the client.
    Final,
    /// Replay once with a fresh token or the other key.
    Replay,
    /// Replay once with the secondary key, which this refusal switched to.
    FailedOver,
}

/// One named credential.
#[derive(Debug)]
pub struct Credential {
    name: String,
    kind: &'static str,
    source: Source,
}

#[derive(Debug)]
enum Source {
    Fixed(fixed::FixedHeader),
    /// An Entra ID token, sent as `Authorization: Bearer`.
    Bearer(Arc<TokenCache>),
    /// A Video Indexer account token, in the query or as a bearer header.
    VideoIndexer {
        cache: Arc<TokenCache>,
        inject: VideoIndexerInject,
        /// The account's narrower tokens (a project, a video, read-only).
        scoped: video_indexer::ScopedTokens,
    },
}

impl Credential {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The config `type` of this credential.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The token cache, for token credentials.
    pub fn cache(&self) -> Option<&Arc<TokenCache>> {
        match &self.source {
            Source::Fixed(_) => None,
            Source::Bearer(cache) | Source::VideoIndexer { cache, .. } => Some(cache),
        }
    }

    /// The scoped tokens of a Video Indexer credential.
    pub fn video_indexer(&self) -> Option<&video_indexer::ScopedTokens> {
        match &self.source {
            Source::VideoIndexer { scoped, .. } => Some(scoped),
            _ => None,
        }
    }

    /// What to inject into the next upstream request.
    pub async fn authorize(&self) -> Result<Authorization, CredentialError> {
        match &self.source {
            Source::Fixed(fixed) => {
                let (injection, slot) = fixed.injection();
                Ok(Authorization {
                    injection,
                    token: None,
                    slot: Some(slot),
                })
            }
            Source::Bearer(cache) => {
                let token = cache.token().await.map_err(|e| self.error(e.message))?;
                Ok(Authorization {
                    injection: Injection::Header {
                        name: header::AUTHORIZATION,
                        value: token.bearer.clone(),
                    },
                    token: Some(token),
                    slot: None,
                })
            }
            Source::VideoIndexer { cache, inject, .. } => {
                let token = cache.token().await.map_err(|e| self.error(e.message))?;
                Ok(Authorization {
                    injection: video_indexer_injection(*inject, &token),
                    token: Some(token),
                    slot: None,
                })
            }
        }
    }

    /// What to inject into a request about one video or project (`scoped_tokens`): a
    /// token scoped to it, with the credential's own permission. Other credentials inject
    /// what they always do.
    pub async fn authorize_scoped(
        &self,
        scope: &video_indexer::Scope,
    ) -> Result<Authorization, token::FetchError> {
        let Source::VideoIndexer { scoped, inject, .. } = &self.source else {
            return self
                .authorize()
                .await
                .map_err(|e| token::FetchError::new(e.reason));
        };
        let token = scoped.token(scope.clone(), scoped.allows_edit()).await?;
        Ok(Authorization {
            injection: video_indexer_injection(*inject, &token),
            token: Some(token),
            slot: None,
        })
    }

    /// The upstream refused a request carrying `used` with `status`. A token refused
    /// with 401 is dropped and a new one fetched; a primary key refused with 401 or 403
    /// gives way to the secondary key until the next reload.
    pub fn refuse(&self, used: &Authorization, status: http::StatusCode) -> Refusal {
        match (&self.source, &used.token, used.slot) {
            (Source::Bearer(cache) | Source::VideoIndexer { cache, .. }, Some(token), _)
                if status == http::StatusCode::UNAUTHORIZED =>
            {
                if cache.reject(token) {
                    Refusal::Replay
                } else {
                    Refusal::Final
                }
            }
            (Source::Fixed(fixed), _, Some(slot))
                if status == http::StatusCode::UNAUTHORIZED
                    || status == http::StatusCode::FORBIDDEN =>
            {
                match fixed.refuse(slot) {
                    (true, true) => {
                        tracing::warn!(
                            credential = %self.name,
                            %status,
                            "the upstream refused the primary key: using the secondary key until the next reload"
                        );
                        Refusal::FailedOver
                    }
                    (true, false) => Refusal::Replay,
                    _ => Refusal::Final,
                }
            }
            _ => Refusal::Final,
        }
    }

    /// The bare token or key, for `azgate token NAME`.
    pub async fn reveal(&self) -> Result<String, CredentialError> {
        match &self.source {
            Source::Fixed(fixed) => Ok(fixed.reveal()),
            Source::Bearer(cache) | Source::VideoIndexer { cache, .. } => {
                let token = cache.token().await.map_err(|e| self.error(e.message))?;
                Ok(token.value.expose().to_string())
            }
        }
    }

    fn error(&self, reason: String) -> CredentialError {
        CredentialError {
            credential: self.name.clone(),
            reason,
        }
    }
}

/// Where a Video Indexer token goes: the `accessToken` query parameter, or a bearer header.
fn video_indexer_injection(inject: VideoIndexerInject, token: &Token) -> Injection {
    match inject {
        VideoIndexerInject::Query => Injection::Query {
            name: "accessToken",
            value: token.value.clone(),
        },
        VideoIndexerInject::Header => Injection::Header {
            name: header::AUTHORIZATION,
            value: token.bearer.clone(),
        },
    }
}

/// All configured credentials, by name.
#[derive(Debug, Default)]
pub struct CredentialSet {
    by_name: BTreeMap<String, Arc<Credential>>,
}

impl CredentialSet {
    /// Builds every credential. Video Indexer credentials that buy their token with an
    /// ARM token are built after the credential they name (validated to exist).
    pub fn build(configs: &BTreeMap<String, CredentialConfig>, env: &Env) -> Self {
        Self::rebuild(configs, env, None)
    }

    /// Builds the credentials of a new config, keeping (with their cached tokens) those
    /// whose definition did not change since `previous` (the config and set in service).
    pub fn rebuild(
        configs: &BTreeMap<String, CredentialConfig>,
        env: &Env,
        previous: Option<(&BTreeMap<String, CredentialConfig>, &CredentialSet)>,
    ) -> Self {
        // Token credentials are kept with their caches; fixed ones are cheap to rebuild,
        // and rebuilding puts a failed-over key back on the primary.
        let kept = |name: &str, config: &CredentialConfig| {
            if matches!(
                config,
                CredentialConfig::Static { .. } | CredentialConfig::SubscriptionKey { .. }
            ) {
                return None;
            }
            let (old_configs, old_set) = previous?;
            (old_configs.get(name) == Some(config))
                .then(|| old_set.get(name).cloned())
                .flatten()
        };
        let mut by_name = BTreeMap::new();
        for (name, config) in configs {
            if matches!(config, CredentialConfig::VideoIndexer(_)) {
                continue;
            }
            if let Some(credential) = kept(name, config) {
                by_name.insert(name.clone(), credential);
            } else if let Some(source) = simple_source(config) {
                let credential = Credential {
                    name: name.clone(),
                    kind: config.kind(),
                    source,
                };
                by_name.insert(name.clone(), Arc::new(credential));
            } else if let Some(token_source) = entra_source(config, env) {
                let credential = Credential {
                    name: name.clone(),
                    kind: config.kind(),
                    source: Source::Bearer(TokenCache::new(name.clone(), token_source)),
                };
                by_name.insert(name.clone(), Arc::new(credential));
            }
        }
        for (name, config) in configs {
            let CredentialConfig::VideoIndexer(vi) = config else {
                continue;
            };
            let arm_name = match &vi.auth {
                crate::config::VideoIndexerAuth::Arm { arm, .. } => Some(arm.as_str()),
                crate::config::VideoIndexerAuth::Classic { .. } => None,
            };
            // Kept only if the ARM credential it buys its token with was kept too.
            let arm_kept = arm_name.is_none_or(|arm| {
                let old = previous.and_then(|(_, set)| set.get(arm));
                matches!((old, by_name.get(arm)), (Some(a), Some(b)) if Arc::ptr_eq(a, b))
            });
            if arm_kept && let Some(credential) = kept(name, config) {
                by_name.insert(name.clone(), credential);
                continue;
            }
            let arm = arm_name
                .and_then(|arm| by_name.get(arm))
                .and_then(|c: &Arc<Credential>| c.cache())
                .cloned();
            let source = Arc::new(video_indexer::VideoIndexer::new(vi, arm));
            let account = video_indexer::AccountToken(source.clone());
            let cache = TokenCache::new(name.clone(), Box::new(account));
            let credential = Credential {
                name: name.clone(),
                kind: config.kind(),
                source: Source::VideoIndexer {
                    scoped: video_indexer::ScopedTokens::new(source, cache.clone()),
                    cache,
                    inject: vi.inject,
                },
            };
            by_name.insert(name.clone(), Arc::new(credential));
        }
        Self { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Credential>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Credential>> {
        self.by_name.values()
    }
}

fn simple_source(config: &CredentialConfig) -> Option<Source> {
    match config {
        CredentialConfig::Static { header, value } => Some(Source::Fixed(fixed::FixedHeader::new(
            header.clone(),
            value.clone(),
            None,
        ))),
        CredentialConfig::SubscriptionKey {
            header,
            key,
            secondary_key,
        } => Some(Source::Fixed(fixed::FixedHeader::new(
            header.clone(),
            key.clone(),
            secondary_key.clone(),
        ))),
        _ => None,
    }
}

/// The token source of an Entra ID credential type.
fn entra_source(config: &CredentialConfig, env: &Env) -> Option<Box<dyn TokenSource>> {
    let source: Box<dyn TokenSource> = match config {
        CredentialConfig::ClientSecret(c) => Box::new(entra::ClientSecret::new(c, env)),
        CredentialConfig::ClientCertificate(c) => Box::new(entra::ClientCertificate::new(c, env)),
        CredentialConfig::WorkloadIdentity(c) => Box::new(entra::WorkloadIdentity::new(c, env)),
        CredentialConfig::ManagedIdentity(c) => {
            Box::new(managed_identity::ManagedIdentity::new(c, env))
        }
        CredentialConfig::AzureCli(c) => Box::new(azure_cli::AzureCli::new(c, env)),
        CredentialConfig::Default(c) => Box::new(default_chain::DefaultChain::new(c, env)),
        CredentialConfig::Static { .. }
        | CredentialConfig::SubscriptionKey { .. }
        | CredentialConfig::VideoIndexer(_) => return None,
    };
    Some(source)
}
