//! `[server]`, `[server.tls]` and `[server.inbound]` -> `ServerConfig`, including the safe
//! default: a listener other than loopback needs an inbound control.

mod inbound;
mod listeners;
mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::error::{Problems, join};
use super::raw::{self, RawServer};
use super::{ServerConfig, units};

pub use inbound::{RawInbound, inbound};
pub use listeners::{controlled, exposed_admin, exposed_proxy, listeners_collide};
pub use tls::{RawTls, tls};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Longer than the 60 s idle timeout common in client pools and load balancers, so the
/// client side closes an idle connection first and never sends into one azgate is closing
/// (nginx's `keepalive_timeout` default, for the same reason).
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// The kernel caps a listen backlog at `net.core.somaxconn` (65535 at most on Linux).
const MAX_BACKLOG: u32 = 65_535;
const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Bounds for `server.max_header_bytes`: below 1 KiB ordinary requests fail; above 1 MiB
/// every connection could hold megabytes for its request head.
const MAX_HEADER_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1024..=1024 * 1024;

pub fn validate(raw: RawServer, base_dir: &Path, problems: &mut Problems) -> ServerConfig {
    let listen = socket_addr(
        raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
        "server.listen",
        problems,
    )
    .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
    let public_url = raw.public_url.and_then(|text| {
        public_url(&text)
            .map_err(|m| problems.push("server.public_url", m))
            .ok()
    });
    let mut duration = |value: Option<String>, key: &str, default: Duration| match value {
        Some(text) => match units::parse_duration(&text) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                problems.push(join("server", key), "must be greater than zero");
                default
            }
            Err(m) => {
                problems.push(join("server", key), m);
                default
            }
        },
        None => default,
    };
    let shutdown_grace = duration(raw.shutdown_grace, "shutdown_grace", DEFAULT_SHUTDOWN_GRACE);
    let header_timeout = duration(raw.header_timeout, "header_timeout", DEFAULT_HEADER_TIMEOUT);
    let body_idle_timeout = duration(
        raw.body_idle_timeout,
        "body_idle_timeout",
        DEFAULT_BODY_IDLE_TIMEOUT,
    );
    let idle_timeout = duration(raw.idle_timeout, "idle_timeout", DEFAULT_IDLE_TIMEOUT);
    let backlog = match raw.backlog {
        Some(n) if n == 0 || n > MAX_BACKLOG => {
            problems.push(
                "server.backlog",
                format!("must be between 1 and {MAX_BACKLOG}"),
            );
            None
        }
        other => other,
    };
    let max_connections = match raw.max_connections {
        Some(0) => {
            problems.push("server.max_connections", "must be at least 1");
            DEFAULT_MAX_CONNECTIONS
        }
        Some(n) => n,
        None => DEFAULT_MAX_CONNECTIONS,
    };
    let max_header_bytes = match raw.max_header_bytes.as_deref().map(units::parse_size) {
        None => DEFAULT_MAX_HEADER_BYTES,
        Some(Ok(n)) if MAX_HEADER_BYTES_RANGE.contains(&n) => n as usize,
        Some(Ok(_)) => {
            problems.push("server.max_header_bytes", "must be between 1KiB and 1MiB");
            DEFAULT_MAX_HEADER_BYTES
        }
        Some(Err(m)) => {
            problems.push("server.max_header_bytes", m);
            DEFAULT_MAX_HEADER_BYTES
        }
    };
    let tls = raw
        .tls
        .and_then(|table| raw::section::<RawTls>(toml::Value::Table(table), "server.tls", problems))
        .and_then(|t| tls(t, "server.tls", base_dir, problems));
    let before = problems.len();
    let inbound = raw
        .inbound
        .and_then(|table| {
            raw::section::<RawInbound>(toml::Value::Table(table), "server.inbound", problems)
        })
        .map(|i| inbound(i, "server.inbound", problems))
        .unwrap_or_default();
    // A control that was written but is broken is reported where it is written; the
    // listener is not reported again as uncontrolled.
    let inbound_broken = problems.len() > before;
    let allow_unauthenticated = raw.allow_unauthenticated.unwrap_or(false);
    let drain_delay = match raw.drain_delay {
        Some(text) => units::parse_duration(&text).unwrap_or_else(|m| {
            problems.push("server.drain_delay", m);
            Duration::ZERO
        }),
        None => Duration::ZERO,
    };

    let public = !listen.ip().is_loopback() && !controlled(&inbound, tls.as_ref());
    if public && allow_unauthenticated {
        problems.warn(
            "server.allow_unauthenticated",
            format!(
                "{listen} has no inbound access control: anyone who reaches it can use azgate's \
                 Azure credentials; something in front of azgate must restrict access"
            ),
        );
    } else if !inbound_broken
        && let Some(problem) = exposed_proxy(listen, &inbound, tls.as_ref(), allow_unauthenticated)
    {
        problems.push("server.listen", problem);
    }
    ServerConfig {
        listen,
        public_url,
        allow_unauthenticated,
        shutdown_grace,
        drain_delay,
        header_timeout,
        idle_timeout,
        body_idle_timeout,
        max_connections,
        backlog,
        max_header_bytes,
        tls,
        inbound,
    }
}

pub fn socket_addr(text: &str, path: &str, problems: &mut Problems) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.push(
                path,
                format!(
                    "invalid address \"{text}\"; write IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\""
                ),
            );
            None
        }
    }
}

fn public_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("invalid URL \"{text}\": {e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) if uri.query().is_none() => Ok(uri),
        _ => Err(format!(
            "invalid URL \"{text}\"; write an absolute http(s) URL such as \"https://gw.contoso.com\""
        )),
    }
}
