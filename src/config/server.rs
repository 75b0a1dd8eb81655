//! `[server]`, `[server.tls]` and `[server.inbound]` -> `ServerConfig`, including the safe
//! default: a listener other than loopback needs an inbound control.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::Deserialize;

use super::error::{Problems, join};
use super::raw::{self, RawServer};
use super::{InboundConfig, ServerConfig, TlsConfig, units};
use crate::secret::Secret;

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

/// `[server.tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
}

/// `[server.inbound]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawInbound {
    pub api_keys: Option<Vec<String>>,
    pub allow: Option<Vec<String>>,
    pub trusted_proxies: Option<Vec<String>>,
}

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

/// The safe-bind rule of the proxy listener: an address reachable from other machines
/// needs an inbound control, unless `allow_unauthenticated` says something in front
/// restricts access. Checked at start against the configured address and on reload
/// against the address actually bound. Returns the problem, if any.
pub fn exposed_proxy(
    listen: SocketAddr,
    inbound: &InboundConfig,
    tls: Option<&TlsConfig>,
    allow_unauthenticated: bool,
) -> Option<String> {
    (!listen.ip().is_loopback() && !controlled(inbound, tls) && !allow_unauthenticated).then(|| {
        let allow_all = if allows_everything(&inbound.allow) {
            " ([server.inbound] allow admits every address, so it controls nothing)"
        } else {
            ""
        };
        format!(
            "{listen} is reachable from other machines, and without inbound access control \
             anyone who reaches it can use azgate's Azure credentials{allow_all}. Add one of \
             [server.inbound] api_keys (clients send x-azgate-key), [server.inbound] allow \
             (client CIDRs) or [server.tls] client_ca (mTLS); or set \
             server.allow_unauthenticated = true if something in front of azgate already \
             restricts access"
        )
    })
}

/// The same rule for the admin listener. The admin endpoints never proxy, but the status
/// page shows routes and recent request paths. An allow-list of every address still counts
/// here (with its warning): the admin listener has no `allow_unauthenticated`, and probes
/// from changing node addresses may need it.
pub fn exposed_admin(
    listen: SocketAddr,
    inbound: &InboundConfig,
    tls: Option<&TlsConfig>,
) -> Option<String> {
    let controlled = controlled(inbound, tls) || !inbound.allow.is_empty();
    (!listen.ip().is_loopback() && !controlled).then(|| {
        format!(
            "{listen} is reachable from other machines; protect the admin endpoints with \
             [admin.inbound] api_keys or allow, or [admin.tls] client_ca, or keep them on loopback"
        )
    })
}

/// Whether two listen addresses would take the same socket: the same port (port 0 asks
/// for a fresh one, so it never collides) and overlapping addresses. An unspecified address
/// overlaps every address of its family, and `[::]` also the IPv4 ones, because Linux binds
/// it dual-stack by default.
pub fn listeners_collide(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let (x, y) = (a.ip().to_canonical(), b.ip().to_canonical());
    let covers = |wide: std::net::IpAddr, other: std::net::IpAddr| {
        wide.is_unspecified() && (wide.is_ipv6() || other.is_ipv4())
    };
    x == y || covers(x, y) || covers(y, x)
}

/// `[server.tls]` or `[admin.tls]`: the file paths, and the files loaded exactly as the
/// server loads them (`config::tls`), so a problem `serve` would meet is reported here.
pub fn tls(
    raw: RawTls,
    section: &str,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<TlsConfig> {
    let mut path = |file: Option<String>, key: &str, what: &str| match file {
        Some(file) => Some(base_dir.join(file)),
        None => {
            problems.push(join(section, key), format!("missing key ({what})"));
            None
        }
    };
    let cert = path(raw.cert, "cert", "PEM certificate chain");
    let key = path(raw.key, "key", "PEM private key");
    let files = TlsConfig {
        cert: cert?,
        key: key?,
        client_ca: raw.client_ca.map(|file| base_dir.join(file)),
    };
    let now = SystemTime::now();
    match super::tls::load(&files, now) {
        Ok(material) => {
            let validity = &material.validity;
            if let Ok(left) = validity.not_after.duration_since(now)
                && left <= super::tls::EXPIRY_WARNING
            {
                problems.warn(
                    join(section, "cert"),
                    format!(
                        "the certificate \"{}\" expires in {} (at {}): replace it",
                        validity.subject,
                        humantime::format_duration(Duration::from_secs(
                            left.as_secs() / 3600 * 3600
                        )),
                        super::tls::rfc3339(validity.not_after)
                    ),
                );
            }
        }
        Err(found) => {
            for err in found.0 {
                problems.push(join(section, err.key()), err.to_string());
            }
        }
    }
    // The paths stand even when the files do not: the problems above fail the config,
    // and the listener checks below still see that TLS (and mTLS) was asked for.
    Some(files)
}

pub fn inbound(raw: RawInbound, section: &str, problems: &mut Problems) -> InboundConfig {
    let mut api_keys = Vec::new();
    for (i, key) in raw.api_keys.unwrap_or_default().into_iter().enumerate() {
        let path = format!("{}[{i}]", join(section, "api_keys"));
        if key.trim().is_empty() {
            problems.push(path, "is empty");
        } else if key.trim().len() < 16 {
            problems.push(
                path,
                "too short: use at least 16 random characters (value not shown)",
            );
        } else {
            api_keys.push(Secret::new(key));
        }
    }
    let allow_path = join(section, "allow");
    let allow = cidrs(raw.allow.unwrap_or_default(), &allow_path, problems);
    for (i, net) in allow.iter().enumerate() {
        if net.prefix_len() == 0 {
            problems.warn(
                format!("{allow_path}[{i}]"),
                format!(
                    "\"{net}\" admits every {} address: this allow-list restricts nothing",
                    family(net)
                ),
            );
        }
    }
    let trusted_path = join(section, "trusted_proxies");
    let trusted_proxies = cidrs(
        raw.trusted_proxies.unwrap_or_default(),
        &trusted_path,
        problems,
    );
    for (i, net) in trusted_proxies.iter().enumerate() {
        if net.prefix_len() == 0 {
            problems.warn(
                format!("{trusted_path}[{i}]"),
                format!(
                    "\"{net}\" trusts every {} peer as a proxy: any client can name its own \
                     address in X-Forwarded-For and pass the allow-list; list only the \
                     addresses of your proxies",
                    family(net)
                ),
            );
        }
    }
    InboundConfig {
        api_keys,
        allow,
        trusted_proxies,
    }
}

fn family(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "IPv4",
        IpNet::V6(_) => "IPv6",
    }
}

/// An allow-list with a `/0` entry admits every client of that address family.
fn allows_everything(allow: &[IpNet]) -> bool {
    allow.iter().any(|net| net.prefix_len() == 0)
}

/// Whether a listener has an inbound control: keys, an address allow-list that excludes
/// someone, or mTLS.
pub fn controlled(inbound: &InboundConfig, tls: Option<&TlsConfig>) -> bool {
    !inbound.api_keys.is_empty()
        || (!inbound.allow.is_empty() && !allows_everything(&inbound.allow))
        || tls.is_some_and(|t| t.client_ca.is_some())
}

/// CIDRs, or bare addresses (a /32 or /128).
pub fn cidrs(list: Vec<String>, path: &str, problems: &mut Problems) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, text) in list.iter().enumerate() {
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => out.push(net.trunc()),
            Err(_) => problems.push(
                format!("{path}[{i}]"),
                format!("\"{text}\" is not a CIDR such as \"10.0.0.0/8\" or \"fd00::/8\""),
            ),
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::listeners_collide;

    #[test]
    fn listeners_collide_on_the_same_port_and_overlapping_addresses() {
        let cases = [
            ("127.0.0.1:8080", "127.0.0.1:8080", true),
            ("0.0.0.0:8080", "127.0.0.1:8080", true),
            ("127.0.0.1:8080", "0.0.0.0:8080", true),
            ("[::]:8080", "127.0.0.1:8080", true),
            ("[::]:8080", "[::1]:8080", true),
            ("[::ffff:127.0.0.1]:8080", "127.0.0.1:8080", true),
            ("0.0.0.0:8080", "[::1]:8080", false),
            ("127.0.0.1:8080", "127.0.0.2:8080", false),
            ("127.0.0.1:8080", "127.0.0.1:9090", false),
            ("127.0.0.1:0", "127.0.0.1:0", false),
            ("0.0.0.0:0", "0.0.0.0:0", false),
        ];
        for (a, b, want) in cases {
            let (a, b) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(listeners_collide(a, b), want, "{a} vs {b}");
        }
    }
}
