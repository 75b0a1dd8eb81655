//! Errors of the request path, and the one function that turns them into responses.
//!
//! Each error knows who failed (`ErrorSource`) so logs say whether to look at the client,
//! the upstream or a credential. The response is JSON in Azure's error shape with an
//! `x-azgate-error` header, so clients can tell azgate's answers from the upstream's.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};
use opentelemetry::trace::TraceId;

use super::body::{self, ProxyBody};
use crate::credentials::CredentialError;

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    Client,
    Upstream,
    Credential,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches the path {path}")]
    RouteNotFound { path: String },
    #[error("method {method} is not allowed on {route}; allowed: {allowed}")]
    MethodNotAllowed {
        method: String,
        route: String,
        allowed: String,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the request body is larger than this route's limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error(
        "the request headers ({size} bytes with the request target) are larger than this \
         proxy's limit of {limit} bytes"
    )]
    HeadersTooLarge { size: usize, limit: usize },
    #[error("{0}")]
    RequestTimeout(String),
    #[error(transparent)]
    CredentialUnavailable(#[from] CredentialError),
    /// The token service refused a token azgate asked for on a client's behalf (Video
    /// Indexer's classic auth calls): its 4xx status goes back to the client.
    #[error("{message}")]
    TokenRefused {
        status: StatusCode,
        message: String,
        /// Video Indexer's own `Retry-After` on a 429, passed on.
        retry_after: Option<Duration>,
    },
    /// The route holds after the upstream's 429 and this request cannot wait it out.
    #[error("{}", throttled_message(route, *retry_after, *queue_full))]
    Throttled {
        route: String,
        retry_after: Duration,
        queue_full: bool,
    },
    #[error("upstream {upstream} is unreachable: {reason}")]
    UpstreamUnreachable { upstream: String, reason: String },
    #[error("upstream {upstream} sent no response headers within {}", humantime::format_duration(*.after))]
    UpstreamTimeout { upstream: String, after: Duration },
}

impl ProxyError {
    /// The stable error code of the contract (`route_not_found`, …).
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::RouteNotFound { .. } => "route_not_found",
            ProxyError::MethodNotAllowed { .. } => "method_not_allowed",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::Unauthorized(_) => "unauthorized",
            ProxyError::Forbidden(_) => "forbidden",
            ProxyError::PayloadTooLarge { .. } => "payload_too_large",
            ProxyError::HeadersTooLarge { .. } => "headers_too_large",
            ProxyError::RequestTimeout(_) => "request_timeout",
            ProxyError::CredentialUnavailable(_) => "credential_unavailable",
            ProxyError::TokenRefused { .. } => "token_refused",
            ProxyError::Throttled { .. } => "throttled",
            ProxyError::UpstreamUnreachable { .. } => "upstream_unreachable",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::TokenRefused { status, .. } => *status,
            ProxyError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::CredentialUnavailable(_) | ProxyError::UpstreamUnreachable { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn source(&self) -> ErrorSource {
        match self {
            ProxyError::CredentialUnavailable(_) | ProxyError::TokenRefused { .. } => {
                ErrorSource::Credential
            }
            ProxyError::UpstreamUnreachable { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::Throttled { .. } => ErrorSource::Upstream,
            _ => ErrorSource::Client,
        }
    }
}

/// Seconds, rounded up, at least 1: a `Retry-After` that never asks for an early retry.
fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.as_secs() == 0))
}

fn throttled_message(route: &str, retry_after: Duration, queue_full: bool) -> String {
    let secs = whole_seconds(retry_after);
    if queue_full {
        format!(
            "the upstream of {route} throttled azgate and the queue of requests waiting it out is full; retry in {secs}s"
        )
    } else {
        format!("the upstream of {route} throttled azgate for {secs}s more; retry after that")
    }
}

/// The response for an error of azgate itself: the only place errors become HTTP.
/// `trace_id` is the request's trace (azgate's own, or the client's `traceparent`).
pub fn respond(
    err: &ProxyError,
    request_id: &str,
    trace_id: Option<TraceId>,
) -> Response<ProxyBody> {
    let mut body = serde_json::json!({
        "error": {
            "code": err.code(),
            "message": err.to_string(),
            "request_id": request_id,
        }
    });
    if let Some(trace_id) = trace_id {
        body["error"]["trace_id"] = trace_id.to_string().into();
    }
    let mut response = Response::new(body::full(body.to_string()));
    *response.status_mut() = err.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert("x-azgate-error", HeaderValue::from_static(err.code()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let ProxyError::Unauthorized(_) = err {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("AzgateKey realm=\"azgate\", header=\"x-azgate-key\""),
        );
    }
    if let ProxyError::Throttled { retry_after, .. }
    | ProxyError::TokenRefused {
        retry_after: Some(retry_after),
        ..
    } = err
    {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(whole_seconds(*retry_after)),
        );
    }
    if let ProxyError::MethodNotAllowed { allowed, .. } = err
        && let Ok(value) = HeaderValue::from_str(allowed)
    {
        headers.insert(header::ALLOW, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn every_error_is_json_with_code_and_header() {
        let cases = [
            (
                ProxyError::RouteNotFound { path: "/x".into() },
                404,
                "route_not_found",
            ),
            (
                ProxyError::MethodNotAllowed {
                    method: "POST".into(),
                    route: "/vi".into(),
                    allowed: "GET, HEAD".into(),
                },
                405,
                "method_not_allowed",
            ),
            (ProxyError::BadRequest("bad".into()), 400, "bad_request"),
            (
                ProxyError::HeadersTooLarge {
                    size: 70_000,
                    limit: 65_536,
                },
                431,
                "headers_too_large",
            ),
            (
                ProxyError::CredentialUnavailable(CredentialError {
                    credential: "arm".into(),
                    reason: "AADSTS7000215".into(),
                }),
                502,
                "credential_unavailable",
            ),
            (
                ProxyError::TokenRefused {
                    status: StatusCode::NOT_FOUND,
                    retry_after: None,
                    message: "Video Indexer answered 404".into(),
                },
                404,
                "token_refused",
            ),
            (
                ProxyError::UpstreamUnreachable {
                    upstream: "u".into(),
                    reason: "refused".into(),
                },
                502,
                "upstream_unreachable",
            ),
            (
                ProxyError::UpstreamTimeout {
                    upstream: "u".into(),
                    after: Duration::from_secs(5),
                },
                504,
                "upstream_timeout",
            ),
        ];
        for (err, status, code) in cases {
            let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
            let response = respond(&err, "rid-1", Some(trace_id));
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()["x-azgate-error"], code);
            if status == 405 {
                assert_eq!(response.headers()["allow"], "GET, HEAD");
            }
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(json["error"]["code"], code);
            assert_eq!(json["error"]["request_id"], "rid-1");
            assert_eq!(
                json["error"]["trace_id"],
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert!(
                json["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
    }
}
