//! The admin endpoints: health, readiness, metrics (OpenMetrics or Prometheus text, as the
//! scraper asks) and the status page. They never proxy. Their inbound controls
//! (`[admin.inbound]`) are checked here, like the proxy listener's; the listener that serves
//! them, with its own TLS (`[admin.tls]`), is `server::admin_listener`.

mod metrics;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::gateway::Gateway;
use crate::proxy::body::{self, ProxyBody};
use crate::proxy::headers::AZGATE_KEY;
use crate::proxy::inbound::access::KeyDigest;
use crate::telemetry::Telemetry;

/// Process health shared between the server and the admin endpoints.
#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
}

impl Health {
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// What the admin endpoints read.
pub struct AdminState {
    pub health: Arc<Health>,
    pub telemetry: Arc<Telemetry>,
    /// The hot state; its `admin_access` decides who may call (it follows reloads).
    pub gateway: Arc<ArcSwap<Gateway>>,
}

/// The answer to one admin request (the listener itself is in `server::admin_listener`).
pub fn respond(
    request: &Request<Incoming>,
    peer: SocketAddr,
    state: &AdminState,
) -> Response<ProxyBody> {
    let gateway = state.gateway.load();
    let access = &gateway.admin_access;
    let client = access.client_addr(peer.ip(), request.headers());
    if !access.address_allowed(client) {
        return json(
            StatusCode::FORBIDDEN,
            error_body("forbidden", "this address may not use the admin endpoints"),
        );
    }
    if access.requires_key() {
        let key = request
            .headers()
            .get(AZGATE_KEY)
            .map(|v| KeyDigest::of(v.as_bytes()));
        if !key.is_some_and(|k| access.key_accepted(&k)) {
            let mut response = json(
                StatusCode::UNAUTHORIZED,
                error_body(
                    "unauthorized",
                    "send an admin key in the x-azgate-key header",
                ),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "AzgateKey realm=\"azgate-admin\", header=\"x-azgate-key\"",
                ),
            );
            return response;
        }
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = json(
            StatusCode::METHOD_NOT_ALLOWED,
            error_body("method_not_allowed", "admin endpoints answer GET and HEAD"),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/healthz" => json(StatusCode::OK, r#"{"status":"ok"}"#.to_string()),
        "/readyz" => readiness(state),
        "/metrics" => {
            let format = metrics::negotiate(request.headers().get(header::ACCEPT));
            let text = match format {
                metrics::Format::OpenMetrics => state.telemetry.encode(),
                metrics::Format::Text => metrics::to_text(&state.telemetry.encode()),
            };
            let mut response = Response::new(body::full(text));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, format.content_type());
            headers.insert(header::VARY, HeaderValue::from_static("accept"));
            response
        }
        "/status.json" => json(StatusCode::OK, status::json(state).to_string()),
        "/status" | "/" => {
            let mut response = Response::new(body::full(status::PAGE));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            // The page is self-contained: no script, style or request may come from elsewhere.
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
                ),
            );
            response
        }
        _ => json(
            StatusCode::NOT_FOUND,
            error_body(
                "not_found",
                "admin endpoints: /healthz /readyz /metrics /status /status.json",
            ),
        ),
    }
}

/// 200 when serving and no credential readiness follows (`admin.ready_requires`, by
/// default every credential a route uses) is failing without a valid token; 503 while
/// draining or when one is, naming each failing credential, its error and when the
/// background retry (`credentials::refresher`) makes the next attempt.
fn readiness(state: &AdminState) -> Response<ProxyBody> {
    if state.health.is_draining() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "draining", "reason": "shutting down: not accepting new requests"}).to_string(),
        );
    }
    let gateway = state.gateway.load();
    // A credential never used has its first token fetched now: until it is, whether the
    // token endpoint works is unknown, and a pod must not take traffic on a guess (a
    // wrong secret would make every request fail).
    let first_fetch: Vec<&str> = gateway
        .readiness_credentials()
        .into_iter()
        .filter(|credential| credential.cache().is_some_and(|cache| cache.warm()))
        .map(|credential| credential.name())
        .collect();
    if !first_fetch.is_empty() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "starting", "reason": "fetching the first token of these credentials", "credentials": first_fetch}).to_string(),
        );
    }
    let failing: Vec<serde_json::Value> = gateway
        .readiness_credentials()
        .into_iter()
        .filter_map(|credential| {
            let status = credential.cache()?.status();
            (!status.has_token && status.last_error.is_some()).then(|| {
                let next = status.next_attempt_in.unwrap_or_default();
                serde_json::json!({
                    "credential": credential.name(),
                    "error": status.last_error,
                    "next_attempt_in_ms": next.as_millis() as u64,
                    "next_attempt_at_ms": status::unix_ms(std::time::SystemTime::now() + next),
                })
            })
        })
        .collect();
    if failing.is_empty() {
        json(StatusCode::OK, r#"{"status":"ready"}"#.to_string())
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not_ready", "reason": "a credential readiness requires has no valid token; it is retried in the background", "credentials": failing})
                .to_string(),
        )
    }
}

fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": message}}).to_string()
}

fn json(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
