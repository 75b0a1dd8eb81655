//! `[[routes]]` -> `RouteConfig`: prefixes, upstream URLs, credential references, method
//! lists, extra headers, timeouts and private CA files. A route with `vend` becomes a
//! `VendRouteConfig` instead (`vend.rs`); prefixes are unique across both kinds.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

mod fields;

use fields::{ca_roots, methods, prefix, set_header, upstream};

use super::error::{Problems, join};
use super::presets::{self, Preset};
use super::raw::{self, RawRoute};
use super::vend::{self, VendRouteConfig};
use super::{RetryConfig, RouteConfig, units};
use crate::secret::Secret;

/// Default request body limit: enough for a 2 GB Video Indexer upload with headroom.
pub const DEFAULT_MAX_BODY: u64 = 4 << 30;

/// Default size limit for rewriting links in JSON response bodies.
pub const DEFAULT_REWRITE_LIMIT: u64 = 8 << 20;

/// Default time to wait for an upstream's response headers.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Forwarding routes and vending routes, in file order.
pub type Validated = (Vec<RouteConfig>, Vec<VendRouteConfig>);

/// The credentials routes may name: every declared one, and those of type `video_indexer`
/// (declared, valid or not: a broken credential is reported at its own path).
#[derive(Clone, Copy)]
pub struct Known<'a> {
    pub credentials: &'a [&'a str],
    pub video_indexers: &'a [&'a str],
}

impl Known<'_> {
    /// A route option that needs a `video_indexer` credential names one (or an unknown
    /// name, reported elsewhere).
    fn needs_video_indexer(&self, name: &str, at: String, what: &str, problems: &mut Problems) {
        if self.credentials.contains(&name) && !self.video_indexers.contains(&name) {
            problems.push(
                at,
                format!("{what} needs a video_indexer credential; \"{name}\" is another type"),
            );
        }
    }
}

pub fn validate_all(
    values: Vec<toml::Value>,
    known: Known<'_>,
    retry: &RetryConfig,
    server_keys: &[Secret],
    base_dir: &Path,
    problems: &mut Problems,
) -> Validated {
    let (mut routes, mut vending) = (Vec::new(), Vec::new());
    let mut seen = HashSet::new();
    for (i, value) in values.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        let Some(mut raw) = raw::section::<RawRoute>(value, &path, problems) else {
            continue;
        };
        let prefix = match raw.vend.take() {
            Some(credential) => {
                { validate_vending(raw, credential, &path, known, server_keys, problems) }.map(
                    |route| {
                        let prefix = route.prefix.clone();
                        vending.push(route);
                        prefix
                    },
                )
            }
            None => validate_one(raw, &path, known, retry, server_keys, base_dir, problems).map(
                |route| {
                    let prefix = route.prefix.clone();
                    routes.push(route);
                    prefix
                },
            ),
        };
        if let Some(prefix) = prefix
            && !seen.insert(prefix.clone())
        {
            problems.push(
                join(&path, "prefix"),
                format!("prefix \"{prefix}\" is used by an earlier route"),
            );
        }
    }
    (routes, vending)
}

fn validate_vending(
    raw: RawRoute,
    credential: String,
    path: &str,
    known: Known<'_>,
    server_keys: &[Secret],
    problems: &mut Problems,
) -> Option<VendRouteConfig> {
    known_credential(
        &credential,
        known.credentials,
        &join(path, "vend"),
        problems,
    );
    known.needs_video_indexer(&credential, join(path, "vend"), "vend", problems);
    let prefix = route_prefix(raw.prefix.as_deref(), path, problems);
    let api_keys = route_keys(raw.api_keys.as_deref(), server_keys, path, problems);
    let route = vend::validate(&raw, credential, prefix?, api_keys, path, problems);
    Some(route)
}

/// The normalised prefix, or the problem recorded.
fn route_prefix(raw: Option<&str>, path: &str, problems: &mut Problems) -> Option<String> {
    match raw {
        Some(text) => prefix(text)
            .map_err(|m| problems.push(join(path, "prefix"), m))
            .ok(),
        None => {
            problems.missing(join(path, "prefix"), "missing key");
            None
        }
    }
}

/// `api_keys`: each must be one of the listener's keys.
fn route_keys(
    keys: Option<&[String]>,
    server_keys: &[Secret],
    path: &str,
    problems: &mut Problems,
) -> Option<Vec<Secret>> {
    keys.map(|keys| {
        let mut out = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if server_keys.iter().any(|k| k.expose() == key) {
                out.push(Secret::new(key.clone()));
            } else {
                problems.push(
                    format!("{}[{i}]", join(path, "api_keys")),
                    "not one of server.inbound.api_keys (value not shown)",
                );
            }
        }
        out
    })
}

/// A credential reference (`credential`, `vend`) must name a declared credential.
fn known_credential(name: &str, credentials: &[&str], at: &str, problems: &mut Problems) {
    if credentials.contains(&name) {
        return;
    }
    let mut message = match credentials {
        [] => format!("unknown credential \"{name}\"; known: none"),
        known => format!("unknown credential \"{name}\"; known: {}", known.join(", ")),
    };
    if let Some(near) = super::error::did_you_mean(name, credentials.iter().copied()) {
        message.push_str(&format!("; did you mean \"{near}\"?"));
    }
    problems.push(at, message);
}

fn validate_one(
    mut raw: RawRoute,
    path: &str,
    known: Known<'_>,
    retry: &RetryConfig,
    server_keys: &[Secret],
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<RouteConfig> {
    vend::vending_keys_without_vend(&raw, path, problems);
    // The key an upstream problem is reported at: the one the user wrote.
    let mut upstream_key = "upstream";
    let preset = match raw.preset.as_deref() {
        Some(name) => match Preset::parse(name) {
            Some(preset) => {
                if let Some(key) = preset.apply(&mut raw, path, problems) {
                    upstream_key = key;
                }
                Some(preset)
            }
            None => {
                let near = super::error::did_you_mean(name, Preset::ALL.map(Preset::name));
                let message = match near {
                    Some(near) => format!("unknown preset \"{name}\"; did you mean \"{near}\"?"),
                    None => format!(
                        "unknown preset \"{name}\"; expected one of: {}",
                        presets::NAMES
                    ),
                };
                problems.push(join(path, "preset"), message);
                // The upstream it would have given is part of the same mistake.
                problems.missing_is_explained(join(path, "upstream"));
                None
            }
        },
        None => {
            for (key, set) in [
                ("account", raw.account.is_some()),
                ("region", raw.region.is_some()),
                ("endpoint", raw.endpoint.is_some()),
            ] {
                if set {
                    problems.push(join(path, key), "only applies with a `preset`");
                }
            }
            None
        }
    };
    let set_query = raw
        .set_query
        .take()
        .map(|map| {
            map.into_iter()
                .filter(|(name, _)| {
                    let ok = !name.is_empty();
                    if !ok {
                        problems.push(join(path, "set_query"), "empty parameter name");
                    }
                    ok
                })
                .collect()
        })
        .unwrap_or_default();
    let rewrite_body_limit = match &raw.rewrite_body_limit {
        Some(text) => match units::parse_size(text) {
            Ok(n) if n <= 64 << 20 => n,
            Ok(_) => {
                problems.push(
                    join(path, "rewrite_body_limit"),
                    "must be at most 64MiB: the body is held in memory to rewrite it",
                );
                DEFAULT_REWRITE_LIMIT
            }
            Err(m) => {
                problems.push(join(path, "rewrite_body_limit"), m);
                DEFAULT_REWRITE_LIMIT
            }
        },
        None => DEFAULT_REWRITE_LIMIT,
    };
    let prefix = route_prefix(raw.prefix.as_deref(), path, problems);
    let upstream = match raw.upstream {
        Some(text) => upstream(&text)
            .map_err(|m| problems.push(join(path, upstream_key), m))
            .ok(),
        None => {
            problems.missing(join(path, "upstream"), "missing key");
            None
        }
    };
    if let Some(name) = &raw.credential {
        known_credential(name, known.credentials, &join(path, "credential"), problems);
    }
    if raw.scoped_tokens == Some(true) {
        match &raw.credential {
            Some(name) => known.needs_video_indexer(
                name,
                join(path, "scoped_tokens"),
                "scoped_tokens",
                problems,
            ),
            None => problems.push(
                join(path, "scoped_tokens"),
                "needs a video_indexer `credential` on the route",
            ),
        }
    }
    let methods = raw
        .methods
        .map(|list| methods(&list, &join(path, "methods"), problems));
    let set_headers = raw
        .set_headers
        .map(|map| {
            map.into_iter()
                .filter_map(|(name, value)| {
                    set_header(
                        &name,
                        &value,
                        &join(&join(path, "set_headers"), &name),
                        problems,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let timeout = match raw.timeout {
        Some(text) => match units::parse_duration(&text) {
            Ok(d) if d.is_zero() => {
                problems.push(join(path, "timeout"), "must be greater than zero");
                DEFAULT_TIMEOUT
            }
            Ok(d) => d,
            Err(m) => {
                problems.push(join(path, "timeout"), m);
                DEFAULT_TIMEOUT
            }
        },
        None => DEFAULT_TIMEOUT,
    };
    let max_body = match &raw.max_body {
        Some(text) => match units::parse_size(text) {
            Ok(0) => {
                problems.push(join(path, "max_body"), "must be greater than zero");
                DEFAULT_MAX_BODY
            }
            Ok(n) => n,
            Err(m) => {
                problems.push(join(path, "max_body"), m);
                DEFAULT_MAX_BODY
            }
        },
        None => DEFAULT_MAX_BODY,
    };
    let api_keys = route_keys(raw.api_keys.as_deref(), server_keys, path, problems);
    let ca_roots = raw.ca_file.and_then(|file| {
        ca_roots(&file, base_dir)
            .map_err(|m| problems.push(join(path, "ca_file"), m))
            .ok()
    });
    let throttle = super::throttle::validate(
        raw.throttle.as_ref(),
        raw.credential.is_some(),
        path,
        problems,
    );
    Some(RouteConfig {
        prefix: prefix?,
        upstream: upstream?,
        credential: raw.credential,
        strip_prefix: raw.strip_prefix.unwrap_or(true),
        methods,
        set_headers,
        timeout,
        ca_roots,
        max_body,
        allow_encoded_slash: raw.allow_encoded_slash.unwrap_or(false),
        api_keys,
        retry: match &raw.retry {
            Some(table) => super::retry::resolve(table, retry, &join(path, "retry"), problems),
            None => retry.clone(),
        },
        preset,
        set_query,
        rewrite_body_links: raw.rewrite_body_links.unwrap_or(false),
        rewrite_body_limit,
        forwarded_headers: raw.forwarded_headers.unwrap_or(true),
        scoped_tokens: raw.scoped_tokens.unwrap_or(false),
        throttle,
    })
}
