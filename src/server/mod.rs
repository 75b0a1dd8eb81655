//! Listeners and the connection lifecycle: bind, accept (TLS when configured, with
//! certificate rotation), serve HTTP/1.1 and HTTP/2 (ALPN, or h2c prior knowledge) with
//! hyper-util's auto builder, and drain on shutdown.

mod listener;
pub mod shutdown;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, Health};
use crate::config::Config;
use crate::env::Env;
use crate::gateway::Gateway;
use crate::proxy::Proxy;

use self::listener::ListenerSettings;
pub use self::tls::TlsError;
use self::tls::TlsTerminator;

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
    tls: Option<Arc<TlsTerminator>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting and starts draining in-flight requests.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Re-reads the `[server.tls]` files now (they are also polled every 2 s) and serves
    /// new handshakes with them. On error the previous certificate stays in use. Without
    /// TLS there is nothing to do.
    pub fn reload_tls(&self) -> Result<(), String> {
        match &self.tls {
            Some(tls) => tls.reload().map_err(|err| err.to_string()),
            None => Ok(()),
        }
    }

    /// Resolves when the server has drained (or the grace period ran out).
    pub async fn wait(self) {
        if let Err(err) = self.task.await {
            tracing::error!("server task failed: {err}");
        }
    }
}

/// Binds the listeners and starts serving in the background.
/// Credential sources read their variables from `env`.
pub async fn start(config: Config, env: Env) -> Result<RunningServer, StartError> {
    // Before binding, so a bad certificate never leaves a port open that cannot serve.
    let tls = match &config.server.tls {
        Some(files) => Some(Arc::new(TlsTerminator::load(files)?)),
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

    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %proxy_addr, "proxy listening on {scheme}://{proxy_addr}");
    if let Some(addr) = admin_addr {
        tracing::info!(%addr, "admin listening on http://{addr} (/healthz /readyz)");
    }

    let grace = config.server.shutdown_grace;
    let settings = ListenerSettings {
        tls: tls.clone(),
        header_timeout: config.server.header_timeout,
        max_connections: config.server.max_connections,
    };
    let gateway = Arc::new(ArcSwap::from_pointee(Gateway::build(config, &env)));
    let health = Arc::new(Health::default());
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(
        proxy_listener,
        admin_listener,
        Proxy::new(gateway.clone()),
        settings,
        health.clone(),
        grace,
        stopped,
    ));
    Ok(RunningServer {
        proxy_addr,
        admin_addr,
        gateway,
        health,
        tls,
        stop,
        task,
    })
}

async fn run(
    proxy_listener: TcpListener,
    admin_listener: Option<TcpListener>,
    proxy: Proxy,
    settings: ListenerSettings,
    health: Arc<Health>,
    grace: Duration,
    stopped: watch::Receiver<bool>,
) {
    let reloader = settings
        .tls
        .clone()
        .map(|tls| tokio::spawn(tls.watch_files(stopped.clone())));
    // The admin listener outlives the proxy's drain so /readyz can report it.
    let (admin_stop, admin_stopped) = watch::channel(false);
    let admin_task =
        admin_listener.map(|l| tokio::spawn(admin::serve(l, health.clone(), admin_stopped)));

    let connections = listener::accept_until(proxy_listener, proxy, settings, stopped).await;
    health.set_draining();
    if let Some(task) = reloader {
        // It ends with the accept loop: no new handshake will need a fresh certificate.
        let _ = task.await;
    }
    connections.drain(grace).await;

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
