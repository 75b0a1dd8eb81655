//! Raw model -> typed `Config`: the top level, `[server]`, `[admin]` and `[log]`.
//! Credentials and routes have their own files. Every check records a problem and goes on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use super::error::Problems;
use super::raw::{self, RawAdmin, RawLog, RawServer, RawTelemetry};
use super::{
    AdminConfig, Config, LogConfig, LogFormat, RetryConfig, credentials, presets, retry, routes,
    server, telemetry,
};

const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

/// The tables a config file may have.
const TOP_LEVEL: &[&str] = &[
    "server",
    "admin",
    "log",
    "telemetry",
    "retry",
    "credentials",
    "routes",
];

/// Validates the whole (already interpolated) document. Returns `None` only when nothing
/// usable could be built; callers also check `problems`.
pub fn validate(
    root: toml::Value,
    file: &str,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<Config> {
    let toml::Value::Table(table) = root else {
        problems.push("", "the config must be a TOML table");
        return None;
    };
    let mut server = RawServer::default();
    let mut admin = RawAdmin::default();
    let mut log = RawLog::default();
    let mut raw_telemetry = RawTelemetry::default();
    let mut credential_tables = toml::Table::new();
    let mut route_values = Vec::new();
    let mut raw_retry = retry::RawRetry::default();
    for (key, value) in table {
        match key.as_str() {
            "server" => server = raw::section(value, "server", problems).unwrap_or_default(),
            "admin" => admin = raw::section(value, "admin", problems).unwrap_or_default(),
            "log" => log = raw::section(value, "log", problems).unwrap_or_default(),
            "telemetry" => {
                raw_telemetry = raw::section(value, "telemetry", problems).unwrap_or_default();
            }
            "credentials" => match value {
                toml::Value::Table(t) => credential_tables = t,
                _ => problems.push(
                    "credentials",
                    "must be a table of [credentials.NAME] tables",
                ),
            },
            "retry" => raw_retry = raw::section(value, "retry", problems).unwrap_or_default(),
            "routes" => match value {
                toml::Value::Array(items) => route_values = items,
                _ => problems.push("routes", "must be an array of [[routes]] tables"),
            },
            _ => problems.unknown_key("", &key, TOP_LEVEL),
        }
    }

    let server = server::validate(server, base_dir, problems);
    let ready_requires = admin.ready_requires.take();
    let log = validate_log(log, problems);
    let telemetry = telemetry::validate(raw_telemetry, problems);
    // Routes may name any declared credential, valid or not: a broken credential is
    // reported once, at its own path, not again at every route that uses it.
    let declared: Vec<String> = credential_tables.keys().cloned().collect();
    let declared: Vec<&str> = declared.iter().map(String::as_str).collect();
    let video_indexers: Vec<String> = credential_tables
        .iter()
        .filter(|(_, table)| {
            table.get("type").and_then(toml::Value::as_str) == Some("video_indexer")
        })
        .map(|(name, _)| name.clone())
        .collect();
    let video_indexers: Vec<&str> = video_indexers.iter().map(String::as_str).collect();
    let mut admin = validate_admin(admin, base_dir, problems);
    admin.ready_requires = ready_requires.map(|names| known_names(names, &declared, problems));
    // Caught here, not by `serve`'s "Address already in use", which blames another process.
    if let Some(addr) = admin.listen
        && server::listeners_collide(server.listen, addr)
    {
        problems.push(
            "admin.listen",
            format!(
                "{addr} collides with server.listen = {}: the two listeners need different \
                 ports (or addresses that do not overlap)",
                server.listen
            ),
        );
    }
    let preset_audiences = presets::credential_audiences(&route_values, problems);
    let credentials =
        credentials::validate_all(credential_tables, &preset_audiences, base_dir, problems);
    let retry = retry::resolve(&raw_retry, &RetryConfig::default(), "retry", problems);
    let (routes, vend_routes) = routes::validate_all(
        route_values,
        routes::Known {
            credentials: &declared,
            video_indexers: &video_indexers,
        },
        &retry,
        &server.inbound.api_keys,
        base_dir,
        problems,
    );

    Some(Config {
        file: file.to_string(),
        server,
        admin,
        log,
        telemetry,
        credentials: credentials.into_iter().collect::<BTreeMap<_, _>>(),
        routes,
        vend_routes,
        retry,
        warnings: Vec::new(),
    })
}

fn validate_admin(raw: RawAdmin, base_dir: &Path, problems: &mut Problems) -> AdminConfig {
    let listen = match raw.listen.as_deref() {
        Some("") => None,
        Some(text) => server::socket_addr(text, "admin.listen", problems),
        None => Some(fallback_addr(DEFAULT_ADMIN_LISTEN)),
    };
    let tls = raw
        .tls
        .and_then(|t| raw::section::<server::RawTls>(toml::Value::Table(t), "admin.tls", problems))
        .and_then(|t| server::tls(t, "admin.tls", base_dir, problems));
    let before = problems.len();
    let inbound = raw
        .inbound
        .and_then(|t| {
            raw::section::<server::RawInbound>(toml::Value::Table(t), "admin.inbound", problems)
        })
        .map(|i| server::inbound(i, "admin.inbound", problems))
        .unwrap_or_default();
    let inbound_broken = problems.len() > before;
    if !inbound_broken
        && let Some(problem) =
            listen.and_then(|addr| server::exposed_admin(addr, &inbound, tls.as_ref()))
    {
        problems.push("admin.listen", problem);
    }
    AdminConfig {
        listen,
        tls,
        inbound,
        ready_requires: None,
    }
}

/// `admin.ready_requires`: every name must be a declared credential.
fn known_names(names: Vec<String>, declared: &[&str], problems: &mut Problems) -> Vec<String> {
    for (i, name) in names.iter().enumerate() {
        if !declared.contains(&name.as_str()) {
            let known = if declared.is_empty() {
                "none".to_string()
            } else {
                declared.join(", ")
            };
            problems.push(
                format!("admin.ready_requires[{i}]"),
                format!("unknown credential \"{name}\"; known: {known}"),
            );
        }
    }
    names
}

fn validate_log(raw: RawLog, problems: &mut Problems) -> LogConfig {
    let format = match raw.format.as_deref() {
        None | Some("pretty") => LogFormat::Pretty,
        Some("json") => LogFormat::Json,
        Some(other) => {
            problems.push(
                "log.format",
                format!("unknown format \"{other}\"; expected \"pretty\" or \"json\""),
            );
            LogFormat::Pretty
        }
    };
    let level = raw.level.unwrap_or_else(|| "info".to_string());
    if let Err(why) = crate::logging::check_filter(&level) {
        problems.push("log.level", format!("invalid filter \"{level}\": {why}"));
    }
    LogConfig { format, level }
}

/// The built-in defaults are literals that always parse; the fallback keeps validation
/// going after a bad value without a panic path.
fn fallback_addr(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)))
}
