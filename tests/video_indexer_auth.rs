//! A legacy Video Indexer tool that fetches its own token keeps working through a
//! `video_indexer` route: azgate answers the classic auth calls
//! (`/auth/{location}/Accounts/{id}[/Projects/{pid}|/Videos/{vid}]/AccessToken`) itself,
//! from its credential, with the scope asked for and edit rights never above the
//! credential's; other accounts get 403, malformed ids 400, and nothing of the tool's
//! request reaches Video Indexer.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::entra::MockEntra;
use support::video_indexer::{
    ACCOUNT, KEY, MockVideoIndexer, arm_credentials, classic_credential, jwt, now_secs,
    token_string, vi_error,
};
use support::{Azgate, client, config_text};

fn env() -> HashMap<&'static str, &'static str> {
    HashMap::from([("VI_KEY", KEY), ("ARM_SECRET", "entra-client-secret")])
}

/// A classic credential on `vi`, a `/vi` route to it, and `extra` credential lines.
fn classic(vi: &str, extra: &str) -> String {
    classic_credential("vi", vi, extra) + &vi_route(vi)
}

/// An ARM-based credential buying tokens from `management` with an ARM token from `entra`.
fn arm_based(entra: &str, management: &str, permission: &str) -> String {
    arm_credentials(entra, management, &format!("permission = \"{permission}\""))
        + &vi_route(management)
}

fn vi_route(upstream: &str) -> String {
    format!("[[routes]]\nprefix = \"/vi\"\nupstream = \"{upstream}\"\ncredential = \"vi\"\n")
}

async fn start(body: &str) -> Azgate {
    Azgate::start_with(&config_text(body), Path::new("."), &env()).await
}

/// GETs `path` on azgate the way a legacy tool does (with its own key) and returns the
/// status, headers and body.
async fn tool_get(gw: &Azgate, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let response = client()
        .get(format!("{}{path}", gw.url))
        .header("Ocp-Apim-Subscription-Key", "the-tools-own-key")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// The token of a successful answer: a JSON string, as Video Indexer sends it.
async fn token(gw: &Azgate, path: &str) -> String {
    let (status, headers, body) = tool_get(gw, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-store");
    match serde_json::from_str(&body) {
        Ok(serde_json::Value::String(token)) => token,
        _ => panic!("{path}: not a JSON string: {body}"),
    }
}

fn auth(scoped: &str, allow_edit: bool) -> String {
    format!("/vi/auth/trial/Accounts/{ACCOUNT}{scoped}/AccessToken?allowEdit={allow_edit}")
}

#[tokio::test]
async fn the_account_token_call_is_answered_from_the_credential() {
    let vi = MockVideoIndexer::start().await;
    let gw = start(&classic(&vi.url, "")).await;

    // The credential is read-only: asking for edit rights gets the read-only token.
    assert_eq!(token(&gw, &auth("", true)).await, "vi-token-1");
    let calls = vi.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].path,
        format!("/auth/trial/Accounts/{ACCOUNT}/AccessToken")
    );
    assert_eq!(calls[0].query.as_deref(), Some("allowEdit=false"));
    assert_eq!(calls[0].header("ocp-apim-subscription-key"), Some(KEY));

    // The same token serves the tool's data calls and its next auth call.
    assert_eq!(token(&gw, &auth("", false)).await, "vi-token-1");
    assert_eq!(vi.call_count(), 1);
    assert_eq!(vi.data_calls(), 0, "the tool's auth call was forwarded");

    // Both answers went through the access log and request history like any request.
    let admin = gw.admin_url.clone().unwrap();
    let mut status = serde_json::Value::Null;
    // A request is recorded when its body is dropped, just after the client has it.
    for _ in 0..50 {
        let url = format!("{admin}/status.json");
        status = support::json(client().get(url).send().await.unwrap()).await;
        if status["requests"].as_array().is_some_and(|r| r.len() >= 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requests = status["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2, "{status}");
    for request in requests {
        assert_eq!(request["status"], 200);
        assert_eq!(request["route"], "/vi");
        assert_eq!(request["attempts"], 0);
    }
    assert!(!status.to_string().contains("vi-token-1"));
    assert!(!status.to_string().contains(KEY));
    gw.stop().await;
}

#[tokio::test]
async fn video_and_project_tokens_are_fetched_once_per_scope() {
    let vi = MockVideoIndexer::start().await;
    let gw = start(&classic(&vi.url, "allow_edit = true")).await;

    assert_eq!(
        token(&gw, &auth("/Videos/abc-123", true)).await,
        "vi-token-1"
    );
    assert_eq!(
        token(&gw, &auth("/Videos/abc-123", true)).await,
        "vi-token-1"
    );
    assert_eq!(
        token(&gw, &auth("/Videos/abc-123", false)).await,
        "vi-token-2"
    );
    assert_eq!(
        token(&gw, &auth("/Projects/p_1", false)).await,
        "vi-token-3"
    );
    // Read-only at account level is narrower than the credential: a scoped fetch.
    assert_eq!(token(&gw, &auth("", false)).await, "vi-token-4");
    // Edit rights at account level are the credential's own token.
    assert_eq!(token(&gw, &auth("", true)).await, "vi-token-5");
    let seen: Vec<(String, Option<String>)> =
        vi.calls().into_iter().map(|c| (c.path, c.query)).collect();
    let base = format!("/auth/trial/Accounts/{ACCOUNT}");
    let want = [
        (
            format!("{base}/Videos/abc-123/AccessToken"),
            "allowEdit=true",
        ),
        (
            format!("{base}/Videos/abc-123/AccessToken"),
            "allowEdit=false",
        ),
        (
            format!("{base}/Projects/p_1/AccessToken"),
            "allowEdit=false",
        ),
        (format!("{base}/AccessToken"), "allowEdit=false"),
        (format!("{base}/AccessToken"), "allowEdit=true"),
    ];
    let want: Vec<(String, Option<String>)> = want
        .into_iter()
        .map(|(p, q)| (p, Some(q.to_string())))
        .collect();
    assert_eq!(seen, want);
    assert!(
        vi.calls()
            .iter()
            .all(|c| c.header("ocp-apim-subscription-key") == Some(KEY))
    );

    // A burst for one new video makes one fetch.
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let url = format!("{}{}", gw.url, auth("/Videos/v-burst", false));
            tokio::spawn(async move { client().get(url).send().await.unwrap().text().await })
        })
        .collect();
    for task in burst {
        assert_eq!(task.await.unwrap().unwrap(), "\"vi-token-6\"");
    }
    assert_eq!(vi.call_count(), 6);
    assert_eq!(vi.data_calls(), 0);
}

#[tokio::test]
async fn other_accounts_and_malformed_ids_are_refused_before_anything_is_sent() {
    let vi = MockVideoIndexer::start().await;
    let gw = start(&classic(&vi.url, "")).await;
    let long = "x".repeat(65);
    let cases = [
        (
            "/vi/auth/trial/Accounts/11111111-0000-0000-0000-000000000000/AccessToken".to_string(),
            403,
            "forbidden",
        ),
        (
            format!("/vi/auth/westus2/Accounts/{ACCOUNT}/Videos/v1/AccessToken"),
            403,
            "forbidden",
        ),
        (auth("/Videos/a.b", false), 400, "bad_request"),
        (auth(&format!("/Videos/{long}"), false), 400, "bad_request"),
        (auth("/Projects/a%21b", false), 400, "bad_request"),
        (
            "/vi/auth/tr~al/Accounts/x/AccessToken".to_string(),
            400,
            "bad_request",
        ),
    ];
    for (path, want, code) in cases {
        let (status, headers, body) = tool_get(&gw, &path).await;
        assert_eq!(status, want, "{path}: {body}");
        assert_eq!(headers["x-azgate-error"], code, "{path}");
    }
    let response = client()
        .post(format!("{}{}", gw.url, auth("", false)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
    assert_eq!(vi.call_count(), 0);
    assert_eq!(vi.data_calls(), 0);
}

#[tokio::test]
async fn refusals_keep_their_status_and_are_not_cached() {
    let vi = MockVideoIndexer::start().await;
    vi.respond_with(|call, n| {
        if call.path.contains("/Videos/missing/") {
            vi_error(404, "NOT_FOUND", "Video 'missing' was not found")
        } else if call.path.contains("/Videos/broken/") {
            vi_error(500, "GENERAL", "Something went wrong")
        } else {
            token_string(&format!("vi-token-{n}"))
        }
    });
    let gw = start(&classic(&vi.url, "")).await;
    for _ in 0..2 {
        let (status, headers, body) = tool_get(&gw, &auth("/Videos/missing", false)).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(headers["x-azgate-error"], "token_refused");
        assert!(
            body.contains("NOT_FOUND: Video 'missing' was not found"),
            "{body}"
        );
        assert!(body.contains("\\\"vi\\\""), "names the credential: {body}");
    }
    assert_eq!(vi.call_count(), 2, "a refusal is not cached");
    let (status, headers, body) = tool_get(&gw, &auth("/Videos/broken", false)).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(headers["x-azgate-error"], "credential_unavailable");
    assert!(body.contains("GENERAL"), "{body}");
    assert!(!body.contains(KEY));
}

#[tokio::test]
async fn arm_accounts_get_generate_access_token_with_the_scope_asked_for() {
    let entra = MockEntra::start().await;
    for (permission, edit, want_permission) in [
        ("Reader", true, "Reader"),
        ("Contributor", true, "Contributor"),
        ("Contributor", false, "Reader"),
    ] {
        let arm = MockVideoIndexer::start().await;
        let gw = start(&arm_based(&entra.url, &arm.url, permission)).await;
        let path = |scoped: &str| {
            format!("/vi/auth/westeurope/Accounts/{ACCOUNT}{scoped}/AccessToken?allowEdit={edit}")
        };
        token(&gw, &path("/Videos/v1")).await;
        token(&gw, &path("/Projects/p1")).await;
        token(&gw, &path("")).await;
        let bodies: Vec<serde_json::Value> = arm.calls().iter().map(|c| c.json()).collect();
        assert!(arm.calls().iter().all(|c| c.is_arm()));
        assert_eq!(
            bodies,
            [
                json!({"permissionType": want_permission, "scope": "Video", "videoId": "v1"}),
                json!({"permissionType": want_permission, "scope": "Project", "projectId": "p1"}),
                json!({"permissionType": want_permission, "scope": "Account"}),
            ],
            "{permission}, allowEdit={edit}"
        );
        gw.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn scoped_tokens_are_renewed_at_their_refresh_point() {
    let vi = MockVideoIndexer::start().await;
    vi.respond_with(|_, n| token_string(&jwt(json!({"exp": now_secs() + 3600, "n": n}))));
    let gw = start(&classic(&vi.url, "")).await;
    let first = token(&gw, &auth("/Videos/v1", false)).await;
    tokio::time::advance(Duration::from_secs(3000)).await;
    assert_eq!(token(&gw, &auth("/Videos/v1", false)).await, first);
    assert_eq!(vi.call_count(), 1);
    // 5 minutes before expiry a tool gets a new token, not one about to expire.
    tokio::time::advance(Duration::from_secs(400)).await;
    assert_ne!(token(&gw, &auth("/Videos/v1", false)).await, first);
    assert_eq!(vi.call_count(), 2);
}
