//! A mock Entra ID token endpoint speaking the v1 and v2 wire formats of AZURE.md.
//! Every call is recorded (path, form fields, headers); the answer comes from a
//! replaceable responder, by default a v2 success with a fresh token per call.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::{Response, StatusCode};
use http_body_util::BodyExt;

use super::{Body, MockUpstream, full};

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct TokenCall {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub form: HashMap<String, String>,
    pub headers: HashMap<String, String>,
}

type Responder = Arc<dyn Fn(&TokenCall, usize) -> Response<Body> + Send + Sync>;

pub struct MockEntra {
    pub url: String,
    calls: Arc<Mutex<Vec<TokenCall>>>,
    count: Arc<AtomicUsize>,
    responder: Arc<Mutex<Responder>>,
    _server: MockUpstream,
}

impl MockEntra {
    /// Answers every call with `v2_token("token-N", 3599)`, N counting from 1.
    pub async fn start() -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let responder: Arc<Mutex<Responder>> =
            Arc::new(Mutex::new(Arc::new(|_call: &TokenCall, n: usize| {
                v2_token(&format!("token-{n}"), 3599)
            })));
        let server = {
            let (calls, count, responder) = (calls.clone(), count.clone(), responder.clone());
            MockUpstream::start(move |request| {
                let (calls, count, responder) = (calls.clone(), count.clone(), responder.clone());
                async move {
                    let (parts, body) = request.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let call = TokenCall {
                        method: parts.method.to_string(),
                        path: parts.uri.path().to_string(),
                        query: parts.uri.query().map(str::to_string),
                        form: form_urlencoded::parse(&body).into_owned().collect(),
                        headers: parts
                            .headers
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.to_string(),
                                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                )
                            })
                            .collect(),
                    };
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    calls.lock().unwrap().push(call.clone());
                    let respond = responder.lock().unwrap().clone();
                    respond(&call, n)
                }
            })
            .await
        };
        Self {
            url: server.url.clone(),
            calls,
            count,
            responder,
            _server: server,
        }
    }

    /// Replaces the responder; `n` is the 1-based number of the call.
    /// Every token request from now on is refused as Entra ID refuses a wrong client secret.
    pub fn refuse_client_secret(&self) {
        self.respond_with(|_, _| {
            aadsts_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided.",
            )
        });
    }

    /// From now on the endpoint is down: every call gets the 503 a load balancer in
    /// front of a dead token service answers.
    pub fn go_down(&self) {
        self.respond_with(|_, _| {
            Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .header("content-type", "text/plain")
                .body(full("no healthy upstream"))
                .unwrap()
        });
    }

    /// Back to the default answer: `v2_token("token-N", 3599)`.
    pub fn come_back(&self) {
        self.respond_with(|_, n| v2_token(&format!("token-{n}"), 3599));
    }

    pub fn respond_with(
        &self,
        f: impl Fn(&TokenCall, usize) -> Response<Body> + Send + Sync + 'static,
    ) {
        *self.responder.lock().unwrap() = Arc::new(f);
    }

    pub fn call_count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> Vec<TokenCall> {
        self.calls.lock().unwrap().clone()
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(full(body.to_string()))
        .unwrap()
}

/// v2 success: numbers for `expires_in` / `ext_expires_in`.
pub fn v2_token(token: &str, expires_in: u64) -> Response<Body> {
    json_response(
        StatusCode::OK,
        serde_json::json!({
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": token,
        }),
    )
}

/// v1 success: every value a string, with `expires_on` as epoch seconds.
pub fn v1_token(token: &str, expires_in: u64, resource: &str) -> Response<Body> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json_response(
        StatusCode::OK,
        serde_json::json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": expires_in.to_string(),
            "expires_on": (now + expires_in).to_string(),
            "not_before": now.to_string(),
            "resource": resource,
        }),
    )
}

/// An Entra error body: `AADSTS{code}: {description}` plus trace lines.
pub fn aadsts_error(status: u16, error: &str, code: u32, description: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(status).unwrap(),
        serde_json::json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}\r\nTrace ID: 0000\r\nCorrelation ID: 1111\r\nTimestamp: 2026-01-09 02:02:12Z"),
            "error_codes": [code],
            "timestamp": "2026-01-09 02:02:12Z",
            "trace_id": "0000",
            "correlation_id": "1111",
        }),
    )
}

/// 429 with `Retry-After` in seconds.
pub fn throttled(retry_after_secs: u64) -> Response<Body> {
    Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header("retry-after", retry_after_secs.to_string())
        .body(full(
            r#"{"error":"temporarily_unavailable","error_description":"AADSTS50196: throttled"}"#,
        ))
        .unwrap()
}

/// A `client_secret` credential `arm` (secret `s3cret-SECRET`) whose token endpoint is
/// `token_url`, and a route `/arm` to `upstream` injecting it, plus `extra` route lines.
pub fn arm_route(token_url: &str, upstream: &str, extra: &str) -> String {
    format!(
        r#"
        [credentials.arm]
        type = "client_secret"
        tenant = "t"
        client_id = "c"
        client_secret = "s3cret-SECRET"
        scope = "https://management.azure.com/.default"
        token_url = "{token_url}"
        [[routes]]
        prefix = "/arm"
        upstream = "{upstream}"
        credential = "arm"
        {extra}
        "#
    )
}
