//! The credential layer through the proxy: one token fetch for a cold burst, a 401 from
//! the upstream replayed once with a fresh token (and never looped), the `default` chain,
//! and the `token` / `check --probe` commands.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use http::{Response, StatusCode};
use http_body_util::BodyExt;
use support::entra::{MockEntra, v2_token};
use support::{Azgate, MockUpstream, client, full};

fn client_secret_route(entra: &MockEntra, upstream: &str) -> String {
    format!(
        r#"
        [credentials.arm]
        type = "client_secret"
        tenant = "contoso"
        client_id = "app-1"
        client_secret = "TOP-SECRET-CLIENT-SECRET"
        scope = "https://management.azure.com/.default"
        token_url = "{}/contoso/oauth2/v2.0/token"
        [[routes]]
        prefix = "/arm"
        upstream = "{upstream}"
        credential = "arm"
        "#,
        entra.url
    )
}

/// An upstream that accepts only `Bearer token-{good}` and records the bodies it saw.
async fn picky_upstream(
    good: Option<usize>,
) -> (MockUpstream, Arc<std::sync::Mutex<Vec<(String, usize)>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let upstream = {
        let seen = seen.clone();
        MockUpstream::start(move |request| {
            let seen = seen.clone();
            async move {
                let auth = request
                    .headers()
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let body = request.into_body().collect().await.unwrap().to_bytes();
                seen.lock().unwrap().push((auth.clone(), body.len()));
                let accepted = good.is_some_and(|n| auth == format!("Bearer token-{n}"));
                let status = if accepted {
                    StatusCode::OK
                } else {
                    StatusCode::UNAUTHORIZED
                };
                Response::builder()
                    .status(status)
                    .header("www-authenticate", "Bearer error=\"invalid_token\"")
                    .body(full(format!("{status} body of {} bytes", body.len())))
                    .unwrap()
            }
        })
        .await
    };
    (upstream, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_burst_makes_one_token_request() {
    let entra = MockEntra::start().await;
    // A slow token endpoint, so that every request arrives while the fetch is in flight.
    entra.respond_with(|_call, n| {
        std::thread::sleep(std::time::Duration::from_millis(200));
        v2_token(&format!("token-{n}"), 3599)
    });
    let upstream = MockUpstream::echo().await;
    let gw = Azgate::start(&client_secret_route(&entra, &upstream.url)).await;
    let c = client();
    let requests: Vec<_> = (0..500)
        .map(|i| {
            let request = c.get(format!("{}/arm/r{i}", gw.url)).send();
            tokio::spawn(async move { support::json(request.await.unwrap()).await })
        })
        .collect();
    for request in requests {
        let echo = request.await.unwrap();
        assert_eq!(
            support::seen(&echo, "authorization"),
            vec!["Bearer token-1"]
        );
    }
    assert_eq!(entra.call_count(), 1);
}

#[tokio::test]
async fn a_401_is_replayed_once_with_a_fresh_token() {
    let entra = MockEntra::start().await;
    let (upstream, seen) = picky_upstream(Some(2)).await;
    let gw = Azgate::start(&client_secret_route(&entra, &upstream.url)).await;
    let response = client()
        .post(format!("{}/arm/deploy", gw.url))
        .body("x".repeat(4096))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-azgate-attempts"], "2");
    assert_eq!(entra.call_count(), 2);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            ("Bearer token-1".to_string(), 4096),
            ("Bearer token-2".to_string(), 4096)
        ],
        "the same body went up twice, with the new token the second time"
    );
}

#[tokio::test]
async fn an_upstream_that_always_says_401_does_not_cause_a_loop() {
    let entra = MockEntra::start().await;
    let (upstream, seen) = picky_upstream(None).await;
    let gw = Azgate::start(&client_secret_route(&entra, &upstream.url)).await;
    let c = client();
    let first = c.get(format!("{}/arm/x", gw.url)).send().await.unwrap();
    assert_eq!(
        first.status(),
        401,
        "the upstream's own 401 reaches the client"
    );
    assert_eq!(
        first.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    assert!(first.headers().get("x-azgate-error").is_none());
    for _ in 0..5 {
        let again = c.get(format!("{}/arm/x", gw.url)).send().await.unwrap();
        assert_eq!(again.status(), 401);
    }
    // One forced refresh in the first few seconds, however many requests were refused.
    assert_eq!(entra.call_count(), 2);
    assert_eq!(seen.lock().unwrap().len(), 2 + 5);
}

#[tokio::test]
async fn a_body_too_large_to_keep_is_not_replayed() {
    let entra = MockEntra::start().await;
    let (upstream, seen) = picky_upstream(Some(2)).await;
    let gw = Azgate::start(&client_secret_route(&entra, &upstream.url)).await;
    let big = vec![b'v'; 3 << 20];
    let response = client()
        .put(format!("{}/arm/blob", gw.url))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("x-azgate-attempts").is_none());
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![("Bearer token-1".to_string(), 3 << 20)]
    );
}

#[tokio::test]
async fn token_endpoint_errors_become_credential_unavailable() {
    let entra = MockEntra::start().await;
    entra.refuse_client_secret();
    let upstream = MockUpstream::echo().await;
    let gw = Azgate::start(&client_secret_route(&entra, &upstream.url)).await;
    let response = client()
        .get(format!("{}/arm/x", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        response.headers()["x-azgate-error"],
        "credential_unavailable"
    );
    let text = response.text().await.unwrap();
    assert!(!text.contains("TOP-SECRET"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("credential \"arm\" is unavailable"),
        "{message}"
    );
    assert!(message.contains("AADSTS7000215"), "{message}");
}

#[tokio::test]
async fn default_chain_uses_the_environment_first_and_explains_failures() {
    support::init();
    let entra = MockEntra::start().await;
    let text =
        "[credentials.d]\ntype = \"default\"\nscope = \"https://management.azure.com/.default\"\n";
    let config =
        azgate::config::parse(text, "t.toml", std::path::Path::new("."), &|_| None).unwrap();

    let env = azgate::env::Env::from_map(HashMap::from([
        ("AZURE_TENANT_ID".to_string(), "contoso".to_string()),
        ("AZURE_CLIENT_ID".to_string(), "app-1".to_string()),
        ("AZURE_CLIENT_SECRET".to_string(), "s3cret".to_string()),
        ("AZURE_AUTHORITY_HOST".to_string(), entra.url.clone()),
    ]));
    let set = azgate::credentials::CredentialSet::build(&config.credentials, &env);
    let credential = set.get("d").unwrap();
    assert_eq!(credential.reveal().await.unwrap(), "token-1");
    let call = &entra.calls()[0];
    assert_eq!(call.path, "/contoso/oauth2/v2.0/token");
    assert_eq!(call.form["client_secret"], "s3cret");
    assert!(
        credential
            .cache()
            .unwrap()
            .describe()
            .contains("using environment")
    );

    // Nothing configured: IMDS pointed at a closed local port, no `az` on PATH.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let empty = tempfile::tempdir().unwrap();
    let env = azgate::env::Env::from_map(HashMap::from([
        (
            "AZURE_POD_IDENTITY_AUTHORITY_HOST".to_string(),
            format!("http://{closed}"),
        ),
        ("PATH".to_string(), empty.path().display().to_string()),
    ]));
    let set = azgate::credentials::CredentialSet::build(&config.credentials, &env);
    let err = set.get("d").unwrap().reveal().await.unwrap_err();
    for part in [
        "environment:",
        "workload identity:",
        "managed identity:",
        "Azure CLI:",
        "AZURE_FEDERATED_TOKEN_FILE",
    ] {
        assert!(
            err.reason.contains(part),
            "missing {part:?} in: {}",
            err.reason
        );
    }
}

#[test]
fn the_embedded_default_serves_arm_with_the_default_credential() {
    let config = azgate::config::parse(
        azgate::config::EMBEDDED_DEFAULT,
        "<embedded default>",
        std::path::Path::new("."),
        &|_| None,
    )
    .unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.admin.listen.unwrap().to_string(), "127.0.0.1:9090");
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.routes[0].prefix, "/arm");
    assert_eq!(
        config.routes[0].upstream.to_string(),
        "https://management.azure.com/"
    );
    assert_eq!(
        config.credentials[config.routes[0].credential.as_deref().unwrap()].kind(),
        "default"
    );
}

#[tokio::test]
async fn token_and_probe_commands_never_print_what_they_should_not() {
    let entra = MockEntra::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(
        &path,
        format!(
            r#"
            [credentials.arm]
            type = "client_secret"
            tenant = "contoso"
            client_id = "app-1"
            client_secret = "TOP-SECRET-CLIENT-SECRET"
            scope = "https://management.azure.com/.default"
            authority = "{}"
            [credentials.key]
            type = "subscription_key"
            key = "KEY-VALUE-123"
            [credentials.broken]
            type = "client_secret"
            tenant = "nowhere"
            client_id = "app-2"
            client_secret = "OTHER-SECRET"
            resource = "https://rest.media.azure.net"
            token_url = "http://127.0.0.1:1/token"
            "#,
            entra.url
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_azgate");
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin)
                .args(args)
                .env_remove("AZGATE_CONFIG")
                .env_remove("RUST_LOG")
                .output()
                .unwrap()
        })
    };
    let p = path.display().to_string();

    let out = run(vec!["token".into(), "arm".into(), "-c".into(), p.clone()])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "token-1\n");

    let out = run(vec!["token".into(), "key".into(), "-c".into(), p.clone()])
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "KEY-VALUE-123\n");

    let out = run(vec!["token".into(), "nope".into(), "-c".into(), p.clone()])
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown NAME is a config problem"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("known: arm, broken, key"));

    let out = run(vec![
        "token".into(),
        "broken".into(),
        "-c".into(),
        p.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("credential \"broken\" is unavailable"));

    let out = run(vec![
        "check".into(),
        "--probe".into(),
        "-c".into(),
        p.clone(),
    ])
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failing credential makes the probe fail"
    );
    assert!(stdout.contains("ok, expires in 59m"), "{stdout}");
    assert!(stdout.contains("FAILED"), "{stdout}");
    for secret in ["token-", "TOP-SECRET", "KEY-VALUE-123", "OTHER-SECRET"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} printed:\n{stdout}\n{stderr}"
        );
    }
}
