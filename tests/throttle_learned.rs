//! The pace a route learns from its holds (`[routes.throttle] learn`): against an upstream
//! that throttles like ARM (a token bucket; an empty bucket answers 429 with
//! `Retry-After: 1`, and a request inside that window is refused and restarts it), driven
//! at twice its rate, few upstream calls are spent on 429s once the route has learned —
//! and many are without learning. Paused clock: the minute of load takes no real time.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Response, StatusCode};
use support::{Azgate, MockUpstream, client, full};
use tokio::time::Instant;

/// The upstream's bucket and what it answered.
struct Bucket {
    tokens: f64,
    last: Instant,
    window_until: Option<Instant>,
    ok: u32,
    throttled: u32,
}

const REFILL: f64 = 10.0;
const BURST: f64 = 10.0;

async fn arm_like_upstream() -> (MockUpstream, Arc<Mutex<Bucket>>) {
    let bucket = Arc::new(Mutex::new(Bucket {
        tokens: BURST,
        last: Instant::now(),
        window_until: None,
        ok: 0,
        throttled: 0,
    }));
    let state = bucket.clone();
    let server = MockUpstream::start(move |_request| {
        let state = state.clone();
        async move {
            let throttled = {
                let mut b = state.lock().unwrap();
                let now = Instant::now();
                b.tokens =
                    (b.tokens + now.duration_since(b.last).as_secs_f64() * REFILL).min(BURST);
                b.last = now;
                let in_window = b.window_until.is_some_and(|until| now < until);
                let throttled = in_window || b.tokens < 1.0;
                if throttled {
                    b.window_until = Some(now + Duration::from_secs(1));
                    b.throttled += 1;
                } else {
                    b.tokens -= 1.0;
                    b.ok += 1;
                }
                throttled
            };
            tokio::time::sleep(Duration::from_millis(5)).await;
            let mut response = Response::builder();
            if throttled {
                response = response
                    .status(StatusCode::TOO_MANY_REQUESTS)
                    .header("retry-after", "1");
            }
            response.body(full("{}")).unwrap()
        }
    })
    .await;
    (server, bucket)
}

async fn gateway(url: &str, throttle: &str) -> Azgate {
    Azgate::start(&format!(
        r#"
        [credentials.apim]
        type = "subscription_key"
        key = "apim-key-0123456789"
        [[routes]]
        prefix = "/r"
        upstream = "{url}"
        credential = "apim"
        timeout = "60s"
        [routes.retry]
        max_delay = "60s"
        [routes.throttle]
        {throttle}
        "#
    ))
    .await
}

/// What clients saw: 200s, azgate's own 429 `throttled`, anything else.
#[derive(Debug, Default)]
struct Seen {
    ok: u32,
    refused: u32,
    other: Vec<u16>,
}

/// 20 requests/s (twice the bucket's rate) for `seconds`, open loop.
async fn drive(gw: &Azgate, seconds: u32) -> Seen {
    let mut requests = Vec::new();
    for i in 0..seconds * 20 {
        let url = format!("{}/r/{i}", gw.url);
        requests.push(tokio::spawn(async move {
            let response = client().get(url).send().await.unwrap();
            let code = response
                .headers()
                .get("x-azgate-error")
                .map(|v| v.to_str().unwrap().to_string());
            (response.status().as_u16(), code)
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut seen = Seen::default();
    for request in requests {
        match request.await.unwrap() {
            (200, _) => seen.ok += 1,
            (429, Some(code)) if code == "throttled" => seen.refused += 1,
            (status, _) => seen.other.push(status),
        }
    }
    seen
}

async fn status_json(gw: &Azgate) -> serde_json::Value {
    let admin = gw.admin_url.clone().unwrap();
    support::status_json(&admin).await
}

fn share_throttled(bucket: &Mutex<Bucket>) -> (u32, u32, f64) {
    let b = bucket.lock().unwrap();
    let calls = b.ok + b.throttled;
    (
        calls,
        b.throttled,
        f64::from(b.throttled) / f64::from(calls),
    )
}

#[tokio::test(start_paused = true)]
async fn a_learned_pace_keeps_upstream_429s_rare_at_twice_the_upstreams_rate() {
    let (server, bucket) = arm_like_upstream().await;
    let gw = gateway(&server.url, "").await;
    let seen = drive(&gw, 30).await;
    let (calls, throttled, share) = share_throttled(&bucket);
    assert!(
        share <= 0.05,
        "{throttled} of {calls} upstream calls were 429s ({:.1}%); clients: {seen:?}",
        share * 100.0
    );
    // No upstream 429 reaches a client; what cannot wait is azgate's own `throttled`.
    assert!(seen.other.is_empty(), "{seen:?}");
    // Goodput: the upstream's rate over the time it was driven, nearly all of it used.
    let ok = bucket.lock().unwrap().ok;
    assert!(
        ok >= 300,
        "{ok} accepted in 30 s of load and its drain: {seen:?}"
    );

    // The status page shows the pace it learned: near the upstream's 10/s.
    let status = status_json(&gw).await;
    let pace = status["routes"][0]["throttle"]["learned_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no learned pace in {status}"));
    assert!((6.0..=14.0).contains(&pace), "learned {pace}/s");
}

#[tokio::test(start_paused = true)]
async fn without_learning_the_released_queue_keeps_meeting_429s() {
    let (server, bucket) = arm_like_upstream().await;
    let gw = gateway(&server.url, "learn = false").await;
    let seen = drive(&gw, 30).await;
    let (calls, throttled, share) = share_throttled(&bucket);
    assert!(
        share >= 0.20,
        "{throttled} of {calls} upstream calls were 429s ({:.1}%); clients: {seen:?}",
        share * 100.0
    );
    let status = status_json(&gw).await;
    assert!(status["routes"][0]["throttle"]["learned_per_second"].is_null());
}

/// Ten quick 200s, then `status` with `Retry-After: 1`, then 200s: the pace learned after.
async fn learned_after(status: u16) -> serde_json::Value {
    let calls = Arc::new(Mutex::new(0usize));
    let server = MockUpstream::start(move |_request| {
        let calls = calls.clone();
        async move {
            let n = {
                let mut calls = calls.lock().unwrap();
                *calls += 1;
                *calls
            };
            let mut response = Response::builder();
            if n == 11 {
                response = response
                    .status(StatusCode::from_u16(status).unwrap())
                    .header("retry-after", "1");
            }
            response.body(full("{}")).unwrap()
        }
    })
    .await;
    let gw = gateway(&server.url, "").await;
    for i in 0..10 {
        client()
            .get(format!("{}/r/{i}", gw.url))
            .send()
            .await
            .unwrap();
    }
    // Answered by azgate after the hold (the 503 is not retried; the 429 is, after it).
    client()
        .get(format!("{}/r/held", gw.url))
        .send()
        .await
        .unwrap();
    let status = status_json(&gw).await;
    status["routes"][0]["throttle"]["learned_per_second"].clone()
}

#[tokio::test(start_paused = true)]
async fn only_a_429_teaches_a_pace_a_503_with_retry_after_only_holds() {
    assert!(learned_after(429).await.is_number());
    assert!(learned_after(503).await.is_null());
}

#[test]
fn learn_needs_a_route_that_holds() {
    let text = r#"
        [[routes]]
        prefix = "/r"
        upstream = "https://example.invalid"
        [routes.throttle]
        hold = false
        learn = true
        "#;
    let lookup = |_: &str| None;
    let refused = match azgate::config::parse(text, "bad.toml", Path::new("."), &lookup) {
        Ok(_) => panic!("learn without hold must be refused"),
        Err(err) => err.to_string(),
    };
    assert!(
        refused.contains("routes[0].throttle.learn") && refused.contains("only applies"),
        "{refused}"
    );
}
