//! `[[routes]]` with `vend = "CREDENTIAL"` -> `VendRouteConfig`: a route that answers with
//! scoped Video Indexer viewer tokens instead of forwarding (served by `proxy::vend`).
//! Forwarding keys do not apply to it and are reported where they are written.

use http::Uri;

use super::error::{Problems, join};
use super::raw::RawRoute;
use crate::secret::Secret;

/// Scoped tokens a vending route keeps by default.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;
/// Distinct tokens a vending route fetches at once by default: Video Indexer allows about
/// 10 requests/s per account, and a fetch takes well over 100 ms.
pub const DEFAULT_MAX_CONCURRENT_FETCHES: usize = 8;
/// Where Video Indexer's player and insights widgets are served.
pub const DEFAULT_EMBED_URL: &str = "https://www.videoindexer.ai";

/// A token vending route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendRouteConfig {
    /// Path prefix, normalised as for forwarding routes.
    pub prefix: String,
    /// The `video_indexer` credential whose account the tokens are for.
    pub credential: String,
    /// When set, only these inbound keys may use the route.
    pub api_keys: Option<Vec<Secret>>,
    /// Scoped tokens kept (the least recently used go first beyond it).
    pub max_entries: u64,
    /// Distinct tokens fetched at once; further fetches wait their turn.
    pub max_concurrent_fetches: usize,
    /// Base of the widget URLs in video answers, without a trailing slash.
    pub embed_url: String,
    /// Browser origins allowed to call the route (`[routes.cors] allow_origins`); empty
    /// sends no CORS headers at all.
    pub cors_origins: Vec<String>,
}

/// Forwarding keys, which a vending route does not use.
const FORWARDING_KEYS: &[&str] = &[
    "credential",
    "strip_prefix",
    "methods",
    "set_headers",
    "timeout",
    "ca_file",
    "retry",
    "max_body",
    "allow_encoded_slash",
    "preset",
    "account",
    "region",
    "endpoint",
    "set_query",
    "rewrite_body_links",
    "rewrite_body_limit",
    "forwarded_headers",
    "scoped_tokens",
    "throttle",
];

/// The vending part of a route whose `vend` is set. `prefix` and `api_keys` were
/// validated by the caller, as for every route.
pub fn validate(
    raw: &RawRoute,
    credential: String,
    prefix: String,
    api_keys: Option<Vec<Secret>>,
    path: &str,
    problems: &mut Problems,
) -> VendRouteConfig {
    if raw.upstream.is_some() {
        problems.push(
            join(path, "upstream"),
            "`vend` and `upstream` exclude each other: a vending route answers itself",
        );
    }
    for key in FORWARDING_KEYS {
        if is_set(raw, key) {
            problems.push(
                join(path, key),
                "does not apply to a vending route (`vend`), which forwards nothing",
            );
        }
    }
    let max_entries = match raw.max_entries {
        Some(0) => {
            problems.push(join(path, "max_entries"), "must be at least 1");
            DEFAULT_MAX_ENTRIES
        }
        Some(n) => n,
        None => DEFAULT_MAX_ENTRIES,
    };
    let max_concurrent_fetches = match raw.max_concurrent_fetches {
        Some(n) if (1..=1000).contains(&n) => n,
        Some(_) => {
            problems.push(
                join(path, "max_concurrent_fetches"),
                "must be between 1 and 1000",
            );
            DEFAULT_MAX_CONCURRENT_FETCHES
        }
        None => DEFAULT_MAX_CONCURRENT_FETCHES,
    };
    let embed_url = match raw.embed_url.as_deref() {
        Some(text) => embed_url(text)
            .map_err(|m| problems.push(join(path, "embed_url"), m))
            .unwrap_or_else(|()| DEFAULT_EMBED_URL.to_string()),
        None => DEFAULT_EMBED_URL.to_string(),
    };
    let cors_path = join(&join(path, "cors"), "allow_origins");
    let cors_origins = raw
        .cors
        .as_ref()
        .and_then(|cors| cors.allow_origins.as_ref())
        .map(|list| {
            list.iter()
                .enumerate()
                .filter_map(|(i, text)| {
                    origin(text)
                        .map_err(|m| problems.push(format!("{cors_path}[{i}]"), m))
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    VendRouteConfig {
        prefix,
        credential,
        api_keys,
        max_entries,
        max_concurrent_fetches,
        embed_url,
        cors_origins,
    }
}

/// Forwarding-only keys on a route without `vend`: the vending keys.
pub fn vending_keys_without_vend(raw: &RawRoute, path: &str, problems: &mut Problems) {
    for (key, set) in [
        ("max_entries", raw.max_entries.is_some()),
        (
            "max_concurrent_fetches",
            raw.max_concurrent_fetches.is_some(),
        ),
        ("embed_url", raw.embed_url.is_some()),
        ("cors", raw.cors.is_some()),
    ] {
        if set {
            problems.push(join(path, key), "only applies to a vending route (`vend`)");
        }
    }
}

fn is_set(raw: &RawRoute, key: &str) -> bool {
    match key {
        "credential" => raw.credential.is_some(),
        "strip_prefix" => raw.strip_prefix.is_some(),
        "methods" => raw.methods.is_some(),
        "set_headers" => raw.set_headers.is_some(),
        "timeout" => raw.timeout.is_some(),
        "ca_file" => raw.ca_file.is_some(),
        "retry" => raw.retry.is_some(),
        "max_body" => raw.max_body.is_some(),
        "allow_encoded_slash" => raw.allow_encoded_slash.is_some(),
        "preset" => raw.preset.is_some(),
        "account" => raw.account.is_some(),
        "region" => raw.region.is_some(),
        "endpoint" => raw.endpoint.is_some(),
        "set_query" => raw.set_query.is_some(),
        "rewrite_body_links" => raw.rewrite_body_links.is_some(),
        "rewrite_body_limit" => raw.rewrite_body_limit.is_some(),
        "forwarded_headers" => raw.forwarded_headers.is_some(),
        "scoped_tokens" => raw.scoped_tokens.is_some(),
        "throttle" => raw.throttle.is_some(),
        _ => false,
    }
}

/// An http(s) base URL without query, fragment or user information.
fn embed_url(text: &str) -> Result<String, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("invalid URL \"{text}\": {e}"))?;
    let plain = matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.authority().is_some_and(|a| !a.host().is_empty())
        && uri.query().is_none()
        && !text.contains(['#', '@']);
    if !plain {
        return Err(format!(
            "\"{text}\" must be an http:// or https:// base URL without query or user information"
        ));
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// A browser origin: `scheme://host[:port]`, nothing more (browsers send exactly that).
fn origin(text: &str) -> Result<String, String> {
    let uri: Uri = text
        .parse()
        .map_err(|_| format!("\"{text}\" is not an origin such as \"https://app.contoso.com\""))?;
    let exact = matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.authority().is_some_and(|a| !a.host().is_empty())
        && !text.contains('@')
        && text.matches('/').count() == 2;
    if !exact {
        return Err(format!(
            "\"{text}\" is not an origin such as \"https://app.contoso.com\" (scheme and host, no path)"
        ));
    }
    Ok(text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_and_host_only() {
        assert_eq!(
            origin("https://App.Contoso.com").as_deref(),
            Ok("https://app.contoso.com")
        );
        assert!(origin("http://localhost:3000").is_ok());
        for bad in [
            "app.contoso.com",
            "https://app.contoso.com/",
            "https://app.contoso.com/x",
            "*",
            "ftp://x",
            "https://u@x",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn embed_urls_are_plain_bases() {
        assert_eq!(
            embed_url("https://www.videoindexer.ai/").as_deref(),
            Ok("https://www.videoindexer.ai")
        );
        assert!(embed_url("http://127.0.0.1:9/base").is_ok());
        for bad in [
            "www.videoindexer.ai",
            "https://x/?a=1",
            "https://u@x",
            "ftp://x",
        ] {
            assert!(embed_url(bad).is_err(), "{bad}");
        }
    }
}
