//! `[server]`, `[server.tls]` and `[server.inbound]` -> `ServerConfig`, including the safe
//! default: a listener other than loopback needs an inbound control.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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
    let max_connections = match raw.max_connections {
        Some(0) => {
            problems.push("server.max_connections", "must be at least 1");
            DEFAULT_MAX_CONNECTIONS
        }
        Some(n) => n,
        None => DEFAULT_MAX_CONNECTIONS,
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
    } else if public && !inbound_broken {
        let allow_all = if allows_everything(&inbound.allow) {
            " ([server.inbound] allow admits every address, so it controls nothing)"
        } else {
            ""
        };
        problems.push(
            "server.listen",
            format!(
                "{listen} is reachable from other machines, and without inbound access control \
                 anyone who reaches it can use azgate's Azure credentials{allow_all}. Add one of \
                 [server.inbound] api_keys (clients send x-azgate-key), [server.inbound] allow \
                 (client CIDRs) or [server.tls] client_ca (mTLS); or set \
                 server.allow_unauthenticated = true if something in front of azgate already \
                 restricts access"
            ),
        );
    }
    ServerConfig {
        listen,
        public_url,
        allow_unauthenticated,
        shutdown_grace,
        drain_delay,
        header_timeout,
        body_idle_timeout,
        max_connections,
        tls,
        inbound,
    }
}

pub fn tls(
    raw: RawTls,
    section: &str,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<TlsConfig> {
    let cert = match raw.cert {
        Some(file) => {
            let path = base_dir.join(file);
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|pem| {
                    let certs = CertificateDer::pem_slice_iter(&pem)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| e.to_string())?;
                    if certs.is_empty() {
                        Err("no CERTIFICATE block".to_string())
                    } else {
                        Ok(())
                    }
                }) {
                Ok(()) => Some(path),
                Err(e) => {
                    problems.push(
                        join(section, "cert"),
                        format!("\"{}\": {e}", path.display()),
                    );
                    None
                }
            }
        }
        None => {
            problems.push(join(section, "cert"), "missing key (PEM certificate chain)");
            None
        }
    };
    let key = match raw.key {
        Some(file) => {
            let path = base_dir.join(file);
            match std::fs::read(&path) {
                Ok(pem) if PrivateKeyDer::from_pem_slice(&pem).is_ok() => Some(path),
                Ok(_) => {
                    problems.push(
                        join(section, "key"),
                        format!(
                            "\"{}\" holds no PKCS#1, SEC1 or PKCS#8 private key",
                            path.display()
                        ),
                    );
                    None
                }
                Err(e) => {
                    problems.push(
                        join(section, "key"),
                        format!("cannot read \"{}\": {e}", path.display()),
                    );
                    None
                }
            }
        }
        None => {
            problems.push(join(section, "key"), "missing key (PEM private key)");
            None
        }
    };
    let client_ca = raw.client_ca.and_then(|file| {
        let path = base_dir.join(file);
        match std::fs::read(&path).map(|pem| {
            CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .count()
        }) {
            Ok(n) if n > 0 => Some(path),
            Ok(_) => {
                problems.push(
                    join(section, "client_ca"),
                    format!("\"{}\" holds no CERTIFICATE block", path.display()),
                );
                None
            }
            Err(e) => {
                problems.push(
                    join(section, "client_ca"),
                    format!("cannot read \"{}\": {e}", path.display()),
                );
                None
            }
        }
    });
    Some(TlsConfig {
        cert: cert?,
        key: key?,
        client_ca,
    })
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
