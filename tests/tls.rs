//! HTTPS on the proxy listener: HTTP/1.1 and h2 by ALPN, TLS 1.2 and 1.3, mTLS with the
//! client's subject in the access log, certificate rotation without dropping connections,
//! handshakes bounded by `header_timeout`, and `max_connections`.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{StatusCode, Version};
use rustls::ProtocolVersion;
use support::logs::LogCapture;
use support::metrics::{get, samples};
use support::tls::{Authority, ClientOptions, Leaf, TlsFiles, unwrap_pkcs8};
use support::{Azgate, MockUpstream};
use tokio::io::AsyncReadExt;

async fn start(files: &TlsFiles, upstream: &MockUpstream, mtls: bool, extra: &str) -> Azgate {
    Azgate::start_with(
        &files.config(&upstream.url, mtls, extra),
        files.dir.path(),
        &Default::default(),
    )
    .await
}

/// Opens new connections until the server presents `subject`; returns how long it took.
async fn wait_for_subject(client: &ClientOptions, addr: SocketAddr, subject: &str) -> Duration {
    let started = Instant::now();
    loop {
        let session = client.open(addr).await.unwrap();
        if session.server_subject == subject {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "still presenting {} after 8 s",
            session.server_subject
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn https_serves_http1_and_h2_chosen_by_alpn() {
    let upstream = MockUpstream::echo().await;
    let files = TlsFiles::new("azgate-server", None);
    let gw = start(&files, &upstream, false, "").await;

    let mut h1 = files.client().open(gw.addr).await.unwrap();
    assert_eq!(h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(h1.protocol, Some(ProtocolVersion::TLSv1_3));
    assert_eq!(h1.server_subject, "CN=azgate-server");
    let (version, status, body) = h1.get("/things?api-version=1").await.unwrap();
    assert_eq!(
        (version, status),
        (Version::HTTP_11, StatusCode::OK),
        "{body}"
    );
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["path"], "/things");
    assert_eq!(echo["query"], "api-version=1");

    let mut h2 = files.client().h2().open(gw.addr).await.unwrap();
    assert_eq!(h2.alpn.as_deref(), Some(&b"h2"[..]));
    for path in ["/first", "/second"] {
        let (version, status, body) = h2.get(path).await.unwrap();
        assert_eq!(
            (version, status),
            (Version::HTTP_2, StatusCode::OK),
            "{body}"
        );
        let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(echo["path"], path);
    }

    let mut tls12 = files
        .client()
        .h2()
        .tls12_only()
        .open(gw.addr)
        .await
        .unwrap();
    assert_eq!(tls12.protocol, Some(ProtocolVersion::TLSv1_2));
    let (version, status, _) = tls12.get("/over-tls12").await.unwrap();
    assert_eq!((version, status), (Version::HTTP_2, StatusCode::OK));

    // Plain HTTP on the TLS port gets no answer.
    let plain = support::client()
        .get(format!("http://{}/things", gw.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    drop((h1, h2, tls12));
    gw.stop().await;
}

// A current-thread runtime keeps every task on this thread, under the scoped subscriber.
#[tokio::test(flavor = "current_thread")]
async fn mtls_serves_only_clients_of_the_trusted_ca_and_logs_their_subject() {
    let capture = LogCapture::default();
    let _guard = capture.install_json(tracing::Level::DEBUG);
    let clients = Authority::new("azgate test client CA");
    let strangers = Authority::new("someone else's CA");
    let upstream = MockUpstream::echo().await;
    let files = TlsFiles::new("azgate-server", Some(&clients));
    let gw = start(&files, &upstream, true, "").await;

    let good = clients.client("reporting-job", "Contoso Platform");
    for client in [files.client(), files.client().h2().tls12_only()] {
        let mut session = client.identity(&good).open(gw.addr).await.unwrap();
        let (_, status, body) = session.get("/with-cert").await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    let refusals = [
        files.client().refused(gw.addr).await,
        files.client().tls12_only().refused(gw.addr).await,
        files
            .client()
            .identity(&strangers.client("intruder", "Contoso Platform"))
            .refused(gw.addr)
            .await,
        // A certificate the trusted CA never issued, even with a familiar subject.
        files
            .client()
            .identity(&strangers.client("reporting-job", "Contoso Platform"))
            .tls12_only()
            .refused(gw.addr)
            .await,
    ];
    for refusal in &refusals {
        assert!(
            matches!(refusal, rustls::Error::AlertReceived(_)),
            "{refusal:?}"
        );
    }
    let server = gw.into_server();
    let metrics = samples(&server.telemetry.encode());
    server.shutdown();
    server.wait().await;
    for reason in ["no_client_cert", "bad_client_cert"] {
        let labels = [("listener", "proxy"), ("reason", reason)];
        let counted = get(&metrics, "azgate_tls_handshake_failures_total", &labels);
        assert_eq!(counted, 2.0, "{reason}");
    }

    let events = capture.events();
    let access: Vec<_> = events
        .iter()
        .filter(|e| e["target"] == "azgate::access")
        .collect();
    assert_eq!(access.len(), 2, "{}", capture.text());
    for event in access {
        assert_eq!(event["client_cert"], "CN=reporting-job, O=Contoso Platform");
        assert_eq!(event["path"], "/with-cert");
        assert_eq!(event["status"], 200);
    }
    // Refused clients are unauthenticated: no line each, but the first at once and the
    // rest in a summary (here at shutdown), with the reasons.
    let reports: Vec<_> = events
        .iter()
        .filter(|e| {
            e["level"] == "INFO"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("failed TLS handshakes on the proxy listener"))
        })
        .collect();
    assert_eq!(reports.len(), 2, "{}", capture.text());
    let total: u64 = reports.iter().filter_map(|e| e["failures"].as_u64()).sum();
    assert_eq!(total, refusals.len() as u64, "{}", capture.text());
    let last = reports[1]["message"].as_str().unwrap();
    assert!(
        last.contains("no_client_cert") && last.contains("bad_client_cert"),
        "{last}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn rotated_certificates_serve_new_handshakes_while_open_connections_stay() {
    let capture = LogCapture::default();
    let _guard = capture.install_json(tracing::Level::DEBUG);
    let upstream = MockUpstream::echo().await;
    let files = TlsFiles::new("server-1", None);
    let gw = start(&files, &upstream, false, "").await;
    let addr = gw.addr;
    let client = files.client();

    let mut before = client.open(addr).await.unwrap();
    assert_eq!(before.server_subject, "CN=server-1");
    assert_eq!(before.get("/").await.unwrap().1, StatusCode::OK);

    files.write(&files.ca.server("server-2"));
    let took = wait_for_subject(&client, addr, "CN=server-2").await;
    assert!(took < Duration::from_secs(5), "rotation took {took:?}");
    let (_, status, _) = before.get("/opened-before-rotation").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(before.server_subject, "CN=server-1");

    // A half-written certificate: the poll notices, warns, and keeps serving server-2.
    let mark = capture.text().len();
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    capture
        .wait_for(mark, "cannot be used", Duration::from_secs(5))
        .await;
    let mut during = client.open(addr).await.unwrap();
    assert_eq!(during.server_subject, "CN=server-2");
    assert_eq!(during.get("/").await.unwrap().1, StatusCode::OK);
    let warning = &capture.text()[mark..];
    assert!(warning.contains("server.pem"), "{warning}");
    assert!(!warning.contains("PRIVATE KEY"), "{warning}");

    // Reloading on demand (SIGHUP) reports the broken file and keeps server-2 as well.
    let server = gw.into_server();
    let err = server.reload_tls().unwrap_err();
    assert!(err.contains("server.pem"), "{err}");
    assert_eq!(
        client.open(addr).await.unwrap().server_subject,
        "CN=server-2"
    );

    // ...and takes the finished rotation at once, without waiting for the poll.
    files.write(&files.ca.server("server-3"));
    server.reload_tls().unwrap();
    let mut after = client.open(addr).await.unwrap();
    assert_eq!(after.server_subject, "CN=server-3");
    assert_eq!(after.get("/").await.unwrap().1, StatusCode::OK);
    assert_eq!(before.get("/").await.unwrap().1, StatusCode::OK);
    assert!(capture.text().contains("TLS certificate reloaded"));

    drop((before, during, after));
    server.shutdown();
    tokio::time::timeout(Duration::from_secs(5), server.wait())
        .await
        .expect("the server and its certificate poll stop");
}

/// A client's first request often arrives in the same read as its last handshake message,
/// so rustls already holds it decrypted when azgate first looks for a request: it is served
/// at once, not left waiting for bytes in the socket until the header timeout.
#[tokio::test]
async fn a_request_sent_with_the_handshake_s_last_message_is_served_at_once() {
    let upstream = MockUpstream::echo().await;
    let files = TlsFiles::new("azgate-server", None);
    let gw = start(&files, &upstream, false, "header_timeout = \"30s\"").await;
    let started = Instant::now();
    let answer = files
        .client()
        .send_with_finished(
            gw.addr,
            b"GET /early HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\"path\":\"/early\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn server_keys_load_as_pkcs8_pkcs1_and_sec1_rsa_and_ec() {
    let upstream = MockUpstream::echo().await;
    let files = TlsFiles::new("unused", None);
    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let rsa_pkcs1 = unwrap_pkcs8(&rsa.serialize_der(), "RSA PRIVATE KEY");
    let ec = rcgen::KeyPair::generate().unwrap();
    let ec_sec1 = unwrap_pkcs8(&ec.serialize_der(), "EC PRIVATE KEY");
    let rsa = files.ca.server_with_key("rsa", rsa);
    let ec = files.ca.server_with_key("ec", ec);
    let cases = [
        ("RSA PKCS#8", &rsa, rsa.key_pem.clone()),
        ("RSA PKCS#1", &rsa, rsa_pkcs1),
        ("EC PKCS#8", &ec, ec.key_pem.clone()),
        ("EC SEC1", &ec, ec_sec1),
    ];
    for (name, leaf, key_pem) in cases {
        assert!(key_pem.starts_with("-----BEGIN"), "{name}");
        files.write(&Leaf {
            cert_pem: leaf.cert_pem.clone(),
            key_pem,
        });
        let gw = start(&files, &upstream, false, "").await;
        let mut session = files.client().open(gw.addr).await.unwrap();
        let (_, status, _) = session.get("/").await.unwrap();
        assert_eq!(status, StatusCode::OK, "{name}");
        drop(session);
        gw.stop().await;
    }
}

#[tokio::test]
async fn a_key_that_does_not_match_the_certificate_stops_the_start() {
    support::init();
    let upstream = MockUpstream::echo().await;
    let files = TlsFiles::new("server", None);
    let stray = files.ca.server("other");
    let key_body = stray.key_pem.lines().nth(1).unwrap().to_string();
    let text = files.config(&upstream.url, false, "");

    // The config check loads the files as the server does, so it refuses them...
    std::fs::write(&files.key, &stray.key_pem).unwrap();
    let err = azgate::config::parse(&text, "test.toml", files.dir.path(), &|_| None)
        .expect_err("a key that does not match its certificate is a config problem")
        .to_string();
    assert!(
        err.contains("test.toml: server.tls: cannot use the certificate"),
        "{err}"
    );
    assert!(
        err.contains("server.pem") && err.contains("server.key"),
        "{err}"
    );
    assert!(!err.contains(&key_body), "{err}");

    // ...and so does the start, should the files change after the check.
    let good = files.ca.server("server");
    files.write(&good);
    let config = azgate::config::parse(&text, "test.toml", files.dir.path(), &|_| None).unwrap();
    std::fs::write(&files.key, &stray.key_pem).unwrap();
    let env = azgate::env::Env::from_map(Default::default());
    let err = match azgate::server::start(config, env).await {
        Ok(_) => panic!("started with a key that does not match its certificate"),
        Err(err) => err,
    };
    assert!(err.is_config());
    let err = err.to_string();
    assert!(err.contains("[server.tls]"), "{err}");
    assert!(err.contains("server.pem"), "{err}");
    assert!(err.contains("server.key"), "{err}");
    assert!(!err.contains(&key_body), "{err}");
}

#[tokio::test]
async fn a_stalled_handshake_neither_holds_up_others_nor_stays_open() {
    let upstream = MockUpstream::echo().await;
    let files = TlsFiles::new("server", None);
    let gw = start(&files, &upstream, false, "header_timeout = \"1s\"").await;

    let opened = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut session = files.client().open(gw.addr).await.unwrap();
    assert_eq!(session.get("/").await.unwrap().1, StatusCode::OK);
    let served = opened.elapsed();
    assert!(
        served < Duration::from_millis(500),
        "served after {served:?}: the silent handshake held up the accept loop"
    );

    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the silent connection is closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
    drop(session);
    gw.stop().await;
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let upstream = MockUpstream::echo().await;
    let files = TlsFiles::new("server", None);
    // A long header timeout, so idle connections stay open for the whole test.
    let gw = start(
        &files,
        &upstream,
        false,
        "max_connections = 2\nheader_timeout = \"30s\"",
    )
    .await;
    let addr = gw.addr;

    let mut first = files.client().open(addr).await.unwrap();
    assert_eq!(first.get("/first").await.unwrap().1, StatusCode::OK);
    let mut second = files.client().h2().open(addr).await.unwrap();
    assert_eq!(second.get("/second").await.unwrap().1, StatusCode::OK);

    let client = files.client();
    let third = tokio::spawn(async move {
        let mut session = client.open(addr).await.map_err(|e| e.to_string())?;
        session.get("/third").await.map_err(|e| e.to_string())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served while two were open: {:?}",
        third.await
    );

    let closed = Instant::now();
    drop(first);
    let (_, status, _) = tokio::time::timeout(Duration::from_secs(3), third)
        .await
        .expect("the third client is served once a connection closes")
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(closed.elapsed() < Duration::from_secs(3));
    assert_eq!(second.get("/second-again").await.unwrap().1, StatusCode::OK);
    drop(second);
    gw.stop().await;
}

#[tokio::test]
async fn in_flight_https_requests_finish_after_shutdown_begins() {
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let upstream = {
        let release = release.clone();
        MockUpstream::start(move |_req| {
            let (release, arrived_tx) = (release.clone(), arrived_tx.clone());
            async move {
                let _ = arrived_tx.send(());
                release.notified().await;
                http::Response::new(support::full("finished after shutdown began"))
            }
        })
        .await
    };
    let files = TlsFiles::new("server", None);
    let gw = start(&files, &upstream, false, "").await;

    let mut requests = Vec::new();
    for client in [files.client(), files.client().h2()] {
        let mut session = client.open(gw.addr).await.unwrap();
        requests.push(tokio::spawn(async move { session.get("/slow").await }));
        arrived.recv().await.unwrap();
    }
    let server = gw.into_server();
    server.shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.notify_waiters();
    for request in requests {
        let (_, status, body) = request.await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "finished after shutdown began");
    }
    tokio::time::timeout(Duration::from_secs(5), server.wait())
        .await
        .expect("drained once the requests finished");
}

#[tokio::test(flavor = "current_thread")]
async fn rotation_refuses_certificates_outside_their_validity_and_keeps_serving() {
    let capture = LogCapture::default();
    let _guard = capture.install_json(tracing::Level::INFO);
    let upstream = MockUpstream::echo().await;
    let files = TlsFiles::new("server-1", None);
    let gw = start(&files, &upstream, false, "").await;
    let client = files.client();
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);

    // An expired certificate: refused with an error, server-1 stays.
    let mark = capture.text().len();
    files.write(&files.ca.server_valid("expired", now - 30 * day, now - day));
    capture
        .wait_for(mark, "new TLS certificate refused", Duration::from_secs(5))
        .await;
    let refusal = capture.events().into_iter().rev().find(|e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("new TLS certificate refused"))
    });
    let refusal = refusal.unwrap();
    assert_eq!(refusal["level"], "ERROR");
    assert!(
        refusal["message"].as_str().unwrap().contains("CN=expired"),
        "{refusal}"
    );
    let mut session = client.open(gw.addr).await.unwrap();
    assert_eq!(session.server_subject, "CN=server-1");
    assert_eq!(session.get("/").await.unwrap().1, StatusCode::OK);

    // One valid from a few seconds on: refused now, served once valid, with no further
    // change of the files.
    let mark = capture.text().len();
    // Certificates hold whole seconds.
    let whole = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let valid_from = UNIX_EPOCH + Duration::from_secs(whole + 4);
    let not_after = valid_from + 90 * day;
    files.write(&files.ca.server_valid("early", valid_from, not_after));
    capture
        .wait_for(mark, "is not valid before", Duration::from_secs(5))
        .await;
    if SystemTime::now() < valid_from {
        let session = client.open(gw.addr).await.unwrap();
        assert_eq!(session.server_subject, "CN=server-1");
    }
    wait_for_subject(&client, gw.addr, "CN=early").await;
    assert!(SystemTime::now() >= valid_from);

    let server = gw.into_server();
    let metrics = samples(&server.telemetry.encode());
    let expiry = get(
        &metrics,
        "azgate_tls_certificate_expiry_timestamp_seconds",
        &[("listener", "proxy")],
    );
    let want = not_after.duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(expiry, want as f64);
    drop(session);
    server.shutdown();
    server.wait().await;
}

/// `azgate serve` as a child process: its stderr lines arrive on the channel.
struct Serving {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Serving {
    fn start(config: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_azgate"))
            .env_remove("AZGATE_CONFIG")
            .env_remove("RUST_LOG")
            .args(["serve", "-c"])
            .arg(config)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self { child, lines }
    }

    /// Lines until one contains `needle` (returned last); panics after 10 s.
    fn until(&self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no {needle:?} in:\n{}", seen.join("\n")));
            let done = line.contains(needle);
            seen.push(line);
            if done {
                return seen;
            }
        }
    }

    /// The lines written so far.
    fn drain(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// SIGTERM, then every line until the process exits 0.
    fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        assert_eq!(status.code(), Some(0));
        self.lines.iter().collect()
    }
}

/// The address of the listener that logged `listening on https://…`.
fn listening(line: &str) -> SocketAddr {
    let event: serde_json::Value = serde_json::from_str(line).unwrap();
    event["addr"].as_str().unwrap().parse().unwrap()
}

// The real binary, because the flood came from rustls's own `log` output, which only the
// process-wide log bridge `azgate serve` installs turns into log lines.
#[tokio::test]
async fn a_flood_of_refused_handshakes_is_counted_and_summarised_not_logged_per_connection() {
    let files = TlsFiles::new("server", None);
    let config = files.dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n\
         [server.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [admin.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n\
         [log]\nformat = \"json\"\nlevel = \"info\"\n",
    )
    .unwrap();
    let serving = Serving::start(&config);
    let proxy = listening(serving.until("proxy listening on https://").last().unwrap());
    let admin = listening(serving.until("admin listening on https://").last().unwrap());

    let hello = support::tls::client_hello_with_bad_sni();
    for _ in 0..200 {
        support::tls::send_hello(proxy, &hello).await;
    }
    for _ in 0..20 {
        support::tls::send_hello(admin, &hello).await;
    }
    let mut session = files.client().open(admin).await.unwrap();
    let (_, status, text) = session.get("/metrics").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    drop(session);
    let metrics = samples(&text);
    for (listener, n) in [("proxy", 200.0), ("admin", 20.0)] {
        let labels = [("listener", listener), ("reason", "sni")];
        assert_eq!(
            get(&metrics, "azgate_tls_handshake_failures_total", &labels),
            n,
            "{listener}"
        );
        let expiry = get(
            &metrics,
            "azgate_tls_certificate_expiry_timestamp_seconds",
            &[("listener", listener)],
        );
        // rcgen's default validity runs to the year 4096.
        assert!(expiry > 4_000_000_000.0, "{listener}: {expiry}");
    }

    // 220 refused handshakes: one line per listener so far (the first, at once), none
    // from rustls.
    let during = serving.drain();
    let about_handshakes = |lines: &[String]| -> Vec<serde_json::Value> {
        lines
            .iter()
            .filter(|l| l.contains("SNI") || l.contains("handshake"))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let reported = about_handshakes(&during);
    assert_eq!(reported.len(), 2, "{during:#?}");
    // The rest is summarised within seconds; here at shutdown.
    let after = serving.stop();
    let reported: Vec<_> = reported
        .into_iter()
        .chain(about_handshakes(&after))
        .collect();
    assert!(reported.len() <= 4, "{reported:#?}");
    for (listener, n) in [("proxy", 200), ("admin", 20)] {
        let total: u64 = reported
            .iter()
            .filter(|e| e["listener"] == listener)
            .map(|e| e["failures"].as_u64().unwrap())
            .sum();
        assert_eq!(total, n, "{listener}: {reported:#?}");
    }
    for event in &reported {
        assert_eq!(event["level"], "INFO", "{event}");
        let want = format!("sni {}", event["failures"]);
        assert_eq!(event["reasons"], want.as_str(), "{event}");
    }
}
