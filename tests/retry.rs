//! The retry engine against a scripted upstream, on tokio's paused clock: 429 and 504
//! retried the way Azure asks, bodies replayed byte for byte or streamed once, a budget
//! that caps retries, and the upstream's last answer returned untouched.

mod support;

use std::time::Duration;

use support::scripted::{Scripted, reply};
use support::{Azgate, client, status};

async fn gateway(upstream: &Scripted, retry: &str) -> Azgate {
    Azgate::start(&format!(
        "[[routes]]\nprefix = \"/r\"\nupstream = \"{}\"\n[routes.retry]\n{retry}\n",
        upstream.url
    ))
    .await
}

/// A route `/r` to `url` with the default retry policy.
async fn route_to(url: &str) -> Azgate {
    Azgate::start(&format!(
        "[[routes]]\nprefix = \"/r\"\nupstream = \"{url}\"\n"
    ))
    .await
}

fn close(actual: Duration, expected: Duration) -> bool {
    actual >= expected && actual <= expected + Duration::from_millis(100)
}

#[tokio::test(start_paused = true)]
async fn throttling_is_absorbed_with_the_waits_asked_for() {
    let upstream = Scripted::start(vec![
        reply(429).header("retry-after", "2"),
        reply(429),
        reply(200).body("done"),
    ])
    .await;
    let gw = gateway(&upstream, "").await;
    let response = client()
        .post(format!("{}/r/jobs?x=1", gw.url))
        .header("x-ms-client-request-id", "rid-1")
        .body("payload-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-azgate-attempts"], "3");
    assert_eq!(response.text().await.unwrap(), "done");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(
            (s.method.as_str(), s.path_and_query.as_str()),
            ("POST", "/jobs?x=1")
        );
        assert_eq!(s.body, seen[0].body);
        assert_eq!(s.body, "payload-123");
        assert_eq!(s.headers["x-ms-client-request-id"], "rid-1");
    }
    let gaps = upstream.gaps();
    assert!(
        close(gaps[0], Duration::from_secs(2)),
        "asked 2 s, waited {:?}",
        gaps[0]
    );
    assert!(
        gaps[1] <= Duration::from_millis(1100),
        "second backoff is at most 1 s: {:?}",
        gaps[1]
    );
}

#[tokio::test(start_paused = true)]
async fn every_retry_after_form_is_honoured_in_order_of_precedence() {
    let in_3s = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3));
    type Case = (Vec<(&'static str, String)>, Duration, Duration);
    let cases: Vec<Case> = vec![
        (
            vec![("x-ms-retry-after-ms", "1500".into())],
            Duration::from_millis(1500),
            Duration::from_millis(1600),
        ),
        (
            vec![("retry-after-ms", "700".into())],
            Duration::from_millis(700),
            Duration::from_millis(800),
        ),
        (
            vec![("retry-after", "4".into())],
            Duration::from_secs(4),
            Duration::from_millis(4100),
        ),
        (
            vec![("retry-after", in_3s)],
            Duration::from_secs(1),
            Duration::from_millis(3100),
        ),
        (
            vec![
                ("x-ms-retry-after-ms", "100".into()),
                ("retry-after-ms", "5000".into()),
                ("retry-after", "9".into()),
            ],
            Duration::from_millis(100),
            Duration::from_millis(200),
        ),
        (
            vec![
                ("retry-after-ms", "300".into()),
                ("retry-after", "9".into()),
            ],
            Duration::from_millis(300),
            Duration::from_millis(400),
        ),
    ];
    for (headers, min, max) in cases {
        let mut first = reply(429);
        for (name, value) in &headers {
            first = first.header(name, value.clone());
        }
        let upstream = Scripted::start(vec![first, reply(200)]).await;
        let gw = gateway(&upstream, "").await;
        let response = client()
            .get(format!("{}/r/x", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{headers:?}");
        let gap = upstream.gaps()[0];
        assert!(gap >= min && gap <= max, "{headers:?}: waited {gap:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_wait_longer_than_max_delay_goes_back_to_the_client_at_once() {
    let upstream = Scripted::start(vec![
        reply(429)
            .header("retry-after", "60")
            .header("x-ms-ratelimit-remaining-subscription-reads", "0")
            .body("come back in a minute"),
        reply(200),
    ])
    .await;
    let gw = gateway(&upstream, "max_delay = \"30s\"").await;
    let started = tokio::time::Instant::now();
    let response = client()
        .get(format!("{}/r/x", gw.url))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "60");
    assert_eq!(
        response.headers()["x-ms-ratelimit-remaining-subscription-reads"],
        "0"
    );
    assert!(response.headers().get("x-azgate-attempts").is_none());
    assert_eq!(response.text().await.unwrap(), "come back in a minute");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn after_the_last_attempt_the_upstream_answer_is_returned_verbatim() {
    let upstream = Scripted::start(vec![
        reply(429)
            .header("retry-after", "1")
            .header("x-ms-request-id", "req-9")
            .header("content-type", "application/json")
            .body(r#"{"error":{"code":"TooManyRequests"}}"#),
    ])
    .await;
    let gw = gateway(&upstream, "").await;
    let response = client()
        .delete(format!("{}/r/x", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["x-azgate-attempts"], "4");
    assert_eq!(response.headers()["x-ms-request-id"], "req-9");
    assert!(response.headers().get("x-azgate-error").is_none());
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"error":{"code":"TooManyRequests"}}"#
    );
    assert_eq!(upstream.count(), 4);
    assert!(
        upstream
            .gaps()
            .iter()
            .all(|g| close(*g, Duration::from_secs(1)))
    );
}

#[tokio::test(start_paused = true)]
async fn gateway_timeouts_are_retried_only_for_idempotent_methods() {
    for method in ["GET", "PUT", "DELETE", "HEAD", "OPTIONS"] {
        let upstream = Scripted::start(vec![reply(504), reply(200)]).await;
        let gw = gateway(&upstream, "").await;
        let m = http::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client()
            .request(m, format!("{}/r/x", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method}");
        assert_eq!(upstream.count(), 2, "{method}");
    }
    for method in ["POST", "PATCH"] {
        let upstream = Scripted::start(vec![reply(504), reply(200)]).await;
        let gw = gateway(&upstream, "").await;
        let m = http::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client()
            .request(m, format!("{}/r/x", gw.url))
            .body("b")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 504, "{method}");
        assert!(
            response.headers().get("x-azgate-error").is_none(),
            "the upstream's own 504"
        );
        assert_eq!(upstream.count(), 1, "{method}");
    }
    let upstream = Scripted::start(vec![reply(504), reply(200)]).await;
    let gw = gateway(&upstream, "non_idempotent = true").await;
    let response = client()
        .post(format!("{}/r/x", gw.url))
        .body("b")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn statuses_outside_on_are_not_retried_and_on_can_be_changed() {
    let upstream = Scripted::start(vec![reply(503), reply(200)]).await;
    let gw = gateway(&upstream, "").await;
    assert_eq!(status(client().get(format!("{}/r/x", gw.url))).await, 503);
    assert_eq!(upstream.count(), 1);

    let upstream = Scripted::start(vec![reply(503), reply(429), reply(200)]).await;
    let gw = gateway(&upstream, "on = [503, 429]\nmax_attempts = 3").await;
    let response = client()
        .get(format!("{}/r/x", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-azgate-attempts"], "3");

    let upstream = Scripted::start(vec![reply(429)]).await;
    let gw = gateway(&upstream, "max_attempts = 1").await;
    assert_eq!(status(client().get(format!("{}/r/x", gw.url))).await, 429);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_above_the_buffer_streams_once_and_is_not_retried() {
    let upstream = Scripted::start(vec![reply(429).header("retry-after", "1"), reply(200)]).await;
    let gw = gateway(&upstream, "").await;
    let body = vec![7u8; 5 << 20];
    let response = client()
        .put(format!("{}/r/blob", gw.url))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("x-azgate-attempts").is_none());
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.len(), 5 << 20);
}

#[tokio::test(start_paused = true)]
async fn a_chunked_body_under_the_buffer_is_replayed_byte_for_byte() {
    let upstream = Scripted::start(vec![reply(504), reply(200)]).await;
    let gw = gateway(&upstream, "buffer = \"256KiB\"").await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10u8).map(|i| Ok(vec![i; 10 * 1024])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = client()
        .put(format!("{}/r/chunked", gw.url))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body.len(), 100 * 1024);
    assert_eq!(seen[0].body, seen[1].body);
    assert!(
        seen[0].headers.get("content-length").is_none()
            || seen[1].headers.get("content-length").is_some()
    );
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_under_a_sustained_outage() {
    let logs = support::logs::LogCapture::default();
    let _guard = logs.install_json(tracing::Level::INFO);
    let upstream = Scripted::start(vec![reply(429).header("retry-after", "0")]).await;
    let gw = gateway(&upstream, "").await;
    let c = client();
    let mut retried = 0;
    for _ in 0..100 {
        let response = c.get(format!("{}/r/x", gw.url)).send().await.unwrap();
        assert_eq!(response.status(), 429);
        if response.headers().contains_key("x-azgate-attempts") {
            retried += 1;
        }
    }
    // Without a budget: 400 upstream requests. With it: the 100 requests plus the floor
    // of 30 retries in the 10 s window (20% of 100 is less).
    assert_eq!(upstream.count(), 130);
    assert!(retried <= 30, "{retried}");
    // About 70 requests found the budget spent: one log line says so, not 70.
    let spent = logs
        .events()
        .into_iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("retry budget of the route is spent"))
        })
        .count();
    assert_eq!(spent, 1, "{}", logs.text());
    // Once the window has slid past, retries are allowed again.
    tokio::time::advance(Duration::from_secs(11)).await;
    // A new client: the idle pooled connection was closed by the header timeout meanwhile.
    let response = client()
        .get(format!("{}/r/x", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-azgate-attempts"], "4");
}

/// An upstream that closes its first `drops` connections without a byte, then answers 200.
async fn flaky_upstream(drops: usize) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        let mut accepted = 0;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            accepted += 1;
            if accepted <= drops {
                // Read the request head, then hang up without answering.
                let mut buf = [0u8; 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
                drop(stream);
                continue;
            }
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(support::full(
                            "recovered",
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    (url, served)
}

#[tokio::test(start_paused = true)]
async fn a_connection_reset_before_the_response_is_retried_for_idempotent_methods() {
    let (url, served) = flaky_upstream(1).await;
    let gw = route_to(&url).await;
    let response = client()
        .get(format!("{}/r/x", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-azgate-attempts"], "2");
    assert_eq!(response.text().await.unwrap(), "recovered");

    let (url, served_post) = flaky_upstream(1).await;
    let gw = route_to(&url).await;
    let response = client()
        .post(format!("{}/r/x", gw.url))
        .body("once")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-azgate-error"], "upstream_unreachable");
    assert_eq!(
        served_post.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a POST is not repeated"
    );
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_then_reported_with_the_attempt_count() {
    let (_refusing, port) = support::refused_port();
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/r\"\nupstream = \"http://127.0.0.1:{port}\"\n[routes.retry]\nmax_attempts = 3\n"
    ))
    .await;
    let response = client()
        .get(format!("{}/r/x", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-azgate-error"], "upstream_unreachable");
    assert_eq!(response.headers()["x-azgate-attempts"], "3");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_goes_away_ends_the_retry_loop() {
    use tokio::io::AsyncWriteExt;
    let upstream = Scripted::start(vec![reply(429).header("retry-after", "10")]).await;
    let gw = gateway(&upstream, "").await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /r/x HTTP/1.1\r\nhost: azgate\r\n\r\n")
        .await
        .unwrap();
    while upstream.count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(stream);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        upstream.count(),
        1,
        "azgate kept retrying for a client that was gone"
    );

    // The same over HTTP/2: the stream reset ends the loop too.
    let upstream = Scripted::start(vec![reply(429).header("retry-after", "10")]).await;
    let gw = gateway(&upstream, "").await;
    let request = tokio::spawn(support::h2c_client().get(format!("{}/r/x", gw.url)).send());
    while upstream.count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    request.abort();
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        upstream.count(),
        1,
        "azgate kept retrying for an HTTP/2 stream that was reset"
    );
}

/// An upstream whose every connection first answers `status_line` (its body written a
/// moment after its head, as a proxy in front of a struggling server streams it), then
/// 200s.
async fn late_body_upstream(
    status_line: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    support::raw::upstream(move |mut stream| async move {
        let mut first = true;
        loop {
            let head = support::raw::read_head(&mut stream).await;
            if head.is_empty() {
                return;
            }
            if first {
                first = false;
                let head = format!(
                    "HTTP/1.1 {status_line}\r\ncontent-length: 12\r\nretry-after-ms: 300\r\n\r\n"
                );
                let _ = stream.write_all(head.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
                let _ = stream.write_all(b"try it again").await;
            } else {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
        }
    })
    .await
}

#[tokio::test]
async fn the_answer_before_a_retry_is_read_so_its_connection_carries_the_retry() {
    for status_line in ["504 Gateway Timeout", "429 Too Many Requests"] {
        let (url, connections) = late_body_upstream(status_line).await;
        let gw = route_to(&url).await;
        let response = client()
            .get(format!("{}/r/x", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{status_line}");
        assert_eq!(response.headers()["x-azgate-attempts"], "2");
        assert_eq!(response.text().await.unwrap(), "ok");
        assert_eq!(
            connections.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{status_line}: the retry went on the same connection"
        );
    }
}
