//! `managed_identity` against a mock identity endpoint: the IMDS and App Service wire
//! protocols, the expiry shapes, IMDS retries on a paused clock, "not assigned" errors,
//! and a token injected by the proxy.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use azgate::credentials::{Credential, CredentialSet};
use support::identity::{
    IdentityCall, MockIdentity, imds_error, imds_token, json_response, now_secs, token_expiring_on,
};
use support::{Azgate, MockUpstream, client, json, seen};

/// The credential `mi` built from `table` (its keys after `type`) and `env`.
fn credential(table: &str, env: &[(&str, &str)]) -> Arc<Credential> {
    support::init();
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let text = format!(
        "[credentials.mi]\ntype = \"managed_identity\"\n{table}\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\ncredential = \"mi\"\n"
    );
    let config = azgate::config::parse(&text, "test.toml", Path::new("."), &|name| {
        env.get(name).cloned()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let set = CredentialSet::build(&config.credentials, &azgate::env::Env::from_map(env));
    set.get("mi").unwrap().clone()
}

/// An IMDS credential pointed at the mock.
fn imds_credential(mock: &MockIdentity, extra: &str) -> Arc<Credential> {
    credential(
        &format!(
            "resource = \"https://management.azure.com\"\nendpoint = \"{}\"\n{extra}",
            mock.url
        ),
        &[],
    )
}

fn expires_in(credential: &Credential) -> u64 {
    credential
        .cache()
        .unwrap()
        .status()
        .expires_in
        .unwrap()
        .as_secs()
}

async fn error_of(credential: &Credential) -> String {
    credential.reveal().await.unwrap_err().to_string()
}

#[tokio::test]
async fn imds_user_assigned_speaks_the_imds_protocol() {
    let mock = MockIdentity::start().await;
    let mi = credential(
        &format!(
            "scope = \"https://management.azure.com/.default\"\nclient_id = \"11111111-2222\"\nendpoint = \"{}\"",
            mock.url
        ),
        &[],
    );

    assert_eq!(mi.reveal().await.unwrap(), "mi-token-1");
    let calls = mock.calls();
    assert_eq!(calls.len(), 1);
    let call: &IdentityCall = &calls[0];
    assert_eq!(call.method, "GET");
    assert_eq!(call.path, "/metadata/identity/oauth2/token");
    assert_eq!(call.query["api-version"], "2018-02-01");
    // The scope loses `/.default`, percent-encoded in the query.
    assert_eq!(call.query["resource"], "https://management.azure.com");
    assert!(
        call.raw_query
            .contains("resource=https%3A%2F%2Fmanagement.azure.com"),
        "{}",
        call.raw_query
    );
    assert_eq!(call.query["client_id"], "11111111-2222");
    assert_eq!(call.headers["metadata"], "true");
    assert!(!call.headers.contains_key("x-identity-header"));
    // expires_in "3599" (a string) is the expiry.
    assert!(expires_in(&mi).abs_diff(3599) <= 2);

    // The cache holds the token: no second call.
    assert_eq!(mi.reveal().await.unwrap(), "mi-token-1");
    assert_eq!(mock.call_count(), 1);
}

#[tokio::test]
async fn system_assigned_sends_no_client_id() {
    let mock = MockIdentity::start().await;
    let mi = imds_credential(&mock, "");
    assert_eq!(mi.reveal().await.unwrap(), "mi-token-1");
    let call = &mock.calls()[0];
    assert!(!call.query.contains_key("client_id"), "{}", call.raw_query);
    assert_eq!(call.query["resource"], "https://management.azure.com");
}

#[tokio::test]
async fn expires_on_in_each_of_its_shapes() {
    let at = now_secs() + 1800;
    let old_form = chrono::DateTime::from_timestamp(at as i64, 0)
        .unwrap()
        .format("%m/%d/%Y %I:%M:%S %p +00:00")
        .to_string();
    let shapes = [
        ("epoch string", serde_json::json!(at.to_string())),
        ("epoch number", serde_json::json!(at)),
        ("MM/dd/yyyy hh:mm:ss tt", serde_json::json!(old_form)),
    ];
    for (name, expires_on) in shapes {
        let mock = MockIdentity::start().await;
        mock.respond_with(move |_, _| token_expiring_on("shaped-token", expires_on.clone()));
        let mi = imds_credential(&mock, "");
        assert_eq!(mi.reveal().await.unwrap(), "shaped-token", "{name}");
        let left = expires_in(&mi);
        assert!(left.abs_diff(1800) <= 3, "{name}: {left}s left");
    }
}

#[tokio::test]
async fn app_service_is_chosen_by_the_environment() {
    let mock = MockIdentity::start().await;
    mock.respond_with(|_, _| {
        token_expiring_on("app-token", (now_secs() + 3600).to_string().into())
    });
    let mi = credential(
        // The config endpoint only replaces IMDS; App Service variables win.
        "resource = \"https://vault.azure.net\"\nclient_id = \"5E29463D\"\nendpoint = \"http://127.0.0.1:9/imds\"",
        &[
            ("IDENTITY_ENDPOINT", &mock.url),
            ("IDENTITY_HEADER", "identity-header-secret"),
        ],
    );

    assert_eq!(mi.reveal().await.unwrap(), "app-token");
    let call = &mock.calls()[0];
    assert_eq!(call.query["api-version"], "2019-08-01");
    assert_eq!(call.query["resource"], "https://vault.azure.net");
    assert_eq!(call.query["client_id"], "5E29463D");
    assert_eq!(call.headers["x-identity-header"], "identity-header-secret");
    assert!(!call.headers.contains_key("metadata"));
    assert!(expires_in(&mi).abs_diff(3600) <= 2);
    let described = mi.cache().unwrap().describe();
    assert!(described.contains("App Service"), "{described}");
    assert!(!described.contains("identity-header-secret"), "{described}");
}

#[tokio::test(start_paused = true)]
async fn imds_retries_410_and_503_then_succeeds() {
    let mock = MockIdentity::start().await;
    mock.respond_with(|_, n| match n {
        1 => imds_error(410, "IMDS is updating", None),
        2 => imds_error(503, "busy", None),
        _ => imds_token("after-retries", 3599),
    });
    let mi = imds_credential(&mock, "");

    let started = tokio::time::Instant::now();
    assert_eq!(mi.reveal().await.unwrap(), "after-retries");
    let waited = started.elapsed();
    assert_eq!(mock.call_count(), 3);
    // Backoff of 1 s, then 2 s.
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn imds_honours_retry_after() {
    let mock = MockIdentity::start().await;
    mock.respond_with(|_, n| match n {
        1 => imds_error(429, "slow down", Some(7)),
        _ => imds_token("after-throttle", 3599),
    });
    let mi = imds_credential(&mock, "");

    let started = tokio::time::Instant::now();
    assert_eq!(mi.reveal().await.unwrap(), "after-throttle");
    let waited = started.elapsed();
    assert_eq!(mock.call_count(), 2);
    assert!(
        waited >= Duration::from_secs(7) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn imds_gives_up_after_five_attempts_within_a_minute() {
    let mock = MockIdentity::start().await;
    mock.respond_with(|_, _| imds_error(500, "internal failure", None));
    let mi = imds_credential(&mock, "");

    let started = tokio::time::Instant::now();
    let message = error_of(&mi).await;
    let waited = started.elapsed();
    assert_eq!(mock.call_count(), 5);
    assert!(message.contains("HTTP 500"), "{message}");
    assert!(message.contains("internal failure"), "{message}");
    assert!(message.contains("gave up after 5 attempts"), "{message}");
    // 1 + 2 + 4 + 8 s of backoff.
    assert!(
        waited >= Duration::from_secs(15) && waited < Duration::from_secs(60),
        "{waited:?}"
    );
}

#[tokio::test]
async fn unassigned_identity_is_named_and_not_retried() {
    let mock = MockIdentity::start().await;
    mock.respond_with(|_, _| imds_error(400, "Identity not found", None));
    let mi = imds_credential(&mock, "client_id = \"0000-user\"");

    let message = error_of(&mi).await;
    assert_eq!(mock.call_count(), 1);
    assert!(message.contains("not assigned"), "{message}");
    assert!(message.contains("client_id 0000-user"), "{message}");
    assert!(message.contains("Identity not found"), "{message}");
    assert!(message.contains("HTTP 400"), "{message}");
}

#[tokio::test]
async fn app_service_errors_carry_their_message() {
    let mock = MockIdentity::start().await;
    mock.respond_with(|_, n| {
        let status = if n == 1 { 400 } else { 500 };
        json_response(
            status,
            serde_json::json!({"statusCode": status, "message": "Unable to load the proper Managed Identity."}),
        )
    });
    let mi = credential(
        "resource = \"https://vault.azure.net\"",
        &[("IDENTITY_ENDPOINT", &mock.url), ("IDENTITY_HEADER", "h")],
    );
    let message = error_of(&mi).await;
    assert!(message.contains("not assigned"), "{message}");
    assert!(
        message.contains("Unable to load the proper Managed Identity."),
        "{message}"
    );
    assert!(!message.contains("statusCode"), "{message}");
    assert_eq!(mock.call_count(), 1);
}

#[tokio::test]
async fn malformed_success_bodies_are_clear_errors() {
    let cases: [(&str, &str, &str); 3] = [
        ("<html>gateway</html>", "text/html", "not JSON"),
        (
            r#"{"token_type":"Bearer"}"#,
            "application/json",
            "no access_token",
        ),
        (
            r#"{"access_token":"leaky-token","expires_on":"soon"}"#,
            "application/json",
            "unreadable expires_on",
        ),
    ];
    for (body, content_type, want) in cases {
        let mock = MockIdentity::start().await;
        mock.respond_with(move |_, _| {
            http::Response::builder()
                .header("content-type", content_type)
                .body(support::full(body))
                .unwrap()
        });
        let mi = imds_credential(&mock, "");
        let message = error_of(&mi).await;
        assert!(message.contains(want), "{body}: {message}");
        assert!(!message.contains("leaky-token"), "{message}");
        assert_eq!(mock.call_count(), 1, "{body}");
    }
}

#[tokio::test(start_paused = true)]
async fn connection_errors_are_retried_then_reported() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mi = credential(
        &format!(
            "resource = \"https://management.azure.com\"\nendpoint = \"http://{closed}/token\""
        ),
        &[],
    );
    let message = error_of(&mi).await;
    assert!(
        message.contains("no managed identity endpoint answered"),
        "{message}"
    );
    assert!(message.contains("gave up after 5 attempts"), "{message}");
}

#[tokio::test]
async fn the_proxy_injects_the_managed_identity_token() {
    let mock = MockIdentity::start().await;
    let upstream = MockUpstream::echo().await;
    let text = support::config_text(&format!(
        r#"
        [credentials.mi]
        type = "managed_identity"
        scope = "https://management.azure.com/.default"
        endpoint = "{}"
        [[routes]]
        prefix = "/arm"
        upstream = "{}"
        credential = "mi"
        "#,
        mock.url, upstream.url
    ));
    let gw = Azgate::start_with(&text, Path::new("."), &HashMap::new()).await;

    let response = client()
        .get(format!(
            "{}/arm/subscriptions?api-version=2022-12-01",
            gw.url
        ))
        .header("authorization", "Bearer from-client")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo = json(response).await;
    assert_eq!(seen(&echo, "authorization"), vec!["Bearer mi-token-1"]);
    assert_eq!(mock.calls()[0].headers["metadata"], "true");
    gw.stop().await;
}
