//! A route's `timeout` bounds everything before the response headers: a token endpoint
//! (Entra ID, ARM's generateAccessToken) that accepts the connection and never answers
//! costs a request its route timeout, not the token fetch's own; the one fetch goes on in
//! the background for the requests after it; and the first upstream attempt gets what the
//! token wait left.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::entra::arm_route;
use support::{Azgate, MockUpstream, client};
use tokio::time::Instant;

/// A server that accepts every request and never answers; counts them.
async fn hanging() -> (MockUpstream, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let server = MockUpstream::start(move |_request| {
        counted.fetch_add(1, Ordering::SeqCst);
        std::future::pending()
    })
    .await;
    (server, calls)
}

/// Status, error code and message of a request to `url`.
async fn refused(url: &str) -> (u16, String, String) {
    let response = client().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let json = support::json(response).await;
    (
        status,
        json["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test(start_paused = true)]
async fn a_hanging_token_endpoint_costs_the_route_timeout_not_more() {
    let (entra, calls) = hanging().await;
    let upstream = MockUpstream::echo().await;
    let gw = Azgate::start(&arm_route(
        &format!("{}/t/oauth2/v2.0/token", entra.url),
        &upstream.url,
        "timeout = \"3s\"",
    ))
    .await;
    let url = format!("{}/arm/x", gw.url);
    let started = Instant::now();
    let (status, code, message) = refused(&url).await;
    let waited = started.elapsed();
    assert_eq!((status, code.as_str()), (502, "credential_unavailable"));
    assert!(
        message.contains("no token within the route's timeout (3s)"),
        "{message}"
    );
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
        "answered after {waited:?}"
    );
    // The next request waits on the same fetch, still going on: no second call.
    let (status, _, _) = refused(&url).await;
    assert_eq!(status, 502);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one fetch for both");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_generate_access_token_costs_the_route_timeout_not_more() {
    let entra = support::entra::MockEntra::start().await;
    let (management, calls) = hanging().await;
    let gw = Azgate::start(&format!(
        r#"
        [credentials.arm]
        type = "client_secret"
        tenant = "t"
        client_id = "c"
        client_secret = "s3cret"
        scope = "https://management.azure.com/.default"
        token_url = "{entra}/t/oauth2/v2.0/token"
        [credentials.vi]
        type = "video_indexer"
        location = "westeurope"
        account_id = "acc"
        arm = "arm"
        subscription_id = "sub"
        resource_group = "rg"
        account_name = "myvi"
        management_url = "{management}"
        [[routes]]
        prefix = "/vi"
        upstream = "{management}"
        credential = "vi"
        timeout = "2s"
        "#,
        entra = entra.url,
        management = management.url
    ))
    .await;
    let started = Instant::now();
    let (status, code, _) = refused(&format!("{}/vi/westeurope/Accounts/acc/Videos", gw.url)).await;
    let waited = started.elapsed();
    assert_eq!((status, code.as_str()), (502, "credential_unavailable"));
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "answered after {waited:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_first_attempt_gets_what_the_token_wait_left() {
    // A token endpoint that answers after 2 s, and an upstream that never answers: with a
    // 3 s route timeout the client has its 504 at 3 s, not at 2 + 3 s.
    let entra = MockUpstream::start(|_request| async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        support::entra::v2_token("slow-token", 3599)
    })
    .await;
    let (upstream, _) = hanging().await;
    let gw = Azgate::start(&arm_route(
        &format!("{}/t/oauth2/v2.0/token", entra.url),
        &upstream.url,
        "timeout = \"3s\"\n[routes.retry]\nmax_attempts = 1",
    ))
    .await;
    let started = Instant::now();
    let (status, code, message) = refused(&format!("{}/arm/x", gw.url)).await;
    let waited = started.elapsed();
    assert_eq!((status, code.as_str()), (504, "upstream_timeout"));
    assert!(message.contains("3s"), "{message}");
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
        "answered after {waited:?}"
    );
}
