//! azgate: an authenticating reverse proxy for Azure REST APIs.
//!
//! One request takes one straight path:
//!
//! ```text
//! accept -> inbound check -> route -> prepare upstream request (strip, inject credential)
//!        -> send with retry -> rewrite response -> log + metrics
//! ```
//!
//! - [`server`]: listeners, HTTP/1.1 + HTTP/2, graceful drain (accept).
//! - [`proxy`]: the request path itself, one module per phase.
//! - [`credentials`]: what gets injected, and the caches behind it.
//! - [`config`]: the TOML file, validated into typed config with every problem reported.
//! - [`gateway`]: the hot state built from a config, swapped whole on reload.
//! - [`admin`]: health and readiness endpoints.
//! - [`trace`]: W3C trace context and the spans exported over OTLP.
//! - [`cli`], [`logging`]: the binary's surface.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod env;
pub mod gateway;
pub mod logging;
pub mod proxy;
pub mod secret;
pub mod server;
pub mod telemetry;
pub mod trace;

/// Installs aws-lc-rs as the process-wide rustls crypto provider. Call once at start;
/// later calls are harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
