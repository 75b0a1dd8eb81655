//! Readiness and credential upkeep without traffic: a credential that failed is retried in
//! the background with its backoff, so `/readyz` recovers by itself (an unready pod gets no
//! requests that could retry it); `/readyz` names the failing credential and the next
//! attempt; `admin.ready_requires` chooses the credentials readiness follows.

mod support;

use std::time::Duration;

use support::entra::MockEntra;
use support::scripted::{Scripted, reply};
use support::{Azgate, client, status};

fn client_secret(name: &str, entra: &MockEntra) -> String {
    format!(
        r#"
        [credentials.{name}]
        type = "client_secret"
        tenant = "contoso"
        client_id = "app-{name}"
        client_secret = "s3cret-value"
        scope = "https://management.azure.com/.default"
        token_url = "{}/contoso/oauth2/v2.0/token"
        "#,
        entra.url
    )
}

fn route(prefix: &str, upstream: &str, credential: &str) -> String {
    format!(
        "[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\ncredential = \"{credential}\"\n"
    )
}

async fn readyz(admin: &str) -> (u16, serde_json::Value) {
    let response = client()
        .get(format!("{admin}/readyz"))
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    (code, support::json(response).await)
}

#[tokio::test(start_paused = true)]
async fn readiness_recovers_by_itself_when_the_token_endpoint_comes_back() {
    let entra = MockEntra::start().await;
    entra.go_down();
    let upstream = Scripted::start(vec![reply(200)]).await;
    let gw = Azgate::start(&format!(
        "{}{}",
        client_secret("arm", &entra),
        route("/a", &upstream.url, "arm")
    ))
    .await;
    let admin = gw.admin_url.clone().unwrap();

    assert_eq!(status(client().get(format!("{}/a/x", gw.url))).await, 502);
    assert_eq!(entra.call_count(), 1);
    let (code, body) = readyz(&admin).await;
    assert_eq!(code, 503, "{body}");
    let failing = &body["credentials"][0];
    assert_eq!(failing["credential"], "arm", "{body}");
    assert!(
        failing["error"].as_str().unwrap().contains("HTTP 503"),
        "{body}"
    );
    let next = failing["next_attempt_in_ms"].as_u64().unwrap();
    assert!((1..=1000).contains(&next), "first backoff is 1 s: {body}");
    assert!(failing["next_attempt_at_ms"].as_u64().is_some(), "{body}");

    // Still down: the background retry comes after 1 s, the next one 2 s later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        entra.call_count(),
        2,
        "no background retry after the backoff"
    );
    let (code, body) = readyz(&admin).await;
    assert_eq!(code, 503);
    let next = body["credentials"][0]["next_attempt_in_ms"]
        .as_u64()
        .unwrap();
    assert!((1..=1500).contains(&next), "second backoff is 2 s: {body}");

    // Back: the next background retry gets a token and /readyz turns 200 with no request.
    entra.come_back();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(entra.call_count(), 3);
    let (code, body) = readyz(&admin).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        upstream.seen().is_empty(),
        "no request reached the upstream"
    );
    // And the token is there for the next request, without another fetch.
    assert_eq!(status(client().get(format!("{}/a/x", gw.url))).await, 200);
    assert_eq!(entra.call_count(), 3);
    gw.stop().await;
}

#[tokio::test(start_paused = true)]
async fn retries_stop_when_a_reload_takes_the_credential_out_of_use() {
    let entra = MockEntra::start().await;
    entra.go_down();
    let upstream = Scripted::start(vec![reply(200)]).await;
    let body = |with_route: bool| {
        let mut text = client_secret("arm", &entra);
        if with_route {
            text.push_str(&route("/a", &upstream.url, "arm"));
        }
        text
    };
    let gw = Azgate::start(&body(true)).await;
    assert_eq!(status(client().get(format!("{}/a/x", gw.url))).await, 502);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(entra.call_count(), 2);

    let admin = gw.admin_url.clone().unwrap();
    let server = gw.into_server();
    let config = azgate::config::parse(
        &support::config_text(&body(false)),
        "test.toml",
        std::path::Path::new("."),
        &|_| None,
    )
    .unwrap();
    server.apply(config).unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        entra.call_count(),
        2,
        "a credential no route uses was retried"
    );
    let (code, body) = readyz(&admin).await;
    assert_eq!(code, 200, "{body}");
    server.shutdown();
    server.wait().await;
}

#[tokio::test]
async fn ready_requires_chooses_the_credentials_readiness_follows() {
    let entra = MockEntra::start().await;
    entra.refuse_client_secret();
    let upstream = Scripted::start(vec![reply(200)]).await;
    let routes = format!(
        "{}{}{}",
        client_secret("broken", &entra),
        route("/a", &upstream.url, "broken"),
        route("/b", &upstream.url, "other"),
    );
    let other = "[credentials.other]\ntype = \"subscription_key\"\nkey = \"k\"\n";
    for (admin_keys, want) in [
        ("", 503),
        ("ready_requires = [\"other\"]", 200),
        ("ready_requires = []", 200),
        ("ready_requires = [\"other\", \"broken\"]", 503),
    ] {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{admin_keys}\n{other}{routes}"
        );
        let gw = Azgate::start_with(&text, std::path::Path::new("."), &Default::default()).await;
        assert_eq!(status(client().get(format!("{}/a/x", gw.url))).await, 502);
        let (code, body) = readyz(gw.admin_url.as_deref().unwrap()).await;
        assert_eq!(code, want, "{admin_keys}: {body}");
        if want == 503 {
            assert_eq!(body["credentials"][0]["credential"], "broken");
        }
        gw.stop().await;
    }
}

#[test]
fn ready_requires_names_declared_credentials() {
    support::init();
    let text = "[admin]\nready_requires = [\"arm\", \"ghost\"]\n[credentials.arm]\ntype = \"static\"\nheader = \"x-a\"\nvalue = \"v\"\n[credentials.key]\ntype = \"subscription_key\"\nkey = \"k\"\n";
    let err = azgate::config::parse(text, "t.toml", std::path::Path::new("."), &|_| None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "t.toml: admin.ready_requires[1]: unknown credential \"ghost\"; known: arm, key"
    );
}
