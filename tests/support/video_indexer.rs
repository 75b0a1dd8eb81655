//! A mock Video Indexer speaking the wire formats of AZURE.md: the classic auth endpoint
//! (`GET /auth/{location}/Accounts/{id}/AccessToken`), ARM's `generateAccessToken`, and a
//! data plane that echoes every other request. Token calls are recorded; their answers
//! come from a replaceable responder, by default a fresh `vi-token-N` per call.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use super::{Body, MockUpstream, echo, full};

/// One token request the mock received.
#[derive(Debug, Clone)]
pub struct TokenCall {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl TokenCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Whether this is ARM's `generateAccessToken` rather than the classic endpoint.
    pub fn is_arm(&self) -> bool {
        self.path.ends_with("/generateAccessToken")
    }
}

type Responder = Arc<dyn Fn(&TokenCall, usize) -> Response<Body> + Send + Sync>;

pub struct MockVideoIndexer {
    pub url: String,
    calls: Arc<Mutex<Vec<TokenCall>>>,
    data_calls: Arc<AtomicUsize>,
    responder: Arc<Mutex<Responder>>,
    _server: MockUpstream,
}

impl MockVideoIndexer {
    /// Classic calls get `"vi-token-N"`, ARM calls `{"accessToken":"vi-token-N"}`, N
    /// counting token calls from 1; anything else is echoed.
    pub async fn start() -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let data_calls = Arc::new(AtomicUsize::new(0));
        let responder: Arc<Mutex<Responder>> =
            Arc::new(Mutex::new(Arc::new(|call: &TokenCall, n: usize| {
                let token = format!("vi-token-{n}");
                if call.is_arm() {
                    arm_token(&token)
                } else {
                    token_string(&token)
                }
            })));
        let server = {
            let (calls, data_calls, responder) =
                (calls.clone(), data_calls.clone(), responder.clone());
            MockUpstream::start(move |request| {
                let (calls, data_calls, responder) =
                    (calls.clone(), data_calls.clone(), responder.clone());
                async move {
                    let path = request.uri().path();
                    let is_token_call =
                        path.ends_with("/AccessToken") || path.ends_with("/generateAccessToken");
                    if !is_token_call {
                        data_calls.fetch_add(1, Ordering::SeqCst);
                        return echo(request).await;
                    }
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
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    let n = {
                        let mut calls = calls.lock().unwrap();
                        calls.push(call.clone());
                        calls.len()
                    };
                    let respond = responder.lock().unwrap().clone();
                    respond(&call, n)
                }
            })
            .await
        };
        Self {
            url: server.url.clone(),
            calls,
            data_calls,
            responder,
            _server: server,
        }
    }

    /// Replaces the responder for token calls; `n` is the 1-based number of the call.
    pub fn respond_with(
        &self,
        f: impl Fn(&TokenCall, usize) -> Response<Body> + Send + Sync + 'static,
    ) {
        *self.responder.lock().unwrap() = Arc::new(f);
    }

    pub fn calls(&self) -> Vec<TokenCall> {
        self.calls.lock().unwrap().clone()
    }

    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// How many requests reached the (echoing) data plane.
    pub fn data_calls(&self) -> usize {
        self.data_calls.load(Ordering::SeqCst)
    }
}

fn json_response(status: u16, body: String) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json; charset=utf-8")
        .body(full(body))
        .unwrap()
}

/// The classic endpoint's success: the token as a JSON string.
pub fn token_string(token: &str) -> Response<Body> {
    json_response(200, serde_json::Value::from(token).to_string())
}

/// `generateAccessToken`'s success.
pub fn arm_token(token: &str) -> Response<Body> {
    json_response(200, serde_json::json!({ "accessToken": token }).to_string())
}

/// A Video Indexer error: `{"ErrorType": ..., "Message": ...}`.
pub fn vi_error(status: u16, error_type: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        serde_json::json!({ "ErrorType": error_type, "Message": message }).to_string(),
    )
}

/// An ARM error: `{"error": {"code": ..., "message": ...}}`.
pub fn arm_error(status: u16, code: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        serde_json::json!({ "error": { "code": code, "message": message } }).to_string(),
    )
}

/// Any status with a raw body and content type.
pub fn raw(status: u16, content_type: &str, body: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", content_type)
        .body(full(body.to_string()))
        .unwrap()
}

/// 429 with `Retry-After` in seconds, in the shape of the API Management gateway in
/// front of Video Indexer (`statusCode`/`message`).
pub fn throttled(retry_after_secs: u64) -> Response<Body> {
    let mut response = json_response(
        429,
        serde_json::json!({
            "statusCode": 429,
            "message": "Rate limit is exceeded. Try again in 120 seconds."
        })
        .to_string(),
    );
    response
        .headers_mut()
        .insert("retry-after", retry_after_secs.into());
    response
}

/// A JWT-shaped token (unsigned: nothing here checks signatures) with these claims.
pub fn jwt(claims: serde_json::Value) -> String {
    format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
