//! A mock managed identity endpoint (IMDS or App Service protocol): every call is recorded
//! with its decoded query and headers; the answer comes from a replaceable responder, by
//! default an IMDS success (all strings) with a fresh token per call.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Response, StatusCode};

use super::{Body, MockUpstream, full};

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct IdentityCall {
    pub method: String,
    pub path: String,
    /// The raw query, to check its encoding.
    pub raw_query: String,
    pub query: HashMap<String, String>,
    /// Names lower-cased.
    pub headers: HashMap<String, String>,
}

type Responder = Arc<dyn Fn(&IdentityCall, usize) -> Response<Body> + Send + Sync>;

pub struct MockIdentity {
    /// The token endpoint URL (`{base}/metadata/identity/oauth2/token`).
    pub url: String,
    calls: Arc<Mutex<Vec<IdentityCall>>>,
    count: Arc<AtomicUsize>,
    responder: Arc<Mutex<Responder>>,
    _server: MockUpstream,
}

impl MockIdentity {
    /// Answers every call with `imds_token("mi-token-N", 3599)`, N counting from 1.
    pub async fn start() -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let responder: Responder =
            Arc::new(|_: &IdentityCall, n: usize| imds_token(&format!("mi-token-{n}"), 3599));
        let responder = Arc::new(Mutex::new(responder));
        let server = {
            let (calls, count, responder) = (calls.clone(), count.clone(), responder.clone());
            MockUpstream::start(move |request| {
                let (calls, count, responder) = (calls.clone(), count.clone(), responder.clone());
                async move {
                    let raw_query = request.uri().query().unwrap_or_default().to_string();
                    let call = IdentityCall {
                        method: request.method().to_string(),
                        path: request.uri().path().to_string(),
                        query: form_urlencoded::parse(raw_query.as_bytes())
                            .into_owned()
                            .collect(),
                        raw_query,
                        headers: request
                            .headers()
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
            url: format!("{}/metadata/identity/oauth2/token", server.url),
            calls,
            count,
            responder,
            _server: server,
        }
    }

    /// Replaces the responder; `n` is the 1-based number of the call.
    pub fn respond_with(
        &self,
        f: impl Fn(&IdentityCall, usize) -> Response<Body> + Send + Sync + 'static,
    ) {
        *self.responder.lock().unwrap() = Arc::new(f);
    }

    pub fn call_count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> Vec<IdentityCall> {
        self.calls.lock().unwrap().clone()
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn json_response(status: u16, body: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json; charset=utf-8")
        .body(full(body.to_string()))
        .unwrap()
}

/// The IMDS success of AZURE.md: every value a string.
pub fn imds_token(token: &str, expires_in: u64) -> Response<Body> {
    let now = now_secs();
    json_response(
        200,
        serde_json::json!({
            "access_token": token,
            "refresh_token": "",
            "expires_in": expires_in.to_string(),
            "expires_on": (now + expires_in).to_string(),
            "not_before": now.to_string(),
            "resource": "https://management.azure.com/",
            "token_type": "Bearer",
        }),
    )
}

/// A success carrying only `expires_on` in whatever shape is given (App Service style).
pub fn token_expiring_on(token: &str, expires_on: serde_json::Value) -> Response<Body> {
    json_response(
        200,
        serde_json::json!({
            "access_token": token,
            "expires_on": expires_on,
            "resource": "https://management.azure.com/",
            "token_type": "Bearer",
            "client_id": "5E29463D-0000-0000-0000-000000000000",
        }),
    )
}

/// An IMDS error body, optionally with `Retry-After` seconds.
pub fn imds_error(status: u16, description: &str, retry_after: Option<u64>) -> Response<Body> {
    let mut response = json_response(
        status,
        serde_json::json!({"error": "invalid_request", "error_description": description}),
    );
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    response
}
