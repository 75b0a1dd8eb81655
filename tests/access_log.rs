//! The access log: one event per request with its facts, and no secrets in it; a response
//! the upstream cut short (reset mid-body, stalled after its headers) is logged
//! `complete=false` and reaches the client truncated, never as a short complete body.

mod support;

use support::logs::LogCapture;
use support::{Azgate, MockUpstream, client};
use tokio::io::AsyncWriteExt;

// A current-thread runtime keeps every task on this thread, under the scoped subscriber.
#[tokio::test(flavor = "current_thread")]
async fn one_json_line_per_request_without_secrets() {
    let capture = LogCapture::default();
    let _guard = capture.install_json(tracing::Level::DEBUG);

    let upstream = MockUpstream::echo().await;
    let gw = Azgate::start(&format!(
        r#"
        [credentials.key]
        type = "subscription_key"
        key = "SUPER-SECRET-KEY-VALUE"
        [[routes]]
        prefix = "/vi"
        upstream = "{}"
        credential = "key"
        "#,
        upstream.url
    ))
    .await;
    let response = client()
        .post(format!(
            "{}/vi/trial/Videos?name=clip&accessToken=CLIENT-TOKEN-VALUE",
            gw.url
        ))
        .header("x-ms-client-request-id", "log-test-1")
        .header("authorization", "Bearer CLIENT-BEARER-VALUE")
        .body("0123456789")
        .send()
        .await
        .unwrap();
    let body = response.bytes().await.unwrap();
    // No span export: the line names the trace of the client's traceparent.
    let missing = client()
        .get(format!("{}/nowhere", gw.url))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    missing.bytes().await.unwrap();
    gw.stop().await;

    let text = capture.text();
    for secret in [
        "SUPER-SECRET-KEY-VALUE",
        "CLIENT-TOKEN-VALUE",
        "CLIENT-BEARER-VALUE",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into the log:\n{text}"
        );
    }
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["target"] == "azgate::access")
        .collect();
    assert_eq!(events.len(), 2, "{text}");
    let e = &events[0];
    assert_eq!(e["method"], "POST");
    assert_eq!(e["route"], "/vi");
    assert_eq!(e["path"], "/vi/trial/Videos?name=clip&accessToken=REDACTED");
    assert_eq!(e["status"], 200);
    assert_eq!(e["bytes_in"], 10);
    assert_eq!(e["bytes_out"], body.len() as u64);
    assert_eq!(e["request_id"], "log-test-1");
    assert_eq!(e["upstream_request_id"], "upstream-req-1");
    assert_eq!(e["complete"], true);
    assert!(e.get("trace_id").is_none(), "no trace, no trace_id");
    assert!(e["duration_ms"].as_f64().is_some());
    assert!(e["upstream_ms"].as_f64().is_some());
    // Rounded to the microsecond, without float noise like 2439.1080230000002.
    for field in ["duration_ms", "upstream_ms"] {
        let printed = e[field].to_string();
        let decimals = printed.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 3, "{field} = {printed}");
    }

    let e = &events[1];
    assert_eq!(e["status"], 404);
    assert_eq!(e["error"], "route_not_found");
    assert_eq!(e["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(e.get("route").is_none());
}

fn plain_route(upstream: &str, extra: &str) -> String {
    format!("[[routes]]\nprefix = \"/up\"\nupstream = \"{upstream}\"\n{extra}\n")
}

/// The access-log event of the request to `path`, written when its response body ends
/// (waits for it, at most 5 s).
async fn access_event(logs: &support::logs::LogCapture, path: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if let Some(event) = logs.events().into_iter().find(|e| e["path"] == path) {
            return event;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access line for {path}:\n{}",
            logs.text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_upstream_reset_mid_body_is_a_truncated_response_not_a_short_complete_one() {
    let logs = support::logs::LogCapture::default();
    let _guard = logs.install_json(tracing::Level::INFO);
    let (upstream, _) = support::raw::upstream(|mut stream| async move {
        support::raw::read_head(&mut stream).await;
        let _ = stream
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\n\r\n",
            )
            .await;
        let _ = stream.write_all(&[b'x'; 100]).await;
        let _ = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
    })
    .await;
    let gw = Azgate::start(&plain_route(&upstream, "")).await;
    for (client, path) in [(client(), "/up/h1"), (support::h2c_client(), "/up/h2")] {
        let response = client
            .get(format!("{}{path}", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body = response.bytes().await;
        assert!(
            body.is_err(),
            "{path}: a cut body read as complete: {body:?}"
        );
    }
    for path in ["/up/h1", "/up/h2"] {
        let event = access_event(&logs, path).await;
        assert_eq!(event["complete"], false, "{path}: {event}");
        assert_eq!(event["status"], 200);
    }
    // Still serving.
    let still = client()
        .get(format!("{}/nowhere", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), 404);
}

#[tokio::test(flavor = "current_thread")]
async fn an_upstream_that_stalls_after_its_headers_is_cut_at_the_route_timeout() {
    let logs = support::logs::LogCapture::default();
    let _guard = logs.install_json(tracing::Level::INFO);
    let (upstream, _) = support::raw::upstream(|mut stream| async move {
        support::raw::read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
            .await;
        // Then nothing, for longer than the test.
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    })
    .await;
    let gw = Azgate::start(&plain_route(&upstream, "timeout = \"1s\"")).await;
    let started = std::time::Instant::now();
    let response = client()
        .get(format!("{}/up/stall", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.bytes().await.is_err(),
        "the stalled body must end as an error"
    );
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(5),
        "cut after {took:?}"
    );
    assert_eq!(access_event(&logs, "/up/stall").await["complete"], false);
}

#[tokio::test(flavor = "current_thread")]
async fn a_client_gone_while_its_request_is_upstream_is_logged_with_that_attempt() {
    let logs = support::logs::LogCapture::default();
    let _guard = logs.install_json(tracing::Level::INFO);
    let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (upstream, _) = support::raw::upstream(move |mut stream| {
        let arrived_tx = arrived_tx.clone();
        async move {
            support::raw::read_head(&mut stream).await;
            let _ = arrived_tx.send(());
            // No answer for longer than the test.
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        }
    })
    .await;
    let gw = Azgate::start(&plain_route(&upstream, "")).await;
    let mut arrived = arrived;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /up/gone HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    arrived.recv().await.unwrap();
    drop(stream);
    let event = access_event(&logs, "/up/gone").await;
    assert_eq!(event["status"], 0, "{event}");
    assert_eq!(event["complete"], false);
    assert_eq!(
        event["attempts"], 1,
        "the attempt that reached the upstream"
    );
    // Counted too, with status 0 (docs/metrics.md).
    let admin = gw.admin_url.clone().unwrap();
    let samples = support::metrics::scrape(&admin).await;
    let labels = [("route", "/up"), ("method", "GET"), ("status", "0")];
    assert_eq!(
        support::metrics::get(&samples, "azgate_requests_total", &labels),
        1.0
    );
    let status = support::status_json(&admin).await;
    let record = status["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "/up/gone")
        .cloned()
        .unwrap_or_default();
    assert_eq!(record["status"], 0, "{status}");
    assert_eq!(record["attempts"], 1, "{status}");
}
