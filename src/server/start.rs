//! Starting a server and running it to the end: load TLS, bind the listeners and build the
//! hot state (`start`), then `run` owns every background task and drives the drain at
//! shutdown (readiness off, drain delay, close, grace).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpSocket};

use super::admin_listener::{self, AdminListener};
use super::failures::{self, FailureLog};
use super::lifecycle::{Bound, Lifecycle, Phase, reached};
use super::listener::{self, ListenerSettings};
use super::{Drained, RunningServer, StartError, TlsTerminator, limits};
use crate::admin::{AdminState, Health};
use crate::config::Config;
use crate::env::Env;
use crate::gateway::Gateway;
use crate::proxy::Proxy;
use crate::telemetry::Telemetry;
use crate::trace::{Settings as TraceSettings, Tracing};

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
    // Before binding too: an unusable OTEL_* variable is a config error.
    let trace_export = start_tracing(&config, &env, &telemetry)?;
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
    gateway.load().seed_metrics(&telemetry);
    let health = Arc::new(Health::default());
    let admin = AdminListener {
        listener: admin_listener,
        tls: admin_tls.clone(),
        state: Arc::new(AdminState {
            health: health.clone(),
            telemetry: telemetry.clone(),
            gateway: gateway.clone(),
        }),
    };
    let task = tokio::spawn(run(
        proxy_listener,
        Proxy::new(gateway.clone(), telemetry.clone(), trace_export.clone()),
        settings,
        admin,
        timing,
        lifecycle.clone(),
        trace_export,
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
    proxy: Proxy,
    settings: ListenerSettings,
    admin: AdminListener,
    timing: Timing,
    lifecycle: Arc<Lifecycle>,
    trace_export: Option<Arc<Tracing>>,
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
        admin.state.gateway.clone(),
        stopped.clone(),
    ));
    let admin_task = admin.listener.map(|l| {
        tokio::spawn(admin_listener::serve(
            l,
            admin.state.clone(),
            admin.tls.clone(),
            stopped.clone(),
        ))
    });

    let accepting = tokio::spawn(listener::accept_until(
        proxy_listener,
        proxy,
        settings,
        lifecycle.watch(),
    ));

    let mut phase = lifecycle.watch();
    reached(&mut phase, Phase::Draining).await;
    // Readiness first, so load balancers stop sending; keep serving meanwhile.
    admin.state.health.set_draining();
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
    // Last, so the spans of the requests that drained are exported too.
    if let Some(trace_export) = trace_export {
        trace_export.shutdown().await;
    }
    drained
}

/// The OTLP pipeline, when `[telemetry]` or the `OTEL_*` variables name an endpoint.
fn start_tracing(
    config: &Config,
    env: &Env,
    telemetry: &Arc<Telemetry>,
) -> Result<Option<Arc<Tracing>>, StartError> {
    let Some(settings) =
        TraceSettings::resolve(&config.telemetry, env).map_err(StartError::Telemetry)?
    else {
        return Ok(None);
    };
    for warning in &settings.warnings {
        tracing::warn!("telemetry: {warning}");
    }
    let started = Tracing::start(&settings, telemetry.clone()).map_err(StartError::Telemetry)?;
    tracing::info!("tracing: {}", settings.describe());
    Ok(Some(Arc::new(started)))
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
    listener::set_connection_options(socket2::SockRef::from(&socket)).map_err(error)?;
    socket.bind(addr).map_err(error)?;
    socket.listen(backlog).map_err(error)
}

fn local_addr(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `serve` sets no TCP option on Linux: each accepted connection has the listener's.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_connections_have_nodelay_and_keep_alive_from_the_listener() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), "proxy", 16).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let socket = socket2::SockRef::from(&accepted);
        assert!(socket.tcp_nodelay().unwrap());
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(60)
        );
    }
}
