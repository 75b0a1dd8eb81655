//! The access log: one event per request with its facts, and no secrets in it.

mod support;

use support::logs::LogCapture;
use support::{Azgate, MockUpstream, client};

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
    let missing = client()
        .get(format!("{}/nowhere", gw.url))
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
    assert!(e.get("route").is_none());
}
