//! Graceful shutdown: stop accepting, let in-flight requests finish within the grace
//! period, report draining on /readyz, and give up on requests that outlive the grace.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::Response;
use support::{Azgate, MockUpstream, client, full, status};
use tokio::sync::{Notify, mpsc};

/// An upstream that reports each request and answers only when `release` is notified.
async fn held_upstream() -> (MockUpstream, mpsc::UnboundedReceiver<()>, Arc<Notify>) {
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let upstream = {
        let release = release.clone();
        MockUpstream::start(move |_req| {
            let release = release.clone();
            let arrived_tx = arrived_tx.clone();
            async move {
                let _ = arrived_tx.send(());
                release.notified().await;
                Response::new(full("finished after shutdown began"))
            }
        })
        .await
    };
    (upstream, arrived, release)
}

async fn refuses_connections(addr: std::net::SocketAddr) -> bool {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn in_flight_request_finishes_after_shutdown_begins() {
    let (upstream, mut arrived, release) = held_upstream().await;
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\n",
        upstream.url
    ))
    .await;
    let admin = gw.admin_url.clone().unwrap();
    let c = client();
    assert_eq!(status(c.get(format!("{admin}/readyz"))).await, 200);

    let in_flight = tokio::spawn(c.get(format!("{}/slow", gw.url)).send());
    arrived.recv().await.unwrap();

    let addr = gw.addr;
    gw.shutdown();
    assert!(
        refuses_connections(addr).await,
        "still accepting after shutdown"
    );
    let ready = c.get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("draining"));
    assert_eq!(status(c.get(format!("{admin}/healthz"))).await, 200);

    release.notify_one();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "finished after shutdown began"
    );
    tokio::time::timeout(Duration::from_secs(5), gw.stop())
        .await
        .expect("drained once the request finished");
}

#[tokio::test]
async fn requests_outliving_the_grace_period_are_cut_off() {
    let (upstream, mut arrived, _release) = held_upstream().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"300ms\"\n[admin]\nlisten = \"\"\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"{}\"\n",
        upstream.url
    );
    let gw = Azgate::start_with(&text, std::path::Path::new("."), &Default::default()).await;
    assert!(gw.admin_url.is_none());
    let in_flight = tokio::spawn(client().get(format!("{}/never", gw.url)).send());
    arrived.recv().await.unwrap();

    let started = std::time::Instant::now();
    gw.stop().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        in_flight.await.unwrap().is_err(),
        "the cut-off request must fail, not succeed"
    );
}
