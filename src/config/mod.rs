//! Configuration: TOML text -> `${VAR}` interpolation -> raw serde model (`raw`) ->
//! validated, typed `Config` (`validate`, `credentials`, `routes`). `tls` loads the TLS
//! files, for validation and for the server alike.
//!
//! Every problem in a file is collected and reported together, each with its key path,
//! so one run of `azgate check` shows everything that needs fixing.

mod credential_types;
mod credentials;
mod error;
mod interpolate;
mod load;
pub mod presets;
mod raw;
mod retry;
mod routes;
mod server;
mod single;
mod telemetry;
mod throttle;
pub mod tls;
mod units;
mod validate;
mod vend;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};
use rustls::pki_types::CertificateDer;

use crate::secret::Secret;

pub use credential_types::*;
pub use credentials::read_client_certificate;
pub use error::{ConfigError, Problem};
pub use load::{ConfigSource, parse};
pub use server::{exposed_admin, exposed_proxy};
pub use single::{CredentialSubset, parse_credential};
pub use telemetry::{TelemetryConfig, endpoint as otlp_endpoint};
pub use throttle::{Pace, ThrottleConfig};
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
    /// `[telemetry]`: OTLP span export; unset keys fall back to `OTEL_*` at start.
    pub telemetry: TelemetryConfig,
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
