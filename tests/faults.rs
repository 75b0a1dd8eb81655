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
use support::entra::{MockEntra, arm_route};
use support::{Azgate, MockUpstream, client, full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
            "timeout = \"10s\"",
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
            let _ = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
            drop(stream);
        }
    });
    let (upstream, seen) = recording_upstream().await;
    let gw = Azgate::start(&arm_route(
        &format!("http://{addr}/t/oauth2/v2.0/token"),
        &upstream.url,
        "timeout = \"10s\"",
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
        "timeout = \"10s\"",
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

// Upstream faults: a raw TCP upstream scripted byte by byte.

fn plain_route(upstream: &str, extra: &str) -> String {
    format!("[[routes]]\nprefix = \"/up\"\nupstream = \"{upstream}\"\n{extra}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_an_idle_pooled_connection_costs_the_client_nothing() {
    let (upstream, connections) = support::raw::upstream(|mut stream| async move {
        support::raw::read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok")
            .await;
        // Keep-alive promised, then the connection is closed once idle.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        drop(stream);
    })
    .await;
    let gw = Azgate::start(&plain_route(&upstream, "")).await;
    let url = format!("{}/up/x", gw.url);
    for round in 0..5 {
        let response = client().get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "round {round}");
        assert_eq!(response.text().await.unwrap(), "ok");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        5,
        "a new connection each time"
    );
}

#[tokio::test]
async fn a_response_with_both_content_length_and_chunked_is_forwarded_without_the_length() {
    // RFC 9112, 6.3: Transfer-Encoding overrides Content-Length, and a proxy removes the
    // Content-Length before forwarding; kept, it would promise the client 100 bytes of 5.
    let (upstream, _) = support::raw::upstream(|mut stream| async move {
        loop {
            if support::raw::read_head(&mut stream).await.is_empty() {
                return;
            }
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let gw = Azgate::start(&plain_route(&upstream, "")).await;
    let client = client();
    for round in 0..2 {
        let response = client.get(format!("{}/up/x", gw.url)).send().await.unwrap();
        assert_eq!(response.status(), 200, "round {round}");
        assert!(
            response.headers().get("content-length").is_none(),
            "round {round}: {:?}",
            response.headers()
        );
        assert_eq!(response.text().await.unwrap(), "hello", "round {round}");
    }
}

#[tokio::test]
async fn an_upstream_that_answers_bytes_that_are_not_http_is_a_clear_502() {
    let (upstream, _) = support::raw::upstream(|mut stream| async move {
        support::raw::read_head(&mut stream).await;
        let _ = stream
            .write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
            .await;
    })
    .await;
    let gw = Azgate::start(&plain_route(&upstream, "[routes.retry]\nmax_attempts = 1")).await;
    let (status, code, message) = answer(&format!("{}/up/x", gw.url)).await;
    assert_eq!(
        (status, code.as_str()),
        (502, "upstream_unreachable"),
        "{message}"
    );
    assert!(
        message.contains(upstream.trim_start_matches("http://")),
        "{message}"
    );
}

#[tokio::test]
async fn an_expect_100_continue_upload_goes_through() {
    let upstream = MockUpstream::echo().await;
    let gw = Azgate::start(&plain_route(&upstream.url, "")).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let body = vec![b'u'; 100_000];
    stream
        .write_all(
            format!(
                "PUT /up/upload HTTP/1.1\r\nHost: azgate\r\nContent-Length: {}\r\n\
                 Expect: 100-continue\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // The client waits for the interim answer before it sends the body.
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).await.unwrap();
    assert!(
        String::from_utf8_lossy(&interim).starts_with("HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    stream.write_all(&body).await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("\"body_len\":100000"), "{text}");
}
