//! The fault suite, process part (issue 15): 100 SIGHUP reloads in 10 s under load (no
//! request fails, no token is fetched again), and SIGTERM during a 512 MiB upload (it
//! finishes within the grace, or is cut cleanly and counted). `max_connections` reached is
//! in tests/tls.rs (`connections_beyond_max_connections_wait_until_one_closes`).

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::Response;
use http_body_util::BodyExt;
use support::binary::Serve;
use support::entra::MockEntra;
use support::{Azgate, MockUpstream, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_sighup_reloads_under_load_fail_no_request_and_fetch_no_token() {
    let entra = MockEntra::start().await;
    let upstream = MockUpstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(
        &path,
        format!(
            r#"
            [server]
            listen = "127.0.0.1:0"
            [admin]
            listen = "127.0.0.1:0"
            [log]
            format = "json"
            {}
            "#,
            support::entra::arm_route(
                &format!("{}/t/oauth2/v2.0/token", entra.url),
                &upstream.url,
                ""
            )
        ),
    )
    .unwrap();
    let serve = Serve::start(&path);
    let url = format!("{}/arm/x", serve.proxy);
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);

    // Four clients in a loop while the reloads come.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop, ok, failed) = (url.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    let fine = match c.get(&url).send().await {
                        Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if fine {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    for _ in 0..100 {
        serve.signal("HUP");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    // Let the last reloads land before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let admin = serve.admin.clone().unwrap();
    let metrics = support::metrics::scrape(&admin).await;
    let reloads = support::metrics::get(
        &metrics,
        "azgate_config_reloads_total",
        &[("outcome", "success")],
    );
    assert!(reloads >= 90.0, "{reloads} reloads of 100 signals");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(ok.load(Ordering::Relaxed) > 100, "too little load: {ok:?}");
    assert_eq!(entra.call_count(), 1, "a reload fetched the token again");
}

/// 512 MiB in 1 MiB chunks, at full speed or paced.
fn upload(pace: Option<Duration>, sent: Arc<AtomicU64>) -> reqwest::Body {
    let chunk = Bytes::from(vec![b'v'; 1 << 20]);
    let stream = futures_util::stream::iter(0..512).then(move |_| {
        let (chunk, sent) = (chunk.clone(), sent.clone());
        async move {
            if let Some(pace) = pace {
                tokio::time::sleep(pace).await;
            }
            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Ok::<_, Infallible>(chunk)
        }
    });
    reqwest::Body::wrap_stream(stream)
}

/// An upstream that counts the bytes it received and answers with the count.
async fn counting_upstream() -> MockUpstream {
    MockUpstream::start(|request| async move {
        let mut body = request.into_body();
        let mut len = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                len += data.len() as u64;
            }
        }
        Response::new(support::full(len.to_string()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_512_mib_upload_lets_it_finish_within_the_grace() {
    let upstream = counting_upstream().await;
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/up\"\nupstream = \"{}\"\n",
        upstream.url
    ))
    .await;
    let sent = Arc::new(AtomicU64::new(0));
    let request = client()
        .put(format!("{}/up/video", gw.url))
        .header("content-length", 512u64 << 20)
        .body(upload(None, sent.clone()))
        .send();
    let response = tokio::spawn(request);
    while sent.load(Ordering::Relaxed) < 64 << 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let server = gw.into_server();
    server.shutdown();
    let response = response.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), (512u64 << 20).to_string());
    let drained = server.wait().await;
    assert_eq!(drained.cut, 0, "nothing cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_slow_512_mib_upload_cuts_it_cleanly_at_the_grace() {
    let upstream = counting_upstream().await;
    let gw = Azgate::start_with(
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"500ms\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [[routes]]\nprefix = \"/up\"\nupstream = \"{}\"\n",
            upstream.url
        ),
        std::path::Path::new("."),
        &Default::default(),
    )
    .await;
    let sent = Arc::new(AtomicU64::new(0));
    // 1 MiB every 20 ms: about 10 s for the whole upload, far past the grace.
    let request = client()
        .put(format!("{}/up/video", gw.url))
        .header("content-length", 512u64 << 20)
        .body(upload(Some(Duration::from_millis(20)), sent.clone()))
        .send();
    let response = tokio::spawn(request);
    while sent.load(Ordering::Relaxed) < 4 << 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let server = gw.into_server();
    let started = Instant::now();
    server.shutdown();
    let drained = server.wait().await;
    let took = started.elapsed();
    assert_eq!(drained.cut, 1, "the upload was cut and counted");
    assert!(took < Duration::from_secs(3), "the drain took {took:?}");
    // The client sees its request fail, not a success.
    if let Ok(r) = response.await.unwrap() {
        assert_ne!(r.status(), 200, "a cut upload answered 200");
    }
    assert!(sent.load(Ordering::Relaxed) < 512 << 20);
}
