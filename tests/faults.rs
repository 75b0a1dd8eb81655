//! The fault suite (issue 15): each fault injected on loopback, and what azgate does about
//! it — the status and error code the client gets, what reached the upstream, what the
//! access log says, and that azgate keeps serving.
//!
//! Token endpoint: an HTML page (200 and 502), a token already expired, `expires_in` of 0,
//! negative or absurd, a connection reset mid-answer, a host name that does not resolve.
//! (A hanging token endpoint is in tests/deadlines.rs.)

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Response, StatusCode};
use support::entra::MockEntra;
use support::{Azgate, MockUpstream, client, full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A route `/arm` to `upstream` with a `client_secret` credential whose token endpoint is
/// `token_url`.
fn arm_route(token_url: &str, upstream: &str) -> String {
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
        timeout = "10s"
        "#
    )
}

/// An upstream that counts requests and remembers the `Authorization` of each.
async fn recording_upstream() -> (MockUpstream, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let server = MockUpstream::start(move |request| {
        let authorization = request
            .headers()
            .get("authorization")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        recorded.lock().unwrap().push(authorization);
        async { Response::new(full("ok")) }
    })
    .await;
    (server, seen)
}

/// Status, error code and message of a GET.
async fn answer(url: &str) -> (u16, String, String) {
    let response = client().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    (
        status,
        json["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        json["error"]["message"]
            .as_str()
            .unwrap_or(&body)
            .to_string(),
    )
}

fn html(status: u16) -> Response<support::Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "text/html")
        .body(full(
            "<html><body><h1>Proxy error</h1><p>Access denied by corporate policy</p></body></html>",
        ))
        .unwrap()
}

fn expiring(expires_in: serde_json::Value) -> Response<support::Body> {
    Response::builder()
        .header("content-type", "application/json")
        .body(full(
            serde_json::json!({
                "token_type": "Bearer",
                "expires_in": expires_in,
                "access_token": "expired-or-odd-TOKEN",
            })
            .to_string(),
        ))
        .unwrap()
}

#[tokio::test]
async fn token_endpoint_faults_are_clear_credential_errors_with_bounded_fetches() {
    type Fault = fn() -> Response<support::Body>;
    let faults: [(&str, Fault, &str); 6] = [
        ("an HTML page with 200", || html(200), "not JSON"),
        ("an HTML page with 502", || html(502), "502"),
        ("expires_in 0", || expiring(0.into()), "too soon to use"),
        (
            "expires_in negative",
            || expiring((-60).into()),
            "too soon to use",
        ),
        (
            "expires_in absurd",
            || expiring(u64::MAX.into()),
            "expires_in",
        ),
        (
            "expires_in not a number",
            || expiring("soon".into()),
            "expires_in",
        ),
    ];
    for (what, fault, cause) in faults {
        let entra = MockEntra::start().await;
        entra.respond_with(move |_, _| fault());
        let (upstream, seen) = recording_upstream().await;
        let gw = Azgate::start(&arm_route(
            &format!("{}/t/oauth2/v2.0/token", entra.url),
            &upstream.url,
        ))
        .await;
        let url = format!("{}/arm/x", gw.url);
        for _ in 0..10 {
            let (status, code, message) = answer(&url).await;
            assert_eq!(
                (status, code.as_str()),
                (502, "credential_unavailable"),
                "{what}: {message}"
            );
            assert!(
                message.to_lowercase().contains(&cause.to_lowercase()),
                "{what}: the message names the cause ({cause}): {message}"
            );
            assert!(
                !message.contains("s3cret-SECRET") && !message.contains("expired-or-odd-TOKEN")
            );
        }
        assert!(
            seen.lock().unwrap().is_empty(),
            "{what}: a request went upstream"
        );
        // Ten requests, one fetch: the failure is backed off, not retried per request.
        assert_eq!(entra.call_count(), 1, "{what}");
        // azgate keeps serving: a route without a credential still answers.
        let (status, _, _) = answer(&format!("{}/nowhere", gw.url)).await;
        assert_eq!(status, 404, "{what}");
    }
}

#[tokio::test]
async fn a_token_endpoint_that_resets_mid_answer_is_a_clear_credential_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            // Headers promising 500 bytes, 20 of them, then the connection is gone.
            let _ = stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"access_token\":\"ab",
                )
                .await;
            let _ = stream.set_linger(Some(std::time::Duration::ZERO));
            drop(stream);
        }
    });
    let (upstream, seen) = recording_upstream().await;
    let gw = Azgate::start(&arm_route(
        &format!("http://{addr}/t/oauth2/v2.0/token"),
        &upstream.url,
    ))
    .await;
    let (status, code, message) = answer(&format!("{}/arm/x", gw.url)).await;
    assert_eq!(
        (status, code.as_str()),
        (502, "credential_unavailable"),
        "{message}"
    );
    assert!(message.contains("arm"), "{message}");
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_token_host_that_does_not_resolve_is_a_clear_credential_error() {
    let (upstream, seen) = recording_upstream().await;
    // `.invalid` never resolves (RFC 2606).
    let gw = Azgate::start(&arm_route(
        "https://login.azgate-test.invalid/t/oauth2/v2.0/token",
        &upstream.url,
    ))
    .await;
    let (status, code, message) = answer(&format!("{}/arm/x", gw.url)).await;
    assert_eq!(
        (status, code.as_str()),
        (502, "credential_unavailable"),
        "{message}"
    );
    assert!(message.contains("login.azgate-test.invalid"), "{message}");
    assert!(seen.lock().unwrap().is_empty());
}
