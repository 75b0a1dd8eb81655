//! The `video_indexer` credential: classic accounts buy their token with the subscription
//! key, ARM-based accounts with an ARM token; the token goes into the `accessToken` query
//! parameter (or a bearer header), its expiry comes from the JWT, and every failure names
//! its cause without the key.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use azgate::credentials::CredentialSet;
use azgate::env::Env;
use serde_json::json;
use support::entra::MockEntra;
use support::video_indexer::{
    ACCOUNT, KEY, MockVideoIndexer, arm_credentials, arm_error, classic_credential, jwt, now_secs,
    raw, throttled, token_string, vi_error,
};
use support::{Azgate, client, config_text, json, seen};

fn env() -> HashMap<&'static str, &'static str> {
    HashMap::from([("VI_KEY", KEY), ("ARM_SECRET", "entra-client-secret")])
}

fn route(upstream: &str, credential: &str) -> String {
    format!(
        "[[routes]]\nprefix = \"/vi\"\nupstream = \"{upstream}\"\ncredential = \"{credential}\"\n"
    )
}

/// Credentials built from `body` the way azgate builds them, variables from `env()` only.
fn credentials(body: &str) -> CredentialSet {
    support::init();
    let vars = env();
    let lookup = |name: &str| vars.get(name).map(|v| v.to_string());
    let config = azgate::config::parse(&config_text(body), "test.toml", Path::new("."), &lookup)
        .unwrap_or_else(|e| panic!("{e}"));
    let env = Env::from_map(
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    CredentialSet::build(&config.credentials, &env)
}

async fn start_gateway(body: &str) -> Azgate {
    Azgate::start_with(&config_text(body), Path::new("."), &env()).await
}

/// The reason `name` failed; its credential name is part of the message.
async fn failure(set: &CredentialSet, name: &str) -> String {
    let err = set.get(name).unwrap().reveal().await.unwrap_err();
    assert_eq!(err.credential, name);
    assert!(!err.reason.contains(KEY), "{}", err.reason);
    err.reason
}

fn expires_in(set: &CredentialSet, name: &str) -> Duration {
    let credential = set.get(name).unwrap();
    credential.cache().unwrap().status().expires_in.unwrap()
}

#[tokio::test]
async fn classic_token_replaces_the_clients_access_token_in_the_query() {
    let vi = MockVideoIndexer::start().await;
    let gw = start_gateway(&(classic_credential("vi", &vi.url, "") + &route(&vi.url, "vi"))).await;
    let c = client();
    let url = format!(
        "{}/vi/trial/Accounts/{ACCOUNT}/Videos?name=x&accessToken=client-token",
        gw.url
    );
    let echo = json(c.get(&url).send().await.unwrap()).await;
    assert_eq!(echo["path"], format!("/trial/Accounts/{ACCOUNT}/Videos"));
    assert_eq!(echo["query"], "name=x&accessToken=vi-token-1");
    assert!(seen(&echo, "authorization").is_empty());
    assert!(seen(&echo, "ocp-apim-subscription-key").is_empty());

    let calls = vi.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "GET");
    assert_eq!(
        calls[0].path,
        format!("/auth/trial/Accounts/{ACCOUNT}/AccessToken")
    );
    assert_eq!(calls[0].query.as_deref(), Some("allowEdit=false"));
    assert_eq!(calls[0].header("ocp-apim-subscription-key"), Some(KEY));

    // The token is cached: a second request makes no second auth call.
    let echo = json(c.get(&url).send().await.unwrap()).await;
    assert_eq!(echo["query"], "name=x&accessToken=vi-token-1");
    assert_eq!(vi.call_count(), 1);
    assert_eq!(vi.data_calls(), 2);
}

#[tokio::test]
async fn allow_edit_asks_for_a_writable_token() {
    let vi = MockVideoIndexer::start().await;
    let set = credentials(&classic_credential("vi", &vi.url, "allow_edit = true"));
    let token = set.get("vi").unwrap().reveal().await.unwrap();
    assert_eq!(token, "vi-token-1");
    assert_eq!(vi.calls()[0].query.as_deref(), Some("allowEdit=true"));
}

#[tokio::test]
async fn auth_path_segments_are_percent_encoded() {
    let vi = MockVideoIndexer::start().await;
    let body = format!(
        r#"
        [credentials.vi]
        type = "video_indexer"
        location = "west europe"
        account_id = "a/b?c"
        subscription_key = "${{VI_KEY}}"
        api_url = "{}/base/"
        "#,
        vi.url
    );
    let set = credentials(&body);
    set.get("vi").unwrap().reveal().await.unwrap();
    assert_eq!(
        vi.calls()[0].path,
        "/base/auth/west%20europe/Accounts/a%2Fb%3Fc/AccessToken"
    );
}

#[tokio::test]
async fn header_injection_sends_a_bearer_and_no_query_token() {
    let vi = MockVideoIndexer::start().await;
    let body = classic_credential("vi", &vi.url, "inject = \"header\"") + &route(&vi.url, "vi");
    let gw = start_gateway(&body).await;
    let url = format!(
        "{}/vi/trial/Accounts/{ACCOUNT}/Videos?name=x&accessToken=client-token",
        gw.url
    );
    let response = client()
        .get(url)
        .header("authorization", "Bearer from-client")
        .send()
        .await
        .unwrap();
    let echo = json(response).await;
    assert_eq!(echo["query"], "name=x");
    assert_eq!(seen(&echo, "authorization"), vec!["Bearer vi-token-1"]);
}

#[tokio::test]
async fn jwt_exp_sets_the_expiry() {
    let vi = MockVideoIndexer::start().await;
    let token = jwt(json!({"aud": "https://api.videoindexer.ai/", "exp": now_secs() + 600}));
    let answer = token.clone();
    vi.respond_with(move |_, _| token_string(&answer));
    let set = credentials(&classic_credential("vi", &vi.url, ""));
    assert_eq!(set.get("vi").unwrap().reveal().await.unwrap(), token);
    let left = expires_in(&set, "vi").as_secs();
    assert!((590..=600).contains(&left), "{left}");
}

#[tokio::test]
async fn a_token_that_is_not_a_jwt_lives_an_hour() {
    let vi = MockVideoIndexer::start().await;
    let set = credentials(&classic_credential("vi", &vi.url, ""));
    set.get("vi").unwrap().reveal().await.unwrap();
    let left = expires_in(&set, "vi").as_secs();
    assert!((3590..=3600).contains(&left), "{left}");
}

#[tokio::test]
async fn user_not_allowed_is_a_credential_error_naming_it() {
    let vi = MockVideoIndexer::start().await;
    vi.respond_with(|_, _| {
        vi_error(
            401,
            "USER_NOT_ALLOWED",
            "User has no permission on account\r\nTrace id: 42",
        )
    });
    let gw = start_gateway(&(classic_credential("vi", &vi.url, "") + &route(&vi.url, "vi"))).await;
    let url = format!("{}/vi/trial/Accounts/{ACCOUNT}/Videos", gw.url);
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let headers = format!("{:?}", response.headers());
    assert!(!headers.contains(KEY), "{headers}");
    let text = response.text().await.unwrap();
    assert!(!text.contains(KEY), "{text}");
    let error: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["code"], "credential_unavailable");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"vi\""), "{message}");
    assert!(
        message.contains(
            "Video Indexer answered 401: USER_NOT_ALLOWED: User has no permission on account"
        ),
        "{message}"
    );
    assert!(!message.contains("Trace id"), "{message}");
    assert_eq!(vi.data_calls(), 0, "nothing is forwarded without a token");
}

#[tokio::test]
async fn other_video_indexer_errors_are_named() {
    let cases = [
        (
            vi_error(400, "INVALID_INPUT", "The location is not valid."),
            "Video Indexer answered 400: INVALID_INPUT: The location is not valid.",
        ),
        (
            vi_error(500, "GENERAL", "An internal error occurred."),
            "Video Indexer answered 500: GENERAL: An internal error occurred.",
        ),
        (
            vi_error(504, "SERVER_TIMEOUT", "Server timeout."),
            "Video Indexer answered 504: SERVER_TIMEOUT: Server timeout.",
        ),
        (
            raw(
                401,
                "application/json",
                r#"{ "statusCode": 401, "message": "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription." }"#,
            ),
            "Video Indexer answered 401: Access denied due to invalid subscription key.",
        ),
        (
            raw(
                502,
                "text/html",
                "<html><body>\n<h1>502 Bad Gateway</h1>\n</body></html>",
            ),
            "Video Indexer answered 502: <html><body> <h1>502 Bad Gateway</h1> </body></html>",
        ),
    ];
    for (response, want) in cases {
        let vi = MockVideoIndexer::start().await;
        let response = std::sync::Mutex::new(Some(response));
        vi.respond_with(move |_, _| response.lock().unwrap().take().unwrap());
        let set = credentials(&classic_credential("vi", &vi.url, ""));
        let reason = failure(&set, "vi").await;
        assert!(reason.starts_with(want), "{reason}");
    }
}

#[tokio::test]
async fn unusable_success_bodies_are_named() {
    let cases = [
        (
            raw(200, "application/json", r#"{"accessToken":"eyJ.a.b"}"#),
            "Video Indexer answered 200 with a JSON object with keys accessToken where the token, a JSON string, was expected",
        ),
        (
            raw(200, "text/plain", "eyJ0eXAiOiJKV1Qi.unquoted.token"),
            "Video Indexer answered 200 with a body that is not JSON (31 bytes) where the token, a JSON string, was expected",
        ),
        (
            raw(200, "application/json", ""),
            "Video Indexer answered 200 with an empty body where the token, a JSON string, was expected",
        ),
        (
            raw(200, "text/html", "<html><title>Sign in</title></html>"),
            "Video Indexer answered 200 with markup (<html><title>Sign in</title></html>) where the token, a JSON string, was expected",
        ),
        (
            raw(200, "application/json", "\"unterminated"),
            "Video Indexer answered 200 with a body that is not JSON (13 bytes) where the token, a JSON string, was expected",
        ),
        (
            raw(200, "application/json", "\"bad\\ntoken\""),
            "the token holds characters not allowed in a header",
        ),
        (
            raw(
                200,
                "application/json",
                &format!("\"{}\"", "a".repeat(70_000)),
            ),
            "Video Indexer answered 200 with a body over 64 KiB",
        ),
    ];
    for (response, want) in cases {
        let vi = MockVideoIndexer::start().await;
        let response = std::sync::Mutex::new(Some(response));
        vi.respond_with(move |_, _| response.lock().unwrap().take().unwrap());
        let set = credentials(&classic_credential("vi", &vi.url, ""));
        assert_eq!(failure(&set, "vi").await, want);
    }
}

#[tokio::test]
async fn throttling_is_honoured_for_the_whole_retry_after() {
    let vi = MockVideoIndexer::start().await;
    vi.respond_with(|call, _| {
        if call.path.contains("/throttled/") {
            throttled(120)
        } else {
            vi_error(500, "GENERAL", "An internal error occurred.")
        }
    });
    let body = format!(
        r#"
        [credentials.throttled]
        type = "video_indexer"
        location = "trial"
        account_id = "throttled"
        subscription_key = "${{VI_KEY}}"
        api_url = "{url}"
        [credentials.failing]
        type = "video_indexer"
        location = "trial"
        account_id = "failing"
        subscription_key = "${{VI_KEY}}"
        api_url = "{url}"
        "#,
        url = vi.url
    );
    let set = credentials(&body);
    let calls_for = |account: &str| {
        vi.calls()
            .iter()
            .filter(|c| c.path.contains(&format!("/{account}/")))
            .count()
    };
    assert_eq!(
        failure(&set, "throttled").await,
        "Video Indexer answered 429: Rate limit is exceeded. Try again in 120 seconds."
    );
    failure(&set, "failing").await;
    // Past the cache's own first backoff (1 s) but well inside Retry-After (120 s): the
    // failing credential tries again, the throttled one does not.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    failure(&set, "throttled").await;
    failure(&set, "failing").await;
    assert_eq!(calls_for("throttled"), 1);
    assert_eq!(calls_for("failing"), 2);
}

#[tokio::test]
async fn description_names_the_account_but_not_the_key() {
    let set = credentials(&classic_credential("vi", "https://vi.example.test", ""));
    let describe = set.get("vi").unwrap().cache().unwrap().describe();
    assert_eq!(
        describe,
        "video_indexer (classic, location trial, account 0000…, read-only, https://vi.example.test)"
    );
}

// ARM-based accounts. The ARM token comes from a `client_secret` credential in front of
// a mock Entra ID.

#[tokio::test]
async fn arm_account_token_comes_from_generate_access_token() {
    let entra = MockEntra::start().await;
    let arm = MockVideoIndexer::start().await;
    let data = MockVideoIndexer::start().await;
    let body = arm_credentials(&entra.url, &arm.url, "") + &route(&data.url, "vi");
    let gw = start_gateway(&body).await;
    let url = format!(
        "{}/vi/westeurope/Accounts/{ACCOUNT}/Videos?name=x&accessToken=client-token",
        gw.url
    );
    let echo = json(client().get(url).send().await.unwrap()).await;
    assert_eq!(echo["query"], "name=x&accessToken=vi-token-1");
    assert!(seen(&echo, "authorization").is_empty());

    let entra_calls = entra.calls();
    assert_eq!(entra_calls.len(), 1);
    assert_eq!(
        entra_calls[0].form.get("scope").map(String::as_str),
        Some("https://management.azure.com/.default")
    );
    let calls = arm.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "POST");
    assert_eq!(
        calls[0].path,
        "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.VideoIndexer/accounts/myvi/generateAccessToken"
    );
    assert_eq!(calls[0].query.as_deref(), Some("api-version=2024-01-01"));
    assert_eq!(calls[0].header("authorization"), Some("Bearer token-1"));
    assert!(
        calls[0]
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
    );
    assert_eq!(
        calls[0].json(),
        json!({"permissionType": "Reader", "scope": "Account"})
    );
    assert_eq!(data.call_count(), 0);
}

#[tokio::test]
async fn arm_contributor_permission_is_asked_for() {
    let entra = MockEntra::start().await;
    let arm = MockVideoIndexer::start().await;
    let set = credentials(&arm_credentials(
        &entra.url,
        &arm.url,
        "permission = \"Contributor\"",
    ));
    assert_eq!(set.get("vi").unwrap().reveal().await.unwrap(), "vi-token-1");
    assert_eq!(
        arm.calls()[0].json(),
        json!({"permissionType": "Contributor", "scope": "Account"})
    );
    let describe = set.get("vi").unwrap().cache().unwrap().describe();
    assert_eq!(
        describe,
        format!(
            "video_indexer (ARM account myvi via credential arm, Contributor, {})",
            arm.url
        )
    );
}

#[tokio::test]
async fn arm_jwt_exp_sets_the_expiry() {
    let entra = MockEntra::start().await;
    let arm = MockVideoIndexer::start().await;
    let token = jwt(json!({"exp": now_secs() + 900}));
    let answer = token.clone();
    arm.respond_with(move |_, _| support::video_indexer::arm_token(&answer));
    let set = credentials(&arm_credentials(&entra.url, &arm.url, ""));
    assert_eq!(set.get("vi").unwrap().reveal().await.unwrap(), token);
    let left = expires_in(&set, "vi").as_secs();
    assert!((890..=900).contains(&left), "{left}");
}

#[tokio::test]
async fn arm_authorization_failed_is_named() {
    let entra = MockEntra::start().await;
    let arm = MockVideoIndexer::start().await;
    arm.respond_with(|_, _| {
        arm_error(
            403,
            "AuthorizationFailed",
            "The client '11111111-2222-3333-4444-555555555555' with object id 'abc' does not have authorization to perform action 'Microsoft.VideoIndexer/accounts/generateAccessToken/action' over scope '/subscriptions/sub-1'.",
        )
    });
    let set = credentials(&arm_credentials(&entra.url, &arm.url, ""));
    let reason = failure(&set, "vi").await;
    assert!(
        reason.starts_with("ARM generateAccessToken answered 403: AuthorizationFailed: The client '11111111-2222-3333-4444-555555555555'"),
        "{reason}"
    );
    assert!(!reason.contains("token-1"), "{reason}");
}

#[tokio::test]
async fn arm_answer_without_access_token_is_named() {
    let entra = MockEntra::start().await;
    let arm = MockVideoIndexer::start().await;
    arm.respond_with(|_, _| raw(200, "application/json", r#"{"token":"x"}"#));
    let set = credentials(&arm_credentials(&entra.url, &arm.url, ""));
    assert_eq!(
        failure(&set, "vi").await,
        "ARM generateAccessToken answered 200 with a JSON object with keys token and no accessToken"
    );
}

#[tokio::test]
async fn arm_credential_failure_is_named() {
    let entra = MockEntra::start().await;
    entra.refuse_client_secret();
    let arm = MockVideoIndexer::start().await;
    let set = credentials(&arm_credentials(&entra.url, &arm.url, ""));
    let reason = failure(&set, "vi").await;
    assert!(
        reason.starts_with("the ARM credential \"arm\" failed: "),
        "{reason}"
    );
    assert!(!reason.contains("entra-client-secret"), "{reason}");
    assert_eq!(arm.call_count(), 0);
    assert!(reason.contains("AADSTS7000215"), "{reason}");
}
