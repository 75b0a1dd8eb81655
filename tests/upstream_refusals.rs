//! An HTTP/2 upstream that refuses requests without processing them (RFC 9113, 8.7): a
//! graceful GOAWAY that leaves a stream out, or `REFUSED_STREAM`. Such a request is sent
//! again at once, whatever its method, and a connection going away takes no new requests.
//! A server's limit on streams at a time is such a refusal too: a burst beyond it is spread
//! over more connections. The upstream is written with the h2 crate to control its frames;
//! a HEAD answer from such an upstream, its length kept, is tested here too.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::Response;
use support::{Azgate, TestCa, client};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy)]
enum Refuse {
    /// The first connection is told to go away (GOAWAY, `NO_ERROR`) before any stream.
    FirstConnection,
    /// The first stream is reset with `REFUSED_STREAM`.
    FirstStream,
}

struct Upstream {
    url: String,
    connections: Arc<AtomicUsize>,
    /// Bodies of the requests answered.
    answered: Arc<std::sync::Mutex<Vec<String>>>,
}

type H2Connection = h2::server::Connection<tokio_rustls::server::TlsStream<TcpStream>, Bytes>;

/// An HTTPS upstream on 127.0.0.1 that speaks HTTP/2 with the h2 crate: `serve` gets each
/// connection after the TLS and HTTP/2 handshakes, numbered from 0. Returns its URL.
async fn h2_upstream<F, Fut>(ca: &TestCa, serve: F) -> String
where
    F: Fn(usize, H2Connection) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    h2_upstream_with(ca, h2::server::Builder::new(), serve).await
}

/// The same, its HTTP/2 settings from `h2`.
async fn h2_upstream_with<F, Fut>(ca: &TestCa, h2: h2::server::Builder, serve: F) -> String
where
    F: Fn(usize, H2Connection) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(ca.server_config()));
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        let mut number = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            let (tls, serve, h2) = (tls.clone(), serve.clone(), h2.clone());
            tokio::spawn(async move {
                let Ok(stream) = tls.accept(tcp).await else {
                    return;
                };
                if let Ok(connection) = h2.handshake(stream).await {
                    serve(number, connection).await;
                }
            });
            number += 1;
        }
    });
    url
}

/// azgate with one route to `upstream`, trusting the test CA.
async fn azgate_to(upstream: &str, ca: &TestCa) -> Azgate {
    Azgate::start(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\nca_file = \"{}\"\n",
        ca.ca_pem_path.display()
    ))
    .await
}

async fn upstream(ca: &TestCa, refuse: Refuse) -> Upstream {
    let connections = Arc::new(AtomicUsize::new(0));
    let streams = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, a) = (connections.clone(), answered.clone());
    let url = h2_upstream(ca, move |number, mut connection| {
        c.fetch_add(1, Ordering::SeqCst);
        let (streams, answered) = (streams.clone(), a.clone());
        async move {
            if number == 0 && matches!(refuse, Refuse::FirstConnection) {
                // GOAWAY, NO_ERROR, last stream 0: whatever arrives was not processed.
                connection.abrupt_shutdown(h2::Reason::NO_ERROR);
            }
            while let Some(Ok((request, mut respond))) = connection.accept().await {
                let first = streams.fetch_add(1, Ordering::SeqCst) == 0;
                if first && matches!(refuse, Refuse::FirstStream) {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                    continue;
                }
                let answered = answered.clone();
                tokio::spawn(async move {
                    let mut body = request.into_body();
                    let mut text = Vec::new();
                    while let Some(Ok(chunk)) = body.data().await {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        text.extend_from_slice(&chunk);
                    }
                    answered
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&text).into_owned());
                    let response = Response::builder().status(201).body(()).unwrap();
                    if let Ok(mut send) = respond.send_response(response, false) {
                        let _ = send.send_data(Bytes::from_static(b"stored"), true);
                    }
                });
            }
        }
    })
    .await;
    Upstream {
        url,
        connections,
        answered,
    }
}

async fn post_through(refuse: Refuse) -> (reqwest::Response, Upstream) {
    let ca = TestCa::new();
    let upstream = upstream(&ca, refuse).await;
    let gw = azgate_to(&upstream.url, &ca).await;
    let response = client()
        .post(format!("{}/jobs", gw.url))
        .body("payload-1")
        .send()
        .await
        .unwrap();
    (response, upstream)
}

#[tokio::test]
async fn a_post_left_out_by_a_goaway_is_sent_again_on_a_new_connection() {
    let (response, upstream) = post_through(Refuse::FirstConnection).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-azgate-attempts"], "2");
    assert_eq!(response.text().await.unwrap(), "stored");
    assert_eq!(*upstream.answered.lock().unwrap(), vec!["payload-1"]);
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_stream_is_sent_again_on_the_same_connection() {
    let (response, upstream) = post_through(Refuse::FirstStream).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-azgate-attempts"], "2");
    assert_eq!(*upstream.answered.lock().unwrap(), vec!["payload-1"]);
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);
}

/// A burst of `burst` GETs through azgate to an upstream allowing two streams at a time,
/// after `warm_up` requests answered at once. Every request of the burst is answered only
/// once all of them are at the upstream together: one left waiting behind another (or
/// refused for good) and none is answered. Returns how many connections the upstream saw.
async fn burst_past_a_limit_of_two(warm_up: usize, burst: usize) -> usize {
    let ca = TestCa::new();
    let connections = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(AtomicUsize::new(0));
    let all_here = Arc::new(tokio::sync::Notify::new());
    let (c, a, n) = (connections.clone(), arrived.clone(), all_here.clone());
    let mut h2 = h2::server::Builder::new();
    h2.max_concurrent_streams(2);
    let url = h2_upstream_with(&ca, h2, move |_, mut connection| {
        c.fetch_add(1, Ordering::SeqCst);
        let (arrived, all_here) = (a.clone(), n.clone());
        async move {
            while let Some(Ok((request, mut respond))) = connection.accept().await {
                let (arrived, all_here) = (arrived.clone(), all_here.clone());
                tokio::spawn(async move {
                    if request.uri().path() != "/warm-up" {
                        let waiting = all_here.notified();
                        if arrived.fetch_add(1, Ordering::SeqCst) + 1 == burst {
                            all_here.notify_waiters();
                        } else {
                            waiting.await;
                        }
                    }
                    let response = Response::builder().status(200).body(()).unwrap();
                    if let Ok(mut send) = respond.send_response(response, false) {
                        let _ = send.send_data(Bytes::from_static(b"done"), true);
                    }
                });
            }
        }
    })
    .await;
    let gw = azgate_to(&url, &ca).await;
    let client = client();
    for _ in 0..warm_up {
        let response = client.get(format!("{}/warm-up", gw.url)).send().await;
        assert_eq!(response.unwrap().status(), 200);
    }
    let requests = (0..burst).map(|i| {
        let request = client.get(format!("{}/items/{i}", gw.url)).send();
        async move {
            let response = request.await.unwrap();
            // Sent only when there was more than one.
            let attempts = response.headers().get("x-azgate-attempts").cloned();
            (response.status(), attempts, response.text().await.unwrap())
        }
    });
    let answers = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        futures_util::future::join_all(requests),
    )
    .await
    .expect("every request of the burst reached the upstream at once");
    for (status, attempts, text) in answers {
        // One attempt each: none was sent past the limit and refused.
        assert_eq!(
            (status.as_u16(), attempts, text.as_str()),
            (200, None, "done")
        );
    }
    assert_eq!(arrived.load(Ordering::SeqCst), burst);
    connections.load(Ordering::SeqCst)
}

#[tokio::test]
async fn a_cold_burst_beyond_the_upstreams_stream_limit_is_spread_over_connections() {
    assert_eq!(burst_past_a_limit_of_two(0, 12).await, 6);
}

#[tokio::test]
async fn a_burst_beyond_the_limit_of_a_pooled_connection_is_spread_over_new_ones() {
    // The pooled connection takes two; each new one learns the limit before it is shared.
    assert_eq!(burst_past_a_limit_of_two(1, 12).await, 6);
}

/// An HTTP/2 upstream answering every request with `200`, `Content-Length: 5` and, unless
/// the request was HEAD, the five bytes.
async fn length_upstream(ca: &TestCa) -> String {
    h2_upstream(ca, |_, mut connection| async move {
        while let Some(Ok((request, mut respond))) = connection.accept().await {
            let head = request.method() == http::Method::HEAD;
            let response = Response::builder()
                .status(200)
                .header("content-length", "5")
                .body(())
                .unwrap();
            if let Ok(mut send) = respond.send_response(response, head)
                && !head
            {
                let _ = send.send_data(Bytes::from_static(b"hello"), true);
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_head_answer_from_an_http2_upstream_keeps_its_length_and_the_connection() {
    let ca = TestCa::new();
    let url = length_upstream(&ca).await;
    let gw = azgate_to(&url, &ca).await;
    let client = client();
    for _ in 0..2 {
        let head = client
            .head(format!("{}/blob", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["content-length"], "5");
        assert_eq!(head.bytes().await.unwrap().len(), 0);
    }
    let get = client.get(format!("{}/blob", gw.url)).send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.text().await.unwrap(), "hello");
}
