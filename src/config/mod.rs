//! Configuration: TOML text -> `${VAR}` interpolation -> raw serde model (`raw`) ->
//! validated, typed `Config` (`validate`, `credentials`, `routes`). `tls` loads the TLS
//! files, for validation and for the server alike.
//!
//! Every problem in a file is collected and reported together, each with its key path,
//! so one run of `azgate check` shows everything that needs fixing.

mod credentials;
mod error;
mod interpolate;
pub mod presets;
mod raw;
mod retry;
mod routes;
mod server;
mod single;
mod throttle;
pub mod tls;
mod units;
mod validate;
mod vend;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};
use rustls::pki_types::CertificateDer;

use crate::secret::Secret;

pub use credentials::read_client_certificate;
pub use error::{ConfigError, Problem};
pub use server::{exposed_admin, exposed_proxy};
pub use single::{CredentialSubset, parse_credential};
pub use throttle::ThrottleConfig;
pub use units::{parse_duration, parse_size};
pub use vend::VendRouteConfig;

/// The configuration used when no file is given: ARM through the `default` credential, so
/// that after `az login` a bare `azgate serve` serves `/arm`.
pub const EMBEDDED_DEFAULT: &str = r#"
[server]
listen = "127.0.0.1:8080"

[admin]
listen = "127.0.0.1:9090"

[credentials.default]
type = "default"
scope = "https://management.azure.com/.default"

[[routes]]
prefix = "/arm"
upstream = "https://management.azure.com"
credential = "default"
"#;

/// A validated configuration: what the proxy runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from, as shown in messages (a path or `<embedded default>`).
    pub file: String,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    /// Credentials by name.
    pub credentials: BTreeMap<String, CredentialConfig>,
    /// Forwarding routes in file order; the router picks the longest matching prefix.
    pub routes: Vec<RouteConfig>,
    /// Token vending routes (`vend`), in file order; matched with the forwarding routes.
    pub vend_routes: Vec<VendRouteConfig>,
    /// `[retry]`: the defaults routes start from.
    pub retry: RetryConfig,
    /// Things that work but probably not as meant (an allow-list of every address, no
    /// inbound control on purpose): `check` prints them, `serve` logs them at WARN.
    pub warnings: Vec<Problem>,
}

impl Config {
    /// Logs each warning at WARN (at start and after a reload).
    pub fn log_warnings(&self) {
        for warning in &self.warnings {
            tracing::warn!(config = %self.file, key = %warning.path, "config warning: {}", warning.message);
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address of the proxy listener. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Base URL used when rewriting upstream links; default: scheme + `Host` of the request.
    pub public_url: Option<Uri>,
    /// Allows a non-loopback listener without inbound access control.
    pub allow_unauthenticated: bool,
    /// How long in-flight requests may run after SIGTERM before the process exits.
    pub shutdown_grace: Duration,
    /// After SIGTERM, `/readyz` turns 503 at once but the listener keeps serving this
    /// long, so a load balancer can take azgate out of rotation first (default 0).
    pub drain_delay: Duration,
    /// A client must send its request line and headers within this time, counted from
    /// their first byte (slowloris); also bounds the TLS handshake and the wait for the
    /// first request on a new connection.
    pub header_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request (HTTP/1.1) or sit
    /// with no stream open (HTTP/2, closed with GOAWAY). Default 75 s.
    pub idle_timeout: Duration,
    /// Longest pause allowed while a client sends its request body.
    pub body_idle_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Length of the proxy listener's accept queue; `None` takes the system's
    /// `net.core.somaxconn` at start (the kernel caps any value at it anyway).
    pub backlog: Option<u32>,
    /// Largest request head (target plus header names and values) answered; a larger one
    /// gets 431 `headers_too_large` (default 64 KiB).
    pub max_header_bytes: usize,
    /// HTTPS on the proxy listener.
    pub tls: Option<TlsConfig>,
    pub inbound: InboundConfig,
}

/// `[server.tls]`: PEM files, re-read when they change and on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#1, SEC1 or PKCS#8).
    pub key: PathBuf,
    /// When set, clients must present a certificate chaining to one of these (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// `[server.inbound]`: who may use the proxy.
#[derive(Debug, Clone, Default)]
pub struct InboundConfig {
    /// Keys clients send in `x-azgate-key`; compared in constant time, never forwarded.
    pub api_keys: Vec<Secret>,
    /// Client address allow-list; empty allows every address.
    pub allow: Vec<ipnet::IpNet>,
    /// Direct peers whose `X-Forwarded-For` names the real client; empty trusts none.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Address of the admin listener; `None` when disabled with `listen = ""`.
    pub listen: Option<SocketAddr>,
    /// HTTPS for the admin endpoints (`[admin.tls]`, same keys as `[server.tls]`).
    pub tls: Option<TlsConfig>,
    /// Who may call the admin endpoints (`[admin.inbound]`, same keys as `[server.inbound]`).
    pub inbound: InboundConfig,
    /// The credentials whose failure (no valid token left) makes `/readyz` answer 503.
    /// `None` (the default): every credential a route uses; an empty list: none.
    pub ready_requires: Option<Vec<String>>,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter directive (`info`, `azgate=debug`); `RUST_LOG` overrides it.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

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

/// One `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Path prefix, without a trailing slash (except the catch-all `/`).
    pub prefix: String,
    /// Upstream base URL: scheme, authority and an optional base path.
    pub upstream: Uri,
    /// Name of the credential injected into requests; `None` forwards without one.
    pub credential: Option<String>,
    /// Remove the prefix before forwarding (default true).
    pub strip_prefix: bool,
    /// Methods allowed on this route; `None` allows every method.
    pub methods: Option<Vec<Method>>,
    /// Headers added to the upstream request when the client did not send them.
    pub set_headers: Vec<(HeaderName, HeaderValue)>,
    /// Time allowed until the upstream's response headers arrive; also the longest pause
    /// allowed between two chunks of the response body.
    pub timeout: Duration,
    /// Extra trusted roots for this upstream (a private CA), from `ca_file`.
    pub ca_roots: Option<CaRoots>,
    /// Retries on 429/504, `[retry]` overlaid by `[routes.retry]`.
    pub retry: RetryConfig,
    /// Largest request body accepted (default 4 GiB); larger ones get 413.
    pub max_body: u64,
    /// Let `%2F` and `%5C` through in paths (some APIs put encoded ids in the path).
    pub allow_encoded_slash: bool,
    /// When set, only these inbound keys may use the route.
    pub api_keys: Option<Vec<Secret>>,
    /// The preset the route was built from, if any (for `azgate check`).
    pub preset: Option<presets::Preset>,
    /// Query parameters added when the client did not send them (`api-version`).
    pub set_query: Vec<(String, String)>,
    /// Rewrite upstream URLs inside JSON response bodies (`nextLink` …), up to
    /// `rewrite_body_limit` bytes; larger bodies stream unchanged.
    pub rewrite_body_links: bool,
    pub rewrite_body_limit: u64,
    /// Send `X-Forwarded-For`/`-Proto`/`-Host` upstream (default true); false sends no
    /// forwarding headers at all. Clients' own are believed only from `trusted_proxies`.
    pub forwarded_headers: bool,
    /// Video Indexer routes: requests under `…/Videos/{id}/…` or `…/Projects/{id}/…` get
    /// a token scoped to that video or project instead of the account token.
    pub scoped_tokens: bool,
    /// `[routes.throttle]`: holds on the upstream's 429s.
    pub throttle: ThrottleConfig,
}

/// When and how a route retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Upstream statuses that are retried (default 429 and 504). 429 is retried for every
    /// method; the others only for idempotent methods unless `non_idempotent`.
    pub on: Vec<u16>,
    /// Attempts in all, the first included (default 4).
    pub max_attempts: u32,
    /// Longest wait between attempts; a longer server-requested wait is not waited out,
    /// the response goes back to the client at once (default 30 s).
    pub max_delay: Duration,
    /// Request bodies up to this size are kept for replay; larger ones stream once and
    /// are not retried (default 1 MiB). Held per request in flight.
    pub buffer: u64,
    /// Retry POST and PATCH on 504 and connection failures too (default false).
    pub non_idempotent: bool,
}

/// Certificates read from a route's `ca_file`.
#[derive(Clone)]
pub struct CaRoots {
    pub path: PathBuf,
    pub certs: Arc<Vec<CertificateDer<'static>>>,
}

impl std::fmt::Debug for CaRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CaRoots({}, {} certs)",
            self.path.display(),
            self.certs.len()
        )
    }
}

/// Where `serve` and `check` read their config from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Embedded,
}

impl ConfigSource {
    /// `-c FILE`, else `$AZGATE_CONFIG`, else `./proxy.toml` when present, else the
    /// embedded default.
    pub fn resolve(cli: Option<PathBuf>) -> Self {
        if let Some(path) = cli {
            return ConfigSource::File(path);
        }
        if let Some(path) = std::env::var_os("AZGATE_CONFIG").filter(|p| !p.is_empty()) {
            return ConfigSource::File(PathBuf::from(path));
        }
        let local = PathBuf::from("proxy.toml");
        if local.is_file() {
            return ConfigSource::File(local);
        }
        ConfigSource::Embedded
    }

    /// The name used in messages.
    pub fn display_name(&self) -> String {
        match self {
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::Embedded => "<embedded default>".to_string(),
        }
    }

    /// Reads and validates the config, with variables from the process environment.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        let (text, base_dir) = self.read()?;
        parse(&text, &self.display_name(), &base_dir, &env)
    }

    /// Reads and validates only the credential `name` and what it depends on, for
    /// `azgate token NAME`: problems elsewhere in the file do not stop it.
    pub fn load_credential(&self, name: &str) -> Result<CredentialSubset, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        let (text, base_dir) = self.read()?;
        parse_credential(&text, &self.display_name(), &base_dir, &env, name)
    }

    /// The config text and the directory relative paths in it start from.
    fn read(&self) -> Result<(String, PathBuf), ConfigError> {
        match self {
            ConfigSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    file: self.display_name(),
                    problems: vec![Problem {
                        path: String::new(),
                        message: format!("cannot read the config file: {e}"),
                    }],
                })?;
                let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
                Ok((text, base_dir))
            }
            ConfigSource::Embedded => Ok((EMBEDDED_DEFAULT.to_string(), PathBuf::from("."))),
        }
    }
}

/// Parses and validates config text. `file` names it in messages; relative paths in it
/// (such as `ca_file`) are resolved against `base_dir`; `env` supplies `${VAR}` values.
pub fn parse(
    text: &str,
    file: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut problems = error::Problems::default();
    let mut root = toml_document(text, file)?;
    interpolate::interpolate_tree(&mut root, "", env, &mut problems);
    let config = validate::validate(root, file, base_dir, &mut problems);
    match config {
        Some(mut config) if problems.is_empty() => {
            config.warnings = problems.take_warnings();
            Ok(config)
        }
        _ => Err(problems.into_error(file)),
    }
}

/// The TOML document, or the syntax error with its line and column.
fn toml_document(text: &str, file: &str) -> Result<toml::Value, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let mut problems = error::Problems::default();
        let at = e.span().map(|span| line_and_column(text, span.start));
        let message = e.message().trim_end();
        match at {
            Some((line, column)) => problems.push(
                "",
                format!("not valid TOML at line {line}, column {column}: {message}"),
            ),
            None => problems.push("", format!("not valid TOML: {message}")),
        }
        problems.into_error(file)
    })
}

/// 1-based line and column of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
