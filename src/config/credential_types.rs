//! The validated credential definitions: one `CredentialConfig` per `[credentials.NAME]`,
//! by `type` (built by `credentials/`; the token sources in `crate::credentials` run them).

use std::path::PathBuf;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use rustls::pki_types::CertificateDer;

use crate::secret::Secret;

/// One `[credentials.NAME]` entry, validated for its `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum CredentialConfig {
    /// A fixed header, e.g. a bearer token taken from a variable. The value is marked
    /// sensitive: its `Debug` prints `Sensitive`.
    Static {
        header: HeaderName,
        value: HeaderValue,
    },
    /// An API Management subscription key (sensitive, like `Static`'s value).
    SubscriptionKey {
        header: HeaderName,
        key: HeaderValue,
        /// Used after the primary key is refused (401/403), until the next reload:
        /// rotating keys without downtime.
        secondary_key: Option<HeaderValue>,
    },
    ClientSecret(ClientSecretConfig),
    ClientCertificate(ClientCertificateConfig),
    ManagedIdentity(ManagedIdentityConfig),
    WorkloadIdentity(WorkloadIdentityConfig),
    AzureCli(AzureCliConfig),
    Default(DefaultConfig),
    VideoIndexer(VideoIndexerConfig),
}

impl CredentialConfig {
    /// The config `type` name.
    pub fn kind(&self) -> &'static str {
        match self {
            CredentialConfig::Static { .. } => "static",
            CredentialConfig::SubscriptionKey { .. } => "subscription_key",
            CredentialConfig::ClientSecret(_) => "client_secret",
            CredentialConfig::ClientCertificate(_) => "client_certificate",
            CredentialConfig::ManagedIdentity(_) => "managed_identity",
            CredentialConfig::WorkloadIdentity(_) => "workload_identity",
            CredentialConfig::AzureCli(_) => "azure_cli",
            CredentialConfig::Default(_) => "default",
            CredentialConfig::VideoIndexer(_) => "video_indexer",
        }
    }

    /// The token audience, for Entra ID token credentials.
    pub fn audience(&self) -> Option<&Audience> {
        match self {
            CredentialConfig::ClientSecret(c) => Some(&c.audience),
            CredentialConfig::ClientCertificate(c) => Some(&c.audience),
            CredentialConfig::ManagedIdentity(c) => Some(&c.audience),
            CredentialConfig::WorkloadIdentity(c) => Some(&c.audience),
            CredentialConfig::AzureCli(c) => Some(&c.audience),
            CredentialConfig::Default(c) => Some(&c.audience),
            _ => None,
        }
    }

    /// Whether this credential yields an Entra ID bearer token (usable as `arm` of a
    /// Video Indexer credential).
    pub fn is_entra_token(&self) -> bool {
        matches!(
            self,
            CredentialConfig::ClientSecret(_)
                | CredentialConfig::ClientCertificate(_)
                | CredentialConfig::ManagedIdentity(_)
                | CredentialConfig::WorkloadIdentity(_)
                | CredentialConfig::AzureCli(_)
                | CredentialConfig::Default(_)
        )
    }
}

/// What a token is for: a v2 `scope` (`https://management.azure.com/.default`) or a v1
/// `resource` (`https://rest.media.azure.net`). Each converts to the other form for
/// sources that only speak one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    Scope(String),
    Resource(String),
}

impl Audience {
    /// The v2 scope: a resource gains `/.default`.
    pub fn scope(&self) -> String {
        match self {
            Audience::Scope(scope) => scope.clone(),
            Audience::Resource(resource) => format!("{}/.default", resource.trim_end_matches('/')),
        }
    }

    /// The v1 resource: a scope loses its `/.default` (or last permission segment).
    pub fn resource(&self) -> String {
        match self {
            Audience::Resource(resource) => resource.clone(),
            Audience::Scope(scope) => match scope.strip_suffix("/.default") {
                Some(resource) => resource.to_string(),
                None => scope.clone(),
            },
        }
    }
}

/// An Entra ID application: who asks for the token and where.
#[derive(Debug, Clone, PartialEq)]
pub struct EntraApp {
    pub tenant: String,
    pub client_id: String,
    /// Authority host; `None` means `$AZURE_AUTHORITY_HOST`, then the public cloud.
    pub authority: Option<String>,
    /// Full token endpoint URL, replacing `{authority}/{tenant}/oauth2/...`.
    pub token_url: Option<String>,
}

/// `type = "client_secret"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSecretConfig {
    pub app: EntraApp,
    pub client_secret: Secret,
    pub audience: Audience,
}

/// `type = "client_certificate"`: a PEM file holding the certificate (chain) and its key.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCertificateConfig {
    pub app: EntraApp,
    pub audience: Audience,
    pub certificate_path: PathBuf,
    /// The certificate first, then any chain certificates, as DER.
    pub chain: Arc<Vec<CertificateDer<'static>>>,
    /// The private key as PEM (PKCS#1, SEC1 or PKCS#8).
    pub key_pem: Secret,
    /// Send the chain in the assertion's `x5c` header (subject name / issuer auth).
    pub send_chain: bool,
}

/// `type = "managed_identity"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedIdentityConfig {
    pub audience: Audience,
    /// A user-assigned identity's client id.
    pub client_id: Option<String>,
    /// An IMDS-protocol URL replacing `http://169.254.169.254/metadata/identity/oauth2/token`.
    pub endpoint: Option<String>,
}

/// `type = "workload_identity"`; unset keys come from the `AZURE_*` variables the AKS
/// webhook injects.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadIdentityConfig {
    pub audience: Audience,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub token_file: Option<PathBuf>,
    pub authority: Option<String>,
}

/// `type = "azure_cli"`.
#[derive(Debug, Clone, PartialEq)]
pub struct AzureCliConfig {
    pub audience: Audience,
    pub tenant: Option<String>,
    pub subscription: Option<String>,
}

/// `type = "default"`: environment, workload identity, managed identity, Azure CLI.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultConfig {
    pub audience: Audience,
}

/// `type = "video_indexer"`.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoIndexerConfig {
    /// `trial` or an Azure region name.
    pub location: String,
    pub account_id: String,
    pub auth: VideoIndexerAuth,
    pub inject: VideoIndexerInject,
    /// Where classic tokens are fetched (default `https://api.videoindexer.ai`).
    pub api_url: String,
    /// Where ARM `generateAccessToken` is called (default `https://management.azure.com`).
    pub management_url: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum VideoIndexerAuth {
    /// Classic (API key) account: the subscription key buys an account access token.
    Classic {
        subscription_key: Secret,
        allow_edit: bool,
    },
    /// ARM-based account: another credential's ARM token buys it via `generateAccessToken`.
    Arm {
        arm: String,
        subscription_id: String,
        resource_group: String,
        account_name: String,
        /// `Reader` or `Contributor`.
        permission: String,
    },
}

/// How a Video Indexer token is attached to requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoIndexerInject {
    /// `accessToken=` query parameter (what all of Microsoft's samples do).
    Query,
    /// `Authorization: Bearer`.
    Header,
}
