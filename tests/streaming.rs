//! Bodies stream through azgate: 256 MiB each way arrive intact, and while the receiving
//! end does not read, the sender can only get a bounded window ahead, which shows azgate
//! holds no copy of the body.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::{Digest, Sha256};
use support::{Azgate, MockUpstream, client};
use tokio::sync::{Notify, mpsc};

const TOTAL: u64 = 256 << 20;
const CHUNK: usize = 64 << 10;
/// Far below TOTAL, far above what socket buffers on two loopback hops and hyper's own
/// buffers can hold.
const MAX_WINDOW: u64 = 64 << 20;

/// Chunk `i` of the deterministic payload: every chunk differs, so reordering or loss
/// changes the digest.
fn chunk(i: u64) -> Bytes {
    let mut data = vec![0u8; CHUNK];
    for (j, word) in data.chunks_mut(8).enumerate() {
        word.copy_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ j as u64).to_le_bytes());
    }
    Bytes::from(data)
}

fn expected_digest() -> String {
    let mut hash = Sha256::new();
    for i in 0..TOTAL / CHUNK as u64 {
        hash.update(chunk(i));
    }
    hex(&hash.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds the payload into a channel of one chunk, counting what the consumer took.
fn produce(sent: Arc<AtomicU64>) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for i in 0..TOTAL / CHUNK as u64 {
            if tx.send(chunk(i)).await.is_err() {
                return;
            }
            sent.fetch_add(CHUNK as u64, Ordering::SeqCst);
        }
    });
    rx
}

/// Waits until `counter` stops moving (the pipe is full), bounded to 20 s.
async fn wait_for_stall(counter: &AtomicU64) -> u64 {
    let mut last = u64::MAX;
    let mut still = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = counter.load(Ordering::SeqCst);
        if now == last {
            still += 1;
            if still == 3 {
                return now;
            }
        } else {
            still = 0;
            last = now;
        }
    }
    panic!(
        "the sender never stalled: {} bytes went through",
        counter.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_256_mib_streams_through() {
    let go = Arc::new(Notify::new());
    let upstream = {
        let go = go.clone();
        MockUpstream::start(move |request| {
            let go = go.clone();
            async move {
                go.notified().await;
                let mut body = request.into_body();
                let mut hash = Sha256::new();
                let mut len = 0u64;
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.expect("upload frame").into_data() {
                        len += data.len() as u64;
                        hash.update(&data);
                    }
                }
                let json = serde_json::json!({ "len": len, "sha256": hex(&hash.finalize()) });
                Response::new(support::full(json.to_string()))
            }
        })
        .await
    };
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/up\"\nupstream = \"{}\"\n",
        upstream.url
    ))
    .await;

    let sent = Arc::new(AtomicU64::new(0));
    let stream = tokio_stream(produce(sent.clone()));
    let request = client()
        .post(format!("{}/up/video", gw.url))
        .header("content-length", TOTAL)
        .body(reqwest::Body::wrap_stream(stream.map(Ok::<_, Infallible>)))
        .send();
    let response = tokio::spawn(request);

    let window = wait_for_stall(&sent).await;
    eprintln!(
        "upload: the client got {} MiB ahead of an upstream that was not reading",
        window >> 20
    );
    assert!(window < MAX_WINDOW, "{window} bytes buffered");
    go.notify_one();

    let response = response.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let json = support::json(response).await;
    assert_eq!(json["len"], TOTAL);
    assert_eq!(json["sha256"], expected_digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_of_256_mib_streams_through() {
    let sent = Arc::new(AtomicU64::new(0));
    let upstream = {
        let sent = sent.clone();
        MockUpstream::start(move |_request| {
            let rx = produce(sent.clone());
            async move {
                let frames = tokio_stream(rx).map(|data| Ok::<_, Infallible>(Frame::data(data)));
                let body = StreamBody::new(frames)
                    .map_err(|never| match never {})
                    .boxed_unsync();
                Response::builder()
                    .header("content-length", TOTAL)
                    .body(body)
                    .unwrap()
            }
        })
        .await
    };
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/down\"\nupstream = \"{}\"\n",
        upstream.url
    ))
    .await;

    let mut response = client()
        .get(format!("{}/down/video.mp4", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(TOTAL));

    let window = wait_for_stall(&sent).await;
    eprintln!(
        "download: the upstream got {} MiB ahead of a client that was not reading",
        window >> 20
    );
    assert!(window < MAX_WINDOW, "{window} bytes buffered");

    let mut hash = Sha256::new();
    let mut len = 0u64;
    while let Some(data) = response.chunk().await.unwrap() {
        len += data.len() as u64;
        hash.update(&data);
    }
    assert_eq!(len, TOTAL);
    assert_eq!(hex(&hash.finalize()), expected_digest());
}

/// An mpsc receiver as a stream of `Result<Bytes, Infallible>`-compatible items.
fn tokio_stream(
    mut rx: mpsc::Receiver<Bytes>,
) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
