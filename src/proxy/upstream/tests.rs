//! The pool against upstreams on 127.0.0.1 that count their connections.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::{Upstream, UpstreamBody, UpstreamClient};
use crate::config::CaRoots;
use crate::proxy::body;

/// The size of `/big`'s answer: more than a stream window.
const BIG: usize = 4 << 20;

#[derive(Clone, Copy, PartialEq)]
enum Offer {
    Plain,
    /// TLS with ALPN `h2` then `http/1.1`.
    H2,
    /// TLS with ALPN `http/1.1` only.
    Http1,
}

/// An upstream answering "HTTP/x host uri" and counting connections opened and closed.
/// `/hold` answers once the test releases it.
struct Mock {
    url: String,
    opened: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    ca: Option<CaRoots>,
    holding: Arc<AtomicUsize>,
    release: Arc<Semaphore>,
}

async fn mock(offer: Offer, close_after: Option<Duration>) -> Mock {
    mock_with(offer, close_after, None, None).await
}

/// With `max_streams`, HTTP/2 connections allow that many streams at a time; with `gate`,
/// each connection after the first waits for one of its permits before its handshakes.
async fn mock_with(
    offer: Offer,
    close_after: Option<Duration>,
    max_streams: Option<u32>,
    gate: Option<Arc<Semaphore>>,
) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tls, ca) = match offer {
        Offer::Plain => (None, None),
        Offer::H2 | Offer::Http1 => {
            let (config, ca) = tls_server(offer);
            (
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
                Some(ca),
            )
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let host = if tls.is_some() {
        "localhost"
    } else {
        "127.0.0.1"
    };
    let opened = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let holding = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Semaphore::new(0));
    let (o, c) = (opened.clone(), closed.clone());
    let (h, r) = (holding.clone(), release.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let first = o.fetch_add(1, Ordering::SeqCst) == 0;
            let (tls, c, h, r) = (tls.clone(), c.clone(), h.clone(), r.clone());
            let gate = gate.clone().filter(|_| !first);
            tokio::spawn(async move {
                if let Some(gate) = gate {
                    gate.acquire().await.unwrap().forget();
                }
                let service = service_fn(move |request: Request<Incoming>| {
                    let (h, r) = (h.clone(), r.clone());
                    async move {
                        let host = request
                            .headers()
                            .get("host")
                            .map(|h| h.to_str().unwrap_or("?").to_string())
                            .unwrap_or_default();
                        if request.uri().path() == "/big" {
                            let big = Bytes::from(vec![b'x'; BIG]);
                            return Ok::<_, Infallible>(Response::new(Full::new(big)));
                        }
                        if request.uri().path() == "/hold" {
                            h.fetch_add(1, Ordering::SeqCst);
                            r.acquire().await.unwrap().forget();
                        }
                        let text = format!("{:?} {host} {}", request.version(), request.uri());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                    }
                });
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Some(max) = max_streams {
                    builder.http2().max_concurrent_streams(max);
                }
                let serve = async {
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(tcp).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                };
                match close_after {
                    Some(after) => {
                        let _ = tokio::time::timeout(after, serve).await;
                    }
                    None => serve.await,
                }
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Mock {
        url: format!("{scheme}://{host}:{port}"),
        opened,
        closed,
        ca,
        holding,
        release,
    }
}

/// A CA and a `localhost` leaf it signed, offering `offer`'s protocols.
fn tls_server(offer: Offer) -> (rustls::ServerConfig, CaRoots) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    config.alpn_protocols = match offer {
        Offer::H2 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        _ => vec![b"http/1.1".to_vec()],
    };
    let roots = CaRoots {
        path: PathBuf::from("test-ca.pem"),
        certs: Arc::new(vec![CertificateDer::from(ca_cert.der().to_vec())]),
    };
    (config, roots)
}

impl Mock {
    fn upstream(&self) -> Upstream {
        UpstreamClient::new(self.ca.as_ref()).upstream(&self.url.parse().unwrap())
    }

    fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Sends GET `path` and reads the answer to the end.
async fn get(upstream: &Upstream, base: &str, path: &str) -> (Version, String) {
    get_within(upstream, base, path, Duration::from_secs(5)).await
}

/// The same, waiting up to `timeout` for the response headers.
async fn get_within(
    upstream: &Upstream,
    base: &str,
    path: &str,
    timeout: Duration,
) -> (Version, String) {
    let response = send_within(upstream, base, path, timeout).await;
    let version = response.version();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (version, String::from_utf8_lossy(&bytes).into_owned())
}

/// GET `path`, waiting up to `timeout` for the response headers; the body is not read.
async fn send_within(
    upstream: &Upstream,
    base: &str,
    path: &str,
    timeout: Duration,
) -> Response<UpstreamBody> {
    let request = Request::get(format!("{base}{path}"))
        .body(body::empty())
        .unwrap();
    upstream.send(request, timeout, base).await.unwrap()
}

fn pooled(upstream: &Upstream) -> (usize, usize) {
    upstream.pool.as_ref().unwrap().pooled()
}

/// Waits (a few real milliseconds at a time) for the pool to take a connection back.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("not reached in time");
}

#[tokio::test]
async fn http1_requests_take_turns_on_one_connection_in_origin_form_with_host() {
    let mock = mock(Offer::Plain, None).await;
    let upstream = mock.upstream();
    let port = mock.url.rsplit(':').next().unwrap().to_string();
    for i in 0..10 {
        let (version, text) = get(&upstream, &mock.url, &format!("/x/{i}?q=1")).await;
        assert_eq!(version, Version::HTTP_11);
        assert_eq!(text, format!("HTTP/1.1 127.0.0.1:{port} /x/{i}?q=1"));
        until(|| pooled(&upstream) == (1, 0)).await;
    }
    assert_eq!(mock.opened(), 1);
}

#[tokio::test]
async fn a_cold_burst_to_an_h2_upstream_shares_one_connection() {
    let mock = mock(Offer::H2, None).await;
    let upstream = mock.upstream();
    let burst = (0..32).map(|i| {
        let (upstream, url) = (upstream.clone(), mock.url.clone());
        tokio::spawn(async move { get(&upstream, &url, &format!("/b/{i}")).await })
    });
    for (i, answer) in futures_util::future::join_all(burst)
        .await
        .into_iter()
        .enumerate()
    {
        let (version, text) = answer.unwrap();
        assert_eq!(version, Version::HTTP_2);
        assert!(text.ends_with(&format!("/b/{i}")), "{text}");
    }
    assert_eq!(mock.opened(), 1);
    assert_eq!(pooled(&upstream), (0, 1));
}

#[tokio::test]
async fn an_https_upstream_without_h2_gets_pooled_http1_connections() {
    let mock = mock(Offer::Http1, None).await;
    let upstream = mock.upstream();
    let burst = (0..4).map(|i| {
        let (upstream, url) = (upstream.clone(), mock.url.clone());
        tokio::spawn(async move { get(&upstream, &url, &format!("/b/{i}")).await })
    });
    for answer in futures_util::future::join_all(burst).await {
        assert_eq!(answer.unwrap().0, Version::HTTP_11);
    }
    until(|| pooled(&upstream).0 == mock.opened()).await;
    let before = mock.opened();
    assert!(before <= 4, "{before} connections for 4 requests");
    for _ in 0..5 {
        let (_, text) = get(&upstream, &mock.url, "/again").await;
        assert!(text.starts_with("HTTP/1.1 localhost:"), "{text}");
    }
    assert_eq!(
        mock.opened(),
        before,
        "no new connection for sequential requests"
    );
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
    let mock = mock(Offer::Plain, Some(Duration::from_millis(100))).await;
    let upstream = mock.upstream();
    get(&upstream, &mock.url, "/one").await;
    until(|| mock.closed() == 1).await;
    let (_, text) = get(&upstream, &mock.url, "/two").await;
    assert!(text.ends_with("/two"));
    assert_eq!(mock.opened(), 2);
}

#[tokio::test]
async fn an_http1_connection_is_pooled_as_soon_as_its_finished_body_is_dropped() {
    let mock = mock(Offer::Plain, None).await;
    let upstream = mock.upstream();
    for i in 0..20 {
        let response = send_within(
            &upstream,
            &mock.url,
            &format!("/n/{i}"),
            Duration::from_secs(5),
        )
        .await;
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
        assert_eq!(pooled(&upstream), (0, 0), "lent while its body lives");
        drop(body);
        // No task in between: the connection is back before anything else runs.
        assert_eq!(pooled(&upstream), (1, 0), "request {i}");
    }
    assert_eq!(mock.opened(), 1);
}

#[tokio::test]
async fn a_response_dropped_unread_leaves_its_connection_usable() {
    let mock = mock(Offer::Plain, None).await;
    let upstream = mock.upstream();
    for i in 0..5 {
        let response = send_within(
            &upstream,
            &mock.url,
            &format!("/unread/{i}"),
            Duration::from_secs(5),
        )
        .await;
        drop(response);
        until(|| pooled(&upstream) == (1, 0)).await;
    }
    let (_, text) = get(&upstream, &mock.url, "/read").await;
    assert!(text.ends_with("/read"), "{text}");
    assert_eq!(mock.opened(), 1, "one connection throughout");
    // A body abandoned half-way (4 MiB, one frame read) closes its connection; the next
    // request opens another.
    let response = send_within(&upstream, &mock.url, "/big", Duration::from_secs(5)).await;
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    until(|| mock.closed() == 1).await;
    assert_eq!(pooled(&upstream), (0, 0));
    let (_, text) = get(&upstream, &mock.url, "/after").await;
    assert!(text.ends_with("/after"), "{text}");
    assert_eq!(mock.opened(), 2);
}

async fn idle_connection_closes_after_the_idle_timeout(offer: Offer) {
    let mock = mock(offer, None).await;
    let upstream = mock.upstream();
    get(&upstream, &mock.url, "/one").await;
    let pooled_one = if offer == Offer::H2 { (0, 1) } else { (1, 0) };
    until(|| pooled(&upstream) == pooled_one).await;
    // Paused only now: with sockets in flight, a paused clock would jump ahead.
    // The reaper started with it, so it goes at the end of the range, after 55 s.
    tokio::time::pause();
    tokio::time::sleep(Duration::from_secs(54)).await;
    assert_eq!(pooled(&upstream), pooled_one, "still pooled after 54 s");
    assert_eq!(mock.closed(), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pooled(&upstream), (0, 0), "gone after 56 s");
    tokio::time::resume();
    until(|| mock.closed() == 1).await;
    // The next request opens a new connection.
    get(&upstream, &mock.url, "/two").await;
    assert_eq!(mock.opened(), 2);
}

#[tokio::test]
async fn an_idle_http1_connection_closes_after_the_idle_timeout() {
    idle_connection_closes_after_the_idle_timeout(Offer::Plain).await;
}

#[tokio::test]
async fn an_idle_h2_connection_closes_after_the_idle_timeout() {
    idle_connection_closes_after_the_idle_timeout(Offer::H2).await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_connect_error_naming_the_step() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let upstream = UpstreamClient::new(None).upstream(&url.parse().unwrap());
    let request = Request::get(format!("{url}/x"))
        .body(body::empty())
        .unwrap();
    let err = upstream
        .send(request, Duration::from_secs(5), &url)
        .await
        .unwrap_err();
    assert!(
        err.error.to_string().contains("tcp connect error"),
        "{}",
        err.error
    );
}

#[tokio::test]
async fn responses_nobody_reads_do_not_stall_the_shared_h2_connection() {
    let mock = mock(Offer::H2, None).await;
    let upstream = mock.upstream();
    // Slow clients: their answers arrive and are not read.
    let mut unread = Vec::new();
    for _ in 0..8 {
        let request = Request::get(format!("{}/big", mock.url))
            .body(body::empty())
            .unwrap();
        unread.push(
            upstream
                .send(request, Duration::from_secs(5), &mock.url)
                .await
                .unwrap(),
        );
    }
    // Give the upstream time to fill every window it may.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = tokio::time::timeout(Duration::from_secs(3), get(&upstream, &mock.url, "/small"))
        .await
        .expect("a small answer gets through beside 8 unread big ones");
    assert_eq!(answer.0, Version::HTTP_2);
    assert_eq!(mock.opened(), 1);
    drop(unread);
}

#[tokio::test(start_paused = true)]
async fn a_connect_nobody_answers_gives_up_after_the_connect_timeout() {
    // A listener whose accept queue is full drops further SYNs, as a blackholed address
    // does.
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(tcp)) =
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await
        {
            fillers.push(tcp);
        }
    }
    let url = format!("http://{addr}");
    let upstream = UpstreamClient::new(None).upstream(&url.parse().unwrap());
    let started = tokio::time::Instant::now();
    let request = Request::get(format!("{url}/x"))
        .body(body::empty())
        .unwrap();
    let err = upstream
        .send(request, Duration::from_secs(60), &url)
        .await
        .unwrap_err();
    assert!(
        err.error.to_string().contains("did not answer within 10s"),
        "{}",
        err.error
    );
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test]
async fn requests_beyond_the_upstreams_stream_limit_open_another_h2_connection() {
    let mock = mock_with(Offer::H2, None, Some(2), None).await;
    let upstream = mock.upstream();
    let mut held = Vec::new();
    for _ in 0..2 {
        let (upstream, base) = (upstream.clone(), mock.url.clone());
        held.push(tokio::spawn(
            async move { get(&upstream, &base, "/hold").await },
        ));
    }
    until(|| mock.holding.load(Ordering::SeqCst) == 2).await;
    assert_eq!(
        mock.opened(),
        1,
        "both held requests share the first connection"
    );
    // The first connection has no stream to spare (its limit was read before it was
    // shared): the next request must not wait there.
    let answer = tokio::time::timeout(Duration::from_secs(3), get(&upstream, &mock.url, "/quick"))
        .await
        .expect("answered beside two held streams");
    assert_eq!(answer.0, Version::HTTP_2);
    assert_eq!(mock.opened(), 2);
    mock.release.add_permits(2);
    for held in held {
        assert_eq!(held.await.unwrap().0, Version::HTTP_2);
    }
    // Finished streams are given back: later requests need no third connection.
    for i in 0..6 {
        get(&upstream, &mock.url, &format!("/after/{i}")).await;
    }
    assert_eq!(mock.opened(), 2);
}

#[tokio::test]
async fn an_h2_connection_is_idle_from_the_end_of_its_last_request_not_its_start() {
    let mock = mock(Offer::H2, None).await;
    let upstream = mock.upstream();
    let held = {
        let (upstream, base) = (upstream.clone(), mock.url.clone());
        // Under the paused clock below, the wait for its answer must not time out.
        tokio::spawn(async move {
            get_within(&upstream, &base, "/hold", Duration::from_secs(3600)).await
        })
    };
    until(|| mock.holding.load(Ordering::SeqCst) == 1).await;
    // A request that lasts longer than the idle timeout keeps its connection.
    tokio::time::pause();
    tokio::time::sleep(Duration::from_secs(70)).await;
    assert_eq!(pooled(&upstream), (0, 1), "kept while carrying a request");
    tokio::time::resume();
    mock.release.add_permits(1);
    held.await.unwrap();
    // Idle from here: still pooled 49 s later, gone by 56 s.
    tokio::time::pause();
    tokio::time::sleep(Duration::from_secs(49)).await;
    assert_eq!(
        pooled(&upstream),
        (0, 1),
        "still pooled 49 s after the request ended"
    );
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        pooled(&upstream),
        (0, 0),
        "gone 56 s after the request ended"
    );
    tokio::time::resume();
    assert_eq!(mock.opened(), 1);
}

#[tokio::test]
async fn a_connection_opened_for_a_full_pool_is_kept_though_room_came_back_meanwhile() {
    let gate = Arc::new(Semaphore::new(0));
    let mock = mock_with(Offer::H2, None, Some(2), Some(gate.clone())).await;
    let upstream = mock.upstream();
    let finished = Arc::new(AtomicUsize::new(0));
    let mut held = Vec::new();
    for _ in 0..2 {
        let (upstream, base, finished) = (upstream.clone(), mock.url.clone(), finished.clone());
        held.push(tokio::spawn(async move {
            get(&upstream, &base, "/hold").await;
            finished.fetch_add(1, Ordering::SeqCst);
        }));
    }
    until(|| mock.holding.load(Ordering::SeqCst) == 2).await;
    // The first connection is full: a third request opens a second one, whose handshakes
    // the upstream holds back while one of the first two requests ends.
    let third = {
        let (upstream, base) = (upstream.clone(), mock.url.clone());
        tokio::spawn(async move { get(&upstream, &base, "/third").await })
    };
    until(|| mock.opened() == 2).await;
    mock.release.add_permits(1);
    until(|| finished.load(Ordering::SeqCst) == 1).await;
    gate.add_permits(1);
    assert_eq!(third.await.unwrap().0, Version::HTTP_2);
    assert_eq!(
        pooled(&upstream),
        (0, 2),
        "both connections kept for the next requests"
    );
    mock.release.add_permits(1);
    for held in held {
        held.await.unwrap();
    }
}
