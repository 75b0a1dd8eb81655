//! Route phase, vending routes only (`vend = "CREDENTIAL"`): the request is answered here
//! with a read-only Video Indexer token for an account, a project or a video, from the
//! route's `ViewerTokens` cache; nothing is forwarded.
//!
//! ```text
//! GET {prefix}/account
//! GET {prefix}/projects/{projectId}
//! GET {prefix}/videos/{videoId}        (with the player and insights widget URLs)
//! ```
//!
//! 200 `application/json`, `Cache-Control: no-store`. Ids are one segment of
//! `[A-Za-z0-9_-]{1,64}` (else 400, nothing sent upstream). Video Indexer's 4xx comes back
//! with its status as `token_refused`; anything else failing is `credential_unavailable`.
//! With `[routes.cors]`, listed browser origins get CORS headers and their preflights an
//! answer; other origins get none.

use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};

use super::body::{self, ProxyBody};
use super::error::ProxyError;
use super::inbound::access::KeyDigest;
use super::vi_auth;
use crate::config::VendRouteConfig;
use crate::credentials::CredentialError;
use crate::credentials::video_indexer::{Scope, Viewer, ViewerTokens, valid_id};
use crate::telemetry::Telemetry;

/// A vending route, ready to serve.
#[derive(Debug)]
pub struct VendRoute {
    pub config: VendRouteConfig,
    /// The prefix, shared with logs and metrics without copying.
    pub name: Arc<str>,
    /// `None` when the credential is not a Video Indexer credential (refused by `check`).
    pub tokens: Option<Arc<ViewerTokens>>,
    /// Digests of the inbound keys allowed on this route, when it narrows them.
    pub key_digests: Option<Vec<KeyDigest>>,
}

impl VendRoute {
    pub fn new(config: VendRouteConfig, tokens: Option<Arc<ViewerTokens>>) -> Self {
        let key_digests = config
            .api_keys
            .as_ref()
            .map(|keys| keys.iter().map(KeyDigest::of_secret).collect());
        Self {
            name: Arc::from(config.prefix.as_str()),
            config,
            tokens,
            key_digests,
        }
    }

    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }

    /// The CORS headers for a request from `origin`, when the route lists it.
    pub fn cors(&self, headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        if self.config.cors_origins.is_empty() {
            return Vec::new();
        }
        // Answers differ by Origin, whether or not this one is listed.
        let mut out = vec![(header::VARY, HeaderValue::from_static("origin"))];
        let listed = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .filter(|o| {
                self.config
                    .cors_origins
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(o))
            })
            .and_then(|o| HeaderValue::from_str(o).ok());
        if let Some(origin) = listed {
            out.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin));
        }
        out
    }
}

/// What a request asked for, once its path is understood.
enum Asked {
    Token(Scope),
    Preflight,
}

/// Answers one request on a vending route.
pub async fn answer(
    route: &VendRoute,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    telemetry: &Telemetry,
) -> Result<Response<ProxyBody>, ProxyError> {
    let scope = match asked(route, method, path)? {
        Asked::Preflight => return Ok(preflight(route, headers)),
        Asked::Token(scope) => scope,
    };
    let Some(tokens) = &route.tokens else {
        return Err(ProxyError::CredentialUnavailable(CredentialError {
            credential: route.config.credential.clone(),
            reason: "not a video_indexer credential".into(),
        }));
    };
    let (result, outcome) = tokens.token(scope.clone()).await;
    telemetry.record_vend(&route.name, scope_label(&scope), outcome.label());
    let viewer = result.map_err(|err| vi_auth::refusal(&route.config.credential, err))?;
    let body = answer_body(route, tokens, &scope, &viewer);
    let mut response = Response::new(body::full(body.to_string()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The scope a path names (after the prefix), or the error for the request.
fn asked(route: &VendRoute, method: &Method, path: &str) -> Result<Asked, ProxyError> {
    let rest = match route.prefix() {
        "/" => path,
        prefix => path.get(prefix.len()..).unwrap_or_default(),
    };
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let not_found = || ProxyError::RouteNotFound {
        path: path.to_string(),
    };
    let scope = match segments.as_slice() {
        ["account"] => Scope::Account,
        ["projects", id] => checked(id).map(|id| Scope::Project(id.to_string()))?,
        ["videos", id] => checked(id).map(|id| Scope::Video(id.to_string()))?,
        // `/projects/a/b`: an id with an (encoded or not) slash in it is a bad id too.
        ["projects" | "videos", _, ..] => {
            return Err(bad_id(rest.splitn(3, '/').nth(2).unwrap_or_default()));
        }
        _ => return Err(not_found()),
    };
    let cors = !route.config.cors_origins.is_empty();
    match *method {
        Method::GET => Ok(Asked::Token(scope)),
        Method::OPTIONS if cors => Ok(Asked::Preflight),
        _ => Err(ProxyError::MethodNotAllowed {
            method: method.to_string(),
            route: route.prefix().to_string(),
            allowed: if cors { "GET, OPTIONS" } else { "GET" }.into(),
        }),
    }
}

fn checked(id: &str) -> Result<&str, ProxyError> {
    if valid_id(id) {
        Ok(id)
    } else {
        Err(bad_id(id))
    }
}

fn bad_id(id: &str) -> ProxyError {
    let shown: String = id
        .chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    ProxyError::BadRequest(format!(
        "\"{shown}\" is not a valid Video Indexer id: one path segment of A-Z, a-z, 0-9, '-' and '_', at most 64 characters"
    ))
}

/// 204 to a preflight; the CORS headers themselves are added for listed origins only
/// (`VendRoute::cors`), so an unlisted origin's preflight fails in the browser.
fn preflight(route: &VendRoute, headers: &HeaderMap) -> Response<ProxyBody> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let listed = route
        .cors(headers)
        .iter()
        .any(|(name, _)| name == header::ACCESS_CONTROL_ALLOW_ORIGIN);
    if listed {
        let out = response.headers_mut();
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET"),
        );
        out.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("x-azgate-key, x-ms-client-request-id"),
        );
        out.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    response
}

fn scope_label(scope: &Scope) -> &'static str {
    match scope {
        Scope::Account => "account",
        Scope::Project(_) => "project",
        Scope::Video(_) => "video",
    }
}

/// The JSON answer: the token, its expiry, its scope, and for videos the widget URLs.
fn answer_body(
    route: &VendRoute,
    tokens: &ViewerTokens,
    scope: &Scope,
    viewer: &Viewer,
) -> serde_json::Value {
    let token = viewer.token.value.expose();
    let mut body = serde_json::json!({
        "accessToken": token,
        "expiresOn": rfc3339(viewer.expires_on),
        "accountId": tokens.account_id(),
        "location": tokens.location(),
    });
    match scope {
        Scope::Account => body["scope"] = "Account".into(),
        Scope::Project(id) => {
            body["scope"] = "Project".into();
            body["projectId"] = id.as_str().into();
        }
        Scope::Video(id) => {
            body["scope"] = "Video".into();
            body["videoId"] = id.as_str().into();
            let widget = |kind: &str| {
                let query = form_urlencoded::Serializer::new(String::new())
                    .append_pair("location", tokens.location())
                    .append_pair("accessToken", token)
                    .finish();
                format!(
                    "{}/embed/{kind}/{}/{id}/?{query}",
                    route.config.embed_url,
                    tokens.account_id()
                )
            };
            body["embed"] = serde_json::json!({
                "player": widget("player"),
                "insights": widget("insights"),
            });
        }
    }
    body
}

/// `2026-12-01T15:04:05Z`.
fn rfc3339(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn expiry_is_rfc3339_utc() {
        let at = UNIX_EPOCH + Duration::from_secs(1_796_137_445);
        assert_eq!(rfc3339(at), "2026-12-01T15:04:05Z");
    }
}
