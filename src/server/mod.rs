//! Listeners and the connection lifecycle: bind, accept (TLS when configured, with
//! certificate rotation), serve HTTP/1.1 and HTTP/2 (ALPN, or h2c prior knowledge) with
//! hyper-util's auto builder, and drain on shutdown. What is bound and which phase the
//! server is in live in `lifecycle`, which reload and shutdown both consult.

mod connection;
mod deadlines;
pub mod failures;
pub mod lifecycle;
mod limits;
mod listener;
pub mod reload;
pub mod shutdown;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState, Health};
use crate::config::Config;
use crate::env::Env;
use crate::gateway::Gateway;
use crate::proxy::Proxy;
use crate::telemetry::Telemetry;

use self::failures::FailureLog;
use self::lifecycle::{Bound, Lifecycle, Phase, ReloadRefused, reached};
use self::listener::ListenerSettings;
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
}

impl StartError {
    /// Whether the config is at fault (unusable TLS files), rather than the machine (a
    /// port taken): `serve` exits with the config status for these.
    pub fn is_config(&self) -> bool {
        matches!(self, StartError::Tls(_) | StartError::AdminTls(_))
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
        self.telemetry.seed(&next);
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
    check(old.server.backlog != new.server.backlog, "server.backlog");
    // azgate's own check applies the new limit at once; hyper's parser limit (twice it)
    // was set when the listener started.
    check(
        old.server.max_header_bytes != new.server.max_header_bytes,
        "server.max_header_bytes (the HTTP parser's limit)",
    );
    check(old.admin.listen != new.admin.listen, "admin.listen");
    check(old.admin.tls != new.admin.tls, "[admin.tls] file paths");
    check(
        old.log.format != new.log.format || old.log.level != new.log.level,
        "[log]",
    );
    out
}

/// Binds the listeners and starts serving in the background.
/// Credential sources read their variables from `env`.
pub async fn start(config: Config, env: Env) -> Result<RunningServer, StartError> {
    config.log_warnings();
    let telemetry = Telemetry::new();
    // Before binding, so a bad certificate never leaves a port open that cannot serve.
    let tls = match &config.server.tls {
        Some(files) => Some(Arc::new(TlsTerminator::load(
            files,
            "proxy",
            telemetry.clone(),
        )?)),
        None => None,
    };
    let admin_tls = match &config.admin.tls {
        Some(files) => Some(Arc::new(
            TlsTerminator::load(files, "admin", telemetry.clone()).map_err(StartError::AdminTls)?,
        )),
        None => None,
    };
    limits::raise_open_files(config.server.max_connections);
    let backlog = config.server.backlog.unwrap_or_else(limits::somaxconn);
    let proxy_listener = bind(config.server.listen, "proxy", backlog)?;
    let proxy_addr = local_addr(&proxy_listener, config.server.listen);
    let admin_listener = match config.admin.listen {
        Some(addr) => Some(bind(addr, "admin endpoints", ADMIN_BACKLOG)?),
        None => None,
    };
    let admin_addr = admin_listener
        .as_ref()
        .zip(config.admin.listen)
        .map(|(l, configured)| local_addr(l, configured));

    let scheme = |tls: &Option<Arc<TlsTerminator>>| if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %proxy_addr, "proxy listening on {}://{proxy_addr}", scheme(&tls));
    if let Some(addr) = admin_addr {
        tracing::info!(
            %addr,
            "admin listening on {}://{addr} (/healthz /readyz /metrics /status)",
            scheme(&admin_tls)
        );
    }

    let lifecycle = Arc::new(Lifecycle::new(
        Bound {
            addr: proxy_addr,
            tls: config.server.tls.clone(),
        },
        admin_addr.map(|addr| Bound {
            addr,
            tls: config.admin.tls.clone(),
        }),
    ));
    let timing = Timing {
        grace: config.server.shutdown_grace,
        drain_delay: config.server.drain_delay,
    };
    let settings = ListenerSettings {
        tls: tls.clone(),
        header_timeout: config.server.header_timeout,
        idle_timeout: config.server.idle_timeout,
        max_connections: config.server.max_connections,
        max_header_bytes: config.server.max_header_bytes,
        telemetry: telemetry.clone(),
        refused_heads: Arc::new(FailureLog::new(
            "request heads over the HTTP parser's limit (answered 431)",
            "proxy",
        )),
    };
    let gateway = Arc::new(ArcSwap::from_pointee(Gateway::build(config, &env)));
    telemetry.attach(gateway.clone());
    telemetry.seed(&gateway.load());
    let health = Arc::new(Health::default());
    let admin_state = Arc::new(AdminState {
        health: health.clone(),
        telemetry: telemetry.clone(),
        gateway: gateway.clone(),
        tls: admin_tls.clone(),
    });
    let task = tokio::spawn(run(
        proxy_listener,
        admin_listener,
        Proxy::new(gateway.clone(), telemetry.clone()),
        settings,
        admin_state,
        timing,
        lifecycle.clone(),
    ));
    Ok(RunningServer {
        proxy_addr,
        admin_addr,
        gateway,
        health,
        telemetry,
        env,
        tls,
        admin_tls,
        lifecycle,
        task,
    })
}

struct Timing {
    grace: Duration,
    drain_delay: Duration,
}

async fn run(
    proxy_listener: TcpListener,
    admin_listener: Option<TcpListener>,
    proxy: Proxy,
    settings: ListenerSettings,
    admin: Arc<AdminState>,
    timing: Timing,
    lifecycle: Arc<Lifecycle>,
) -> Drained {
    // The file watchers and the admin listener stop on a channel of their own: the admin
    // listener outlives the proxy's drain so /readyz can report it.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let watchers: Vec<_> = [settings.tls.clone(), admin.tls.clone()]
        .into_iter()
        .flatten()
        .map(|tls| tokio::spawn(tls.watch_files(stopped.clone())))
        .collect();
    let failure_logs = [settings.tls.as_ref(), admin.tls.as_ref()]
        .into_iter()
        .flatten()
        .map(|tls| tls.handshake_failures())
        .chain([settings.refused_heads.clone()])
        .collect();
    let failure_reports = tokio::spawn(failures::report_until(failure_logs, stopped.clone()));
    // Credential retries and refreshes while no request comes; stops when the drain starts.
    let refresher = tokio::spawn(crate::credentials::refresher::run(
        admin.gateway.clone(),
        stopped.clone(),
    ));
    let admin_task =
        admin_listener.map(|l| tokio::spawn(admin::serve(l, admin.clone(), stopped.clone())));

    let accepting = tokio::spawn(listener::accept_until(
        proxy_listener,
        proxy,
        settings,
        lifecycle.watch(),
    ));

    let mut phase = lifecycle.watch();
    reached(&mut phase, Phase::Draining).await;
    // Readiness first, so load balancers stop sending; keep serving meanwhile.
    admin.health.set_draining();
    if !timing.drain_delay.is_zero() {
        tracing::info!(
            "draining: /readyz answers 503, connections are asked to reconnect elsewhere; \
             still accepting for {}",
            humantime::format_duration(timing.drain_delay)
        );
        tokio::select! {
            () = tokio::time::sleep(timing.drain_delay) => {}
            () = lifecycle.hurried() => {}
        }
    }
    lifecycle.advance(Phase::Closing);
    let drained = match accepting.await {
        Ok(connections) => Drained {
            cut: connections.drain(timing.grace, &lifecycle).await,
        },
        Err(err) => {
            tracing::error!("the accept loop failed: {err}");
            Drained { cut: 0 }
        }
    };
    stop.send_replace(true);
    for watcher in watchers {
        let _ = watcher.await;
    }
    let _ = failure_reports.await;
    let _ = refresher.await;
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    drained
}

/// Probes and scrapes only: a short queue is plenty.
const ADMIN_BACKLOG: u32 = 128;

/// Binds with an explicit backlog (tokio's `bind` fixes it at 128, which a burst of new
/// clients at `max_connections` overflows into SYN retries).
fn bind(addr: SocketAddr, what: &'static str, backlog: u32) -> Result<TcpListener, StartError> {
    let error = |source| StartError::Bind { what, addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(error)?;
    // As std and tokio do: a restarted azgate can bind while old connections sit in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true).map_err(error)?;
    socket.bind(addr).map_err(error)?;
    socket.listen(backlog).map_err(error)
}

fn local_addr(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}
