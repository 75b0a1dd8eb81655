//! Credentials: what the "prepare upstream request" phase injects.
//!
//! A `Credential` is built from one `[credentials.NAME]` table and answers one question,
//! asynchronously: what to add to the next upstream request (`Injection`). Fixed values
//! (`static`, `subscription_key`) answer at once; token sources, added next, answer from a
//! cache that refreshes ahead of expiry.

mod fixed;

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::config::CredentialConfig;
use crate::secret::Secret;

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

/// Why a credential could not produce an injection. The message names the credential and
/// the cause (an Entra `AADSTS` code when there is one), never a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("credential \"{credential}\" is unavailable: {reason}")]
pub struct CredentialError {
    pub credential: String,
    pub reason: String,
}

/// One named credential.
#[derive(Debug)]
pub struct Credential {
    name: String,
    source: Source,
}

#[derive(Debug)]
enum Source {
    Fixed(fixed::FixedHeader),
}

impl Credential {
    pub fn from_config(name: &str, config: &CredentialConfig) -> Self {
        let source =
            match config {
                CredentialConfig::Static { header, value } => Source::Fixed(
                    fixed::FixedHeader::new("static", header.clone(), value.clone()),
                ),
                CredentialConfig::SubscriptionKey { header, key } => Source::Fixed(
                    fixed::FixedHeader::new("subscription_key", header.clone(), key.clone()),
                ),
            };
        Self {
            name: name.to_string(),
            source,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The config `type` of this credential.
    pub fn kind(&self) -> &'static str {
        match &self.source {
            Source::Fixed(f) => f.kind(),
        }
    }

    /// What to inject into the next upstream request.
    pub async fn authorize(&self) -> Result<Injection, CredentialError> {
        match &self.source {
            Source::Fixed(f) => Ok(f.injection()),
        }
    }
}

/// All configured credentials, by name.
#[derive(Debug, Default)]
pub struct CredentialSet {
    by_name: BTreeMap<String, Arc<Credential>>,
}

impl CredentialSet {
    pub fn from_config(configs: &BTreeMap<String, CredentialConfig>) -> Self {
        let by_name = configs
            .iter()
            .map(|(name, config)| {
                (
                    name.clone(),
                    Arc::new(Credential::from_config(name, config)),
                )
            })
            .collect();
        Self { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Credential>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Credential>> {
        self.by_name.values()
    }
}
