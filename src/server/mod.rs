//! Listeners and the connection lifecycle: bind, accept (TLS when configured, with
//! certificate rotation), serve HTTP/1.1 and HTTP/2 (ALPN, or h2c prior knowledge) with
//! hyper, HTTP/1.1 connections parked between requests, and drain on shutdown. What is bound and which phase the
//! server is in live in `lifecycle`, which reload and shutdown both consult.

mod admin_listener;
mod connection;
mod deadlines;
pub mod failures;
mod http1;
pub mod lifecycle;
mod limits;
mod listener;
pub mod reload;
pub mod shutdown;
mod start;
mod tls;
mod woken;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use crate::admin::Health;
use crate::config::Config;
use crate::env::Env;
use crate::gateway::Gateway;
use crate::telemetry::Telemetry;

use self::lifecycle::{Lifecycle, Phase, ReloadRefused};
pub use self::start::start;
pub use crate::config::tls::{TlsError, TlsProblems};

/// A TLS terminator shared with the admin listener.
pub type TlsTerminatorHandle = Arc<TlsTerminator>;
pub use self::tls::TlsTerminator;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} for the {what}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up TLS on the proxy listener ([server.tls]): {0}")]
    Tls(#[from] TlsProblems),
    #[error("cannot set up TLS on the admin listener ([admin.tls]): {0}")]
    AdminTls(TlsProblems),
    #[error("cannot set up span export ([telemetry]): {0}")]
    Telemetry(String),
}

impl StartError {
    /// Whether the config is at fault (unusable TLS files), rather than the machine (a
    /// port taken): `serve` exits with the config status for these.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            StartError::Tls(_) | StartError::AdminTls(_) | StartError::Telemetry(_)
        )
    }
}

/// A started server. Dropping it does not stop it; call `shutdown` then `wait`.
pub struct RunningServer {
    /// Where the proxy listens (the real port when the config asked for port 0).
    pub proxy_addr: SocketAddr,
    /// Where the admin endpoints listen, when enabled.
    pub admin_addr: Option<SocketAddr>,
    /// The hot state, swapped whole on reload.
    pub gateway: Arc<ArcSwap<Gateway>>,
    pub health: Arc<Health>,
    pub telemetry: Arc<Telemetry>,
    env: Env,
    tls: Option<Arc<TlsTerminator>>,
    admin_tls: Option<Arc<TlsTerminator>>,
    lifecycle: Arc<Lifecycle>,
    task: JoinHandle<Drained>,
}

/// Stops a server whose `wait` is running elsewhere.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Lifecycle>);

impl ShutdownHandle {
    /// As `RunningServer::shutdown_now`.
    pub fn shutdown_now(&self) {
        self.0.hurry();
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Requests still in flight when the grace ran out (or a second signal came), cut.
    pub cut: i64,
}

impl RunningServer {
    /// Starts the drain: `/readyz` turns 503 at once and every connection is asked to go
    /// (`Connection: close`, GOAWAY) while new ones are still served for `drain_delay`;
    /// then the listener stops accepting, and in-flight requests get `shutdown_grace`.
    pub fn shutdown(&self) {
        self.lifecycle.advance(Phase::Draining);
    }

    /// Stops at once (a second SIGTERM or Ctrl-C): whatever is in flight is cut, each cut
    /// request logged; `wait` then returns promptly.
    pub fn shutdown_now(&self) {
        self.lifecycle.hurry();
    }

    /// A handle for `shutdown_now` while `wait` holds the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.lifecycle.clone())
    }

    /// Re-reads the `[server.tls]` and `[admin.tls]` files now (they are also polled
    /// every 2 s). On error the previous certificate stays in use.
    pub fn reload_tls(&self) -> Result<(), String> {
        for tls in [&self.tls, &self.admin_tls].into_iter().flatten() {
            tls.reload().map_err(|err| err.to_string())?;
        }
        Ok(())
    }

    /// Puts a new, already validated config in service: routes swap atomically (requests
    /// in flight finish on the config they started with) and credentials whose definition
    /// did not change keep their cached tokens. Settings that belong to the listeners
    /// cannot change without a restart; they are returned as warnings and keep their
    /// running values.
    ///
    /// Refused (counted as a failed reload; the running config stays) when the new config
    /// would leave a socket that stays bound without the inbound control the same config
    /// would need at start, e.g. `listen` moved to loopback (which needs a restart) and
    /// the keys removed while azgate still listens on 0.0.0.0.
    pub fn apply(&self, config: Config) -> Result<Vec<String>, ReloadRefused> {
        if let Err(refused) = self.lifecycle.check_reload(&config) {
            self.telemetry.record_reload(false);
            return Err(refused);
        }
        let current = self.gateway.load_full();
        let warnings = restart_needed(&current.config, &config);
        let next = Gateway::rebuild(config, &self.env, Some(&current));
        next.seed_metrics(&self.telemetry);
        self.gateway.store(Arc::new(next));
        self.telemetry.record_reload(true);
        Ok(warnings)
    }

    /// Resolves when the server has drained (or the grace period ran out, or
    /// `shutdown_now` cut it short).
    pub async fn wait(self) -> Drained {
        match self.task.await {
            Ok(drained) => drained,
            Err(err) => {
                tracing::error!("server task failed: {err}");
                Drained { cut: 0 }
            }
        }
    }
}

/// Listener settings whose change a reload cannot apply.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |changed: bool, what: &str| {
        if changed {
            out.push(format!("{what} changed; restart azgate to apply it"));
        }
    };
    check(old.server.listen != new.server.listen, "server.listen");
    check(old.server.tls != new.server.tls, "[server.tls] file paths");
    check(
        old.server.max_connections != new.server.max_connections,
        "server.max_connections",
    );
    check(
        old.server.header_timeout != new.server.header_timeout,
        "server.header_timeout",
    );
    check(
        old.server.idle_timeout != new.server.idle_timeout,
        "server.idle_timeout",
    );
    // The drain's timing is taken when the server starts.
    check(
        old.server.shutdown_grace != new.server.shutdown_grace,
        "server.shutdown_grace",
    );
    check(
        old.server.drain_delay != new.server.drain_delay,
        "server.drain_delay",
    );
    check(old.server.backlog != new.server.backlog, "server.backlog");
    // azgate's own check applies the new limit at once; hyper's parser limit (twice it)
    // was set when the listener started.
    check(
        old.server.max_header_bytes != new.server.max_header_bytes,
        "server.max_header_bytes (the HTTP parser's limit)",
    );
    check(old.admin.listen != new.admin.listen, "admin.listen");
    check(old.admin.tls != new.admin.tls, "[admin.tls] file paths");
    // The export pipeline is built when the server starts.
    check(old.telemetry != new.telemetry, "[telemetry]");
    check(
        old.log.format != new.log.format || old.log.level != new.log.level,
        "[log]",
    );
    out
}
