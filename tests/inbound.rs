//! Inbound security: who may use the proxy (keys, address allow-list, trusted proxies, the
//! non-loopback refusal), hostile requests written as raw bytes (never forwarded), body
//! limits and slow clients, and what the response side passes through.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use http::Response;
use support::scripted::{Scripted, reply};
use support::{Azgate, MockUpstream, client, full, status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY_A: &str = "key-a-0123456789abcdef";
const KEY_B: &str = "key-b-0123456789abcdef";

/// Writes `request` on a fresh connection and returns the status and body of the answer
/// (0 when the connection closed without one).
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if complete(&buf) {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let _ = read;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A whole response with a Content-Length body has arrived.
fn complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse::<usize>().ok());
    length.is_some_and(|n| body.len() >= n)
}

#[tokio::test]
async fn hostile_requests_are_refused_and_never_forwarded() {
    let upstream = Scripted::start(vec![reply(200).body("forwarded")]).await;
    let gw = Azgate::start(&format!(
        r#"
        [[routes]]
        prefix = "/vi"
        upstream = "{u}"
        [[routes]]
        prefix = "/arm"
        upstream = "{u}"
        [[routes]]
        prefix = "/small"
        upstream = "{u}"
        max_body = "1KiB"
        "#,
        u = upstream.url
    ))
    .await;
    let huge_path = format!(
        "GET /vi/{} HTTP/1.1\r\nHost: a\r\n\r\n",
        "x".repeat(1 << 20)
    );
    let huge_header = format!(
        "GET /vi/x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "y".repeat(1 << 20)
    );
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("dot segments", b"GET /vi/../arm/x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400]),
        ("single dot", b"GET /vi/./x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400]),
        ("encoded dots", b"GET /vi/%2e%2e/arm/x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400]),
        ("mixed encoded dots", b"GET /vi/%2E./arm/x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400]),
        ("encoded slash", b"GET /vi/a%2f..%2farm HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400]),
        ("encoded backslash", b"GET /vi/a%5cb HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), &[400]),
        ("absolute form, other host", b"GET http://evil.example/vi/x HTTP/1.1\r\nHost: azgate\r\n\r\n".to_vec(), &[400]),
        ("CONNECT", b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n".to_vec(), &[400]),
        (
            "websocket upgrade",
            b"GET /vi/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "conflicting content-length",
            b"POST /vi/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde".to_vec(),
            &[400],
        ),
        (
            "invalid chunk size",
            b"POST /vi/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_vec(),
            &[400],
        ),
        ("obs-fold", b"GET /vi/x HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n".to_vec(), &[400]),
        ("NUL in a header value", b"GET /vi/x HTTP/1.1\r\nHost: a\r\nX-Nul: a\0b\r\n\r\n".to_vec(), &[400]),
        ("CR in a header value", b"GET /vi/x HTTP/1.1\r\nHost: a\r\nX-Cr: a\rb\r\n\r\n".to_vec(), &[400]),
        ("oversized request line", huge_path.into_bytes(), &[414, 431]),
        ("oversized headers", huge_header.into_bytes(), &[431]),
        (
            "declared body over max_body",
            b"POST /small/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2048\r\n\r\n".to_vec(),
            &[413],
        ),
        (
            "chunked body over max_body",
            format!("POST /small/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{}\r\n0\r\n\r\n", "z".repeat(2048)).into_bytes(),
            &[413],
        ),
    ];
    for (name, request, expected) in &cases {
        let (status, body) = raw(gw.addr, request).await;
        assert!(expected.contains(&status), "{name}: got {status} {body}");
        // azgate's own refusals are JSON; the parser's own 400/414/431 come from hyper.
        if body.starts_with('{') {
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(json["error"]["code"].is_string(), "{name}: {body}");
        }
        assert_eq!(upstream.count(), 0, "{name} reached the upstream");
    }
    // Positive controls: the same connection shapes done right are forwarded.
    let (status, _) = raw(
        gw.addr,
        b"GET http://azgate/vi/ok HTTP/1.1\r\nHost: azgate\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = raw(gw.addr, b"GET /vi/ok HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n").await;
    assert_eq!(
        status, 200,
        "curl --http2 upgrade requests are answered in HTTP/1.1"
    );
    assert_eq!(upstream.count(), 2);
}

/// hyper, which parses requests before azgate sees them, applies RFC 9112 §6.3 to a request
/// with both Content-Length and Transfer-Encoding: the chunked framing wins, Content-Length
/// is dropped, and the connection is closed after the response. So the classic smuggling
/// shape cannot slip a second request past azgate, and the upstream never sees both headers.
#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_request() {
    let upstream = Scripted::start(vec![reply(200).body("first")]).await;
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\n",
        upstream.url
    ))
    .await;
    for order in [
        "Content-Length: 6\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 6",
    ] {
        let request = format!(
            "POST /first HTTP/1.1\r\nHost: a\r\n{order}\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
        );
        let (status, _) = raw(gw.addr, request.as_bytes()).await;
        assert_eq!(status, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = upstream.seen();
    assert!(
        seen.iter().all(|s| s.path_and_query == "/first"),
        "{seen:?}"
    );
    for s in &seen {
        assert!(
            s.headers.get("content-length").is_none_or(|v| v == "0"),
            "{:?}",
            s.headers
        );
        assert!(s.body.is_empty());
    }
}

#[tokio::test]
async fn encoded_slashes_pass_only_where_the_route_allows_them() {
    let upstream = MockUpstream::echo().await;
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/enc\"\nupstream = \"{u}\"\nallow_encoded_slash = true\n[[routes]]\nprefix = \"/plain\"\nupstream = \"{u}\"\n",
        u = upstream.url
    ))
    .await;
    let c = client();
    let echo = support::json(
        c.get(format!("{}/enc/blobs/a%2Fb", gw.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(echo["path"], "/blobs/a%2Fb");
    let refused = c
        .get(format!("{}/plain/blobs/a%2Fb", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.headers()["x-azgate-error"], "bad_request");
    // (Raw bytes: an HTTP client library would resolve the dots before sending.)
    let (status, _) = raw(gw.addr, b"GET /enc/x/%2e%2e/y HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(
        status, 400,
        "dot segments are refused even where slashes may be encoded"
    );
}

#[tokio::test]
async fn inbound_keys_are_required_checked_and_never_forwarded() {
    let upstream = MockUpstream::echo().await;
    let gw = Azgate::start(&format!(
        r#"
        [server.inbound]
        api_keys = ["{KEY_A}", "{KEY_B}"]
        [[routes]]
        prefix = "/open"
        upstream = "{u}"
        [[routes]]
        prefix = "/only-a"
        upstream = "{u}"
        api_keys = ["{KEY_A}"]
        "#,
        u = upstream.url
    ))
    .await;
    let c = client();
    let missing = c.get(format!("{}/open/x", gw.url)).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["x-azgate-error"], "unauthorized");
    assert!(
        missing.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("x-azgate-key")
    );
    let wrong = c
        .get(format!("{}/open/x", gw.url))
        .header("x-azgate-key", "key-a-0123456789abcdeX")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let text = wrong.text().await.unwrap();
    assert!(!text.contains("key-a-0123456789abcde"), "{text}");

    for key in [KEY_A, KEY_B] {
        let ok = c
            .get(format!("{}/open/x", gw.url))
            .header("x-azgate-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        let echo = support::json(ok).await;
        assert!(
            support::seen(&echo, "x-azgate-key").is_empty(),
            "the key reached the upstream"
        );
    }
    let a = c
        .get(format!("{}/only-a/x", gw.url))
        .header("x-azgate-key", KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 200);
    let b = c
        .get(format!("{}/only-a/x", gw.url))
        .header("x-azgate-key", KEY_B)
        .send()
        .await
        .unwrap();
    assert_eq!(b.status(), 403);
    assert_eq!(b.headers()["x-azgate-error"], "forbidden");
}

#[tokio::test]
async fn the_address_allow_list_and_trusted_proxies() {
    let upstream = MockUpstream::echo().await;
    let url = upstream.url.clone();
    let start = |inbound: &str| {
        let text = format!(
            "[server.inbound]\n{inbound}\n[[routes]]\nprefix = \"/\"\nupstream = \"{url}\"\n"
        );
        async move { Azgate::start(&text).await }
    };
    let c = client();

    let gw = start("allow = [\"10.0.0.0/8\", \"fd00::/8\"]").await;
    let response = c.get(format!("{}/x", gw.url)).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(response.headers()["x-azgate-error"], "forbidden");

    let gw = start("allow = [\"127.0.0.0/8\"]").await;
    assert_eq!(status(c.get(format!("{}/x", gw.url))).await, 200);

    // Behind a trusted proxy (here: loopback), the forwarded client address is checked.
    let gw = start("allow = [\"203.0.113.0/24\"]\ntrusted_proxies = [\"127.0.0.1\"]").await;
    let via = |xff: &'static str| {
        c.get(format!("{}/x", gw.url))
            .header("x-forwarded-for", xff)
            .send()
    };
    assert_eq!(via("203.0.113.7").await.unwrap().status(), 200);
    assert_eq!(via("198.51.100.1").await.unwrap().status(), 403);
    assert_eq!(
        via("203.0.113.7, 198.51.100.1").await.unwrap().status(),
        403,
        "the right-most untrusted entry counts"
    );
    assert_eq!(status(c.get(format!("{}/x", gw.url))).await, 403);

    // Without trusted proxies the header cannot be used to get in.
    let gw = start("allow = [\"203.0.113.0/24\"]").await;
    let response = c
        .get(format!("{}/x", gw.url))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn ipv6_clients_are_matched_against_ipv6_ranges() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    }
    let upstream = MockUpstream::echo().await;
    let text = format!(
        "[server]\nlisten = \"[::1]:0\"\n[admin]\nlisten = \"\"\n[server.inbound]\nallow = [\"::1/128\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\n",
        upstream.url
    );
    let gw = Azgate::start_with(&text, std::path::Path::new("."), &HashMap::new()).await;
    assert_eq!(status(client().get(format!("{}/x", gw.url))).await, 200);
    let text = text.replace("::1/128", "fd00::/8");
    let gw = Azgate::start_with(&text, std::path::Path::new("."), &HashMap::new()).await;
    assert_eq!(status(client().get(format!("{}/x", gw.url))).await, 403);
}

#[test]
fn a_public_listener_needs_an_inbound_control() {
    support::init();
    let parse = |server: &str| {
        azgate::config::parse(
            &format!("[server]\n{server}\n"),
            "t.toml",
            std::path::Path::new("."),
            &|_| None,
        )
    };
    let err = parse("listen = \"0.0.0.0:8080\"").unwrap_err().to_string();
    for part in [
        "server.listen",
        "0.0.0.0:8080",
        "api_keys",
        "allow",
        "client_ca",
        "allow_unauthenticated",
    ] {
        assert!(err.contains(part), "{part} missing: {err}");
    }
    assert!(parse("listen = \"[::]:8080\"").is_err());
    assert!(parse("listen = \"0.0.0.0:8080\"\nallow_unauthenticated = true").is_ok());
    assert!(
        parse(&format!(
            "listen = \"0.0.0.0:8080\"\n[server.inbound]\napi_keys = [\"{KEY_A}\"]"
        ))
        .is_ok()
    );
    assert!(parse("listen = \"0.0.0.0:8080\"\n[server.inbound]\nallow = [\"10.0.0.0/8\"]").is_ok());
    assert!(parse("listen = \"127.0.0.1:8080\"").is_ok());
    assert!(parse("listen = \"[::1]:8080\"").is_ok());
    let short = parse("[server.inbound]\napi_keys = [\"short\"]")
        .unwrap_err()
        .to_string();
    assert!(
        short.contains("server.inbound.api_keys[0]: too short") && !short.contains("\"short\""),
        "{short}"
    );
    let bad = parse("[server.inbound]\nallow = [\"10.0.0.0/33\", \"nope\"]")
        .unwrap_err()
        .to_string();
    assert!(
        bad.contains("allow[0]") && bad.contains("allow[1]"),
        "{bad}"
    );
}

#[tokio::test]
async fn a_client_that_stalls_is_cut_off() {
    let upstream = Scripted::start(vec![reply(200)]).await;
    let text = support::config_text(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\n",
        upstream.url
    ))
    .replace(
        "[server]\n",
        "[server]\nheader_timeout = \"300ms\"\nbody_idle_timeout = \"300ms\"\n",
    );
    let gw = Azgate::start_with(&text, std::path::Path::new("."), &HashMap::new()).await;

    // Headers that never finish: the connection is closed.
    let started = std::time::Instant::now();
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "slowloris connection kept open"
    );

    // A client that connects and sends nothing at all is closed too.
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut buf)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a silent connection kept open"
    );

    // A body that stops half way: 408 request_timeout, nothing forwarded.
    let (status, body) = raw(
        gw.addr,
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly-part-of-it",
    )
    .await;
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("request_timeout"), "{body}");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn a_body_over_max_body_is_stopped_while_it_streams() {
    let upstream = MockUpstream::start(|request| async move {
        use http_body_util::BodyExt;
        let got = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().len());
        Response::new(full(format!("{got:?}")))
    })
    .await;
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/up\"\nupstream = \"{}\"\nmax_body = \"3MiB\"\n[routes.retry]\nbuffer = \"1MiB\"\n",
        upstream.url
    ))
    .await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![1u8; 512 * 1024])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = client()
        .put(format!("{}/up/big", gw.url))
        .body(body)
        .send()
        .await;
    match response {
        Ok(response) => {
            assert_eq!(response.status(), 413);
            assert_eq!(response.headers()["x-azgate-error"], "payload_too_large");
        }
        // The server may close while the client is still writing the rest.
        Err(err) => assert!(err.is_request() || err.is_body(), "{err}"),
    }
}

#[tokio::test]
async fn cookies_and_challenges_pass_through_and_credentials_are_not_echoed() {
    let upstream = MockUpstream::start(|request| async move {
        let key = request
            .headers()
            .get("ocp-apim-subscription-key")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        Response::builder()
            .header("set-cookie", "a=1; Path=/; HttpOnly")
            .header("set-cookie", "b=2; Path=/")
            .header("www-authenticate", "Bearer realm=\"upstream\"")
            .header("x-debug-echo", format!("you sent {key}"))
            .body(full("ok"))
            .unwrap()
    })
    .await;
    let gw = Azgate::start(&format!(
        "[credentials.k]\ntype = \"subscription_key\"\nkey = \"INJECTED-KEY-123456\"\n[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\ncredential = \"k\"\n",
        upstream.url
    ))
    .await;
    let response = client().get(format!("{}/x", gw.url)).send().await.unwrap();
    let cookies: Vec<_> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(cookies, vec!["a=1; Path=/; HttpOnly", "b=2; Path=/"]);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"upstream\""
    );
    assert!(
        response.headers().get("x-debug-echo").is_none(),
        "the injected key was echoed to the client"
    );
    assert!(!format!("{:?}", response.headers()).contains("INJECTED-KEY"));
}

/// A raw HTTP/1.1 GET of `path` carrying `headers` (name, value length) of filler.
fn request_with_headers(path: &str, headers: &[(&str, usize)]) -> Vec<u8> {
    let mut out = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n").into_bytes();
    for (name, len) in headers {
        out.extend_from_slice(format!("{name}: {}\r\n", "v".repeat(*len)).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

// A current-thread runtime keeps every task on this thread, under the scoped subscriber.
#[tokio::test(flavor = "current_thread")]
async fn oversized_request_heads_get_431_are_logged_counted_and_never_forwarded() {
    let capture = support::logs::LogCapture::default();
    let _guard = capture.install_json(tracing::Level::INFO);
    let upstream = Scripted::start(vec![reply(200).body("forwarded")]).await;
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\n",
        upstream.url
    ))
    .await;
    let big = "v".repeat(100_000);

    // Under the default 64 KiB: forwarded.
    let (code, body) = raw(gw.addr, &request_with_headers("/", &[("x-fill", 60_000)])).await;
    assert_eq!((code, body.as_str()), (200, "forwarded"));

    // One 100,000-byte header, over HTTP/1.1 and HTTP/2: azgate's own JSON 431.
    for client in [client(), support::h2c_client()] {
        let response = client
            .get(format!("{}/big", gw.url))
            .header("x-big", &big)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 431);
        assert_eq!(response.headers()["x-azgate-error"], "headers_too_large");
        let error = support::json(response).await;
        assert_eq!(error["error"]["code"], "headers_too_large");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("65536"), "{message}");
    }

    // 60 headers of 8 KB (480 KB) are past what the parser reads: hyper answers 431.
    let many: Vec<(&str, usize)> = (0..60).map(|_| ("x-fill", 8192)).collect();
    let (code, _) = raw(gw.addr, &request_with_headers("/", &many)).await;
    assert_eq!(code, 431);
    // Over HTTP/2 hyper answers such a stream 431 itself, with no body; a head sent in
    // very many CONTINUATION frames closes the connection instead (GOAWAY). azgate never
    // sees either.
    let response = support::h2c_client()
        .get(format!("{}/big", gw.url))
        .header("x-big", "v".repeat(150_000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    assert!(response.headers().get("x-azgate-error").is_none());
    assert_eq!(response.bytes().await.unwrap().len(), 0);
    let mut many_frames = support::h2c_client().get(format!("{}/many", gw.url));
    for _ in 0..60 {
        many_frames = many_frames.header("x-fill", "v".repeat(8192));
    }
    let refused = many_frames.send().await.unwrap_err();
    assert!(
        format!("{refused:?}").contains("ENHANCE_YOUR_CALM"),
        "{refused:?}"
    );

    assert_eq!(
        upstream.count(),
        1,
        "only the request under the limit went upstream"
    );
    // Access lines and metrics are written when each response body ends.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let server = gw.into_server();
    let metrics = support::metrics::samples(&server.telemetry.encode());
    let requests = |method, status| {
        let labels = [("route", "none"), ("method", method), ("status", status)];
        support::metrics::get(&metrics, "azgate_requests_total", &labels)
    };
    assert_eq!(requests("GET", "431"), 2.0);
    assert_eq!(
        requests("other", "431"),
        1.0,
        "hyper's own 431 is counted too"
    );
    server.shutdown();
    server.wait().await;

    let events = capture.events();
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e["target"] == "azgate::access" && e["status"] == 431)
        .collect();
    assert_eq!(refused.len(), 2, "{}", capture.text());
    for event in refused {
        assert_eq!(event["error"], "headers_too_large");
        assert_eq!(event["path"], "/big");
    }
    let parser = events
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("request heads over the HTTP parser's limit"))
        })
        .count();
    assert_eq!(parser, 1, "{}", capture.text());
    assert!(
        !capture.text().contains(&big[..1000]),
        "header values are not logged"
    );
}

#[tokio::test]
async fn max_header_bytes_sets_the_limit() {
    let upstream = Scripted::start(vec![reply(200).body("forwarded")]).await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_header_bytes = \"16KiB\"\n[admin]\nlisten = \"\"\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"{}\"\n",
        upstream.url
    );
    let gw = Azgate::start_with(&text, std::path::Path::new("."), &HashMap::new()).await;
    let (code, _) = raw(gw.addr, &request_with_headers("/", &[("x-fill", 12_000)])).await;
    assert_eq!(code, 200);
    let (code, body) = raw(gw.addr, &request_with_headers("/", &[("x-fill", 20_000)])).await;
    assert_eq!(code, 431);
    assert!(body.contains("\"headers_too_large\""), "{body}");
    assert!(body.contains("16384"), "{body}");
    // Past twice the limit the parser stops reading: memory per connection stays bounded.
    let (code, body) = raw(gw.addr, &request_with_headers("/", &[("x-fill", 40_000)])).await;
    assert_eq!(code, 431);
    assert!(!body.contains("headers_too_large"), "{body}");
    assert_eq!(upstream.count(), 1);
    gw.stop().await;

    for bad in ["100", "2MiB", "lots"] {
        let text = format!("[server]\nmax_header_bytes = \"{bad}\"\n");
        let err = azgate::config::parse(&text, "t.toml", std::path::Path::new("."), &|_| None)
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"))
            .to_string();
        assert!(err.contains("t.toml: server.max_header_bytes: "), "{err}");
    }
}

#[tokio::test]
async fn the_admin_listener_reads_bounded_request_heads() {
    let gw = Azgate::start("").await;
    let admin: std::net::SocketAddr = gw.admin_url.as_deref().unwrap()["http://".len()..]
        .parse()
        .unwrap();
    let healthz = |fill: usize| request_with_headers("/healthz", &[("x-fill", fill)]);
    assert_eq!(raw(admin, &healthz(16_000)).await.0, 200);
    assert_eq!(raw(admin, &healthz(100_000)).await.0, 431);
    gw.stop().await;
}
