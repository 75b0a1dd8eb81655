//! Listeners and the connection lifecycle: bind, accept (TLS when configured, with
//! certificate rotation), serve HTTP/1.1 and HTTP/2 (ALPN, or h2c prior knowledge) with
//! hyper-util's auto builder, and drain on shutdown.

mod listener;
pub mod reload;
pub mod shutdown;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState, Health};
use crate::config::Config;
use crate::env::Env;
use crate::gateway::Gateway;
use crate::proxy::Proxy;
use crate::proxy::inbound::access::AccessPolicy;
use crate::telemetry::Telemetry;

use self::listener::ListenerSettings;
pub use self::tls::TlsError;

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
    Tls(#[from] TlsError),
    #[error("cannot set up TLS on the admin listener ([admin.tls]): {0}")]
    AdminTls(TlsError),
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
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// Starts the drain: `/readyz` turns 503 at once; after `drain_delay` the listener
    /// stops accepting, and in-flight requests get `shutdown_grace` to finish.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
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
    pub fn apply(&self, config: Config) -> Vec<String> {
        let current = self.gateway.load_full();
        let warnings = restart_needed(&current.config, &config);
        let next = Gateway::rebuild(config, &self.env, Some(&current));
        self.telemetry.seed(&next);
        self.gateway.store(Arc::new(next));
        self.telemetry.record_reload(true);
        warnings
    }

    /// Resolves when the server has drained (or the grace period ran out).
    pub async fn wait(self) {
        if let Err(err) = self.task.await {
            tracing::error!("server task failed: {err}");
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
    // Before binding, so a bad certificate never leaves a port open that cannot serve.
    let tls = match &config.server.tls {
        Some(files) => Some(Arc::new(TlsTerminator::load(files)?)),
        None => None,
    };
    let admin_tls = match &config.admin.tls {
        Some(files) => Some(Arc::new(
            TlsTerminator::load(files).map_err(StartError::AdminTls)?,
        )),
        None => None,
    };
    let proxy_listener = bind(config.server.listen, "proxy").await?;
    let proxy_addr = local_addr(&proxy_listener, config.server.listen);
    let admin_listener = match config.admin.listen {
        Some(addr) => Some(bind(addr, "admin endpoints").await?),
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

    let telemetry = Telemetry::new();
    let timing = Timing {
        grace: config.server.shutdown_grace,
        drain_delay: config.server.drain_delay,
    };
    let settings = ListenerSettings {
        tls: tls.clone(),
        header_timeout: config.server.header_timeout,
        max_connections: config.server.max_connections,
        telemetry: telemetry.clone(),
    };
    let admin_access = AccessPolicy::new(&config.admin.inbound);
    let gateway = Arc::new(ArcSwap::from_pointee(Gateway::build(config, &env)));
    telemetry.attach(gateway.clone());
    telemetry.seed(&gateway.load());
    let health = Arc::new(Health::default());
    let admin_state = Arc::new(AdminState {
        health: health.clone(),
        telemetry: telemetry.clone(),
        gateway: gateway.clone(),
        access: admin_access,
        tls: admin_tls.clone(),
    });
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(
        proxy_listener,
        admin_listener,
        Proxy::new(gateway.clone(), telemetry.clone()),
        settings,
        admin_state,
        timing,
        stopped,
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
        stop,
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
    mut stopped: watch::Receiver<bool>,
) {
    let watchers: Vec<_> = [settings.tls.clone(), admin.tls.clone()]
        .into_iter()
        .flatten()
        .map(|tls| tokio::spawn(tls.watch_files(stopped.clone())))
        .collect();
    // The admin listener outlives the proxy's drain so /readyz can report it.
    let (admin_stop, admin_stopped) = watch::channel(false);
    let admin_task =
        admin_listener.map(|l| tokio::spawn(admin::serve(l, admin.clone(), admin_stopped)));

    let (accept_stop, accept_stopped) = watch::channel(false);
    let accepting = tokio::spawn(listener::accept_until(
        proxy_listener,
        proxy,
        settings,
        accept_stopped,
    ));

    admin::stopped(&mut stopped).await;
    // Readiness first, so load balancers stop sending; keep serving meanwhile.
    admin.health.set_draining();
    if !timing.drain_delay.is_zero() {
        tracing::info!(
            "draining: /readyz answers 503; still serving for {}",
            humantime::format_duration(timing.drain_delay)
        );
        tokio::time::sleep(timing.drain_delay).await;
    }
    accept_stop.send_replace(true);
    match accepting.await {
        Ok(connections) => connections.drain(timing.grace).await,
        Err(err) => tracing::error!("the accept loop failed: {err}"),
    }
    for watcher in watchers {
        let _ = watcher.await;
    }
    admin_stop.send_replace(true);
    if let Some(task) = admin_task {
        let _ = task.await;
    }
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

fn local_addr(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}
