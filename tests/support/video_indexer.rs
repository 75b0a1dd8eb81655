//! A mock Video Indexer speaking the wire formats of AZURE.md: the classic auth endpoint
//! (`GET /auth/{location}/Accounts/{id}/AccessToken`), ARM's `generateAccessToken` and
//! `generateRestrictedViewerAccessToken`, and a
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

    /// Whether this is an ARM call (`generateAccessToken` or
    /// `generateRestrictedViewerAccessToken`) rather than the classic endpoint.
    pub fn is_arm(&self) -> bool {
        self.path
            .contains("/providers/Microsoft.VideoIndexer/accounts/")
    }

    /// Whether this is ARM's `generateRestrictedViewerAccessToken`.
    pub fn is_restricted_viewer(&self) -> bool {
        self.path.ends_with("/generateRestrictedViewerAccessToken")
    }
}

type Responder = Arc<dyn Fn(&TokenCall, usize) -> Response<Body> + Send + Sync>;

pub struct MockVideoIndexer {
    pub url: String,
    calls: Arc<Mutex<Vec<TokenCall>>>,
    /// Token calls being answered now, and the most there were at once.
    in_flight: Arc<(AtomicUsize, AtomicUsize)>,
    /// How long each token call takes to answer.
    delay: Arc<Mutex<std::time::Duration>>,
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
        let in_flight = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let delay = Arc::new(Mutex::new(std::time::Duration::ZERO));
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
            let (in_flight, delay) = (in_flight.clone(), delay.clone());
            MockUpstream::start(move |request| {
                let (calls, data_calls, responder) =
                    (calls.clone(), data_calls.clone(), responder.clone());
                let (in_flight, delay) = (in_flight.clone(), delay.clone());
                async move {
                    let path = request.uri().path();
                    let is_token_call = path.ends_with("/AccessToken")
                        || path.ends_with("/generateAccessToken")
                        || path.ends_with("/generateRestrictedViewerAccessToken");
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
                    let now = in_flight.0.fetch_add(1, Ordering::SeqCst) + 1;
                    in_flight.1.fetch_max(now, Ordering::SeqCst);
                    let pause = *delay.lock().unwrap();
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                    in_flight.0.fetch_sub(1, Ordering::SeqCst);
                    let respond = responder.lock().unwrap().clone();
                    respond(&call, n)
                }
            })
            .await
        };
        Self {
            url: server.url.clone(),
            calls,
            in_flight,
            delay,
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

    /// Makes every token call take `delay` to answer.
    pub fn set_delay(&self, delay: std::time::Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// The most token calls that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.in_flight.1.load(Ordering::SeqCst)
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

/// The Video Indexer account the tests' credentials name.
pub const ACCOUNT: &str = "00000000-0000-0000-0000-00000000abcd";
/// The classic subscription key tests pass as `VI_KEY`.
pub const KEY: &str = "vi-subscription-key-SECRET-0123456789";

/// A classic credential `name` fetching from `api_url` with `${VI_KEY}`, plus `extra` lines.
pub fn classic_credential(name: &str, api_url: &str, extra: &str) -> String {
    format!(
        r#"
        [credentials.{name}]
        type = "video_indexer"
        location = "trial"
        account_id = "{ACCOUNT}"
        subscription_key = "${{VI_KEY}}"
        api_url = "{api_url}"
        {extra}
        "#
    )
}

/// An ARM-based account: `[credentials.arm]` (a `client_secret` on `entra`, secret
/// `${ARM_SECRET}`) and `[credentials.vi]` buying its tokens from `management`, plus
/// `extra` lines in `[credentials.vi]`.
pub fn arm_credentials(entra: &str, management: &str, extra: &str) -> String {
    format!(
        r#"
        [credentials.arm]
        type = "client_secret"
        tenant = "tenant"
        client_id = "11111111-2222-3333-4444-555555555555"
        client_secret = "${{ARM_SECRET}}"
        scope = "https://management.azure.com/.default"
        token_url = "{entra}/tenant/oauth2/v2.0/token"

        [credentials.vi]
        type = "video_indexer"
        location = "westeurope"
        account_id = "{ACCOUNT}"
        arm = "arm"
        subscription_id = "sub-1"
        resource_group = "rg-1"
        account_name = "myvi"
        management_url = "{management}"
        {extra}
        "#
    )
}
