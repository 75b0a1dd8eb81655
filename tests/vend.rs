//! Token vending routes (`vend = "vi"`): read-only Video Indexer tokens per account,
//! project and video for embedded widgets, from a bounded moka cache with single flight per
//! key, a bound on distinct fetches, refusals remembered for 30 s, and CORS for listed
//! origins; and `scoped_tokens` on forwarding routes (a request about one video or project
//! carries a token for it only). Mock ARM (restricted viewer tokens) and mock classic
//! Video Indexer speak the shapes of AZURE.md.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::entra::{MockEntra, v2_token};
use support::logs::LogCapture;
use support::metrics::get;
use support::video_indexer::{
    ACCOUNT, KEY, MockVideoIndexer, arm_credentials, arm_error, arm_token, classic_credential, jwt,
    now_secs, token_string, vi_error,
};
use support::{Azgate, client, config_text, h2c_client};

const ARM_SECRET: &str = "entra-client-secret-SECRET";

fn env() -> HashMap<&'static str, &'static str> {
    HashMap::from([("VI_KEY", KEY), ("ARM_SECRET", ARM_SECRET)])
}

/// An ARM-based Video Indexer account (Contributor: vending must still hand out viewer
/// tokens only) and a vending route on it with `route` extra lines.
fn arm_account(entra: &str, management: &str, route: &str) -> String {
    arm_credentials(entra, management, "permission = \"Contributor\"") + &vending_route(route)
}

/// A classic account with edit rights, and a vending route on it.
fn classic_account(vi: &str, route: &str) -> String {
    classic_credential("vi", vi, "allow_edit = true") + &vending_route(route)
}

fn vending_route(extra: &str) -> String {
    format!("[[routes]]\nprefix = \"/vi-tokens\"\nvend = \"vi\"\n{extra}\n")
}

async fn start(body: &str) -> Azgate {
    Azgate::start_with(&config_text(body), Path::new("."), &env()).await
}

/// GET `path`: status, headers, body.
async fn get_path(gw: &Azgate, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let response = client()
        .get(format!("{}{path}", gw.url))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// The JSON of a 200 answer, after checking its headers.
async fn vended(gw: &Azgate, path: &str) -> Value {
    let (status, headers, body) = get_path(gw, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-store");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn arm_accounts_get_restricted_viewer_tokens_for_each_scope() {
    let entra = MockEntra::start().await;
    let management = MockVideoIndexer::start().await;
    let exp = now_secs() + 3600;
    management
        .respond_with(move |call, n| arm_token(&jwt(json!({"exp": exp, "n": n, "p": call.path}))));
    let gw = start(&arm_account(&entra.url, &management.url, "")).await;

    let account = vended(&gw, "/vi-tokens/account").await;
    let project = vended(&gw, "/vi-tokens/projects/07ec9e38d4").await;
    let video = vended(&gw, "/vi-tokens/videos/a1b2-c3_d4").await;

    let calls = management.calls();
    assert_eq!(calls.len(), 3, "{calls:#?}");
    let action = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.VideoIndexer/accounts/myvi/generateRestrictedViewerAccessToken";
    let bodies: Vec<Value> = calls.iter().map(|c| c.json()).collect();
    assert_eq!(
        bodies,
        [
            json!({"scope": "Account"}),
            json!({"scope": "Project", "projectId": "07ec9e38d4"}),
            json!({"scope": "Video", "videoId": "a1b2-c3_d4"}),
        ]
    );
    for call in &calls {
        assert_eq!(call.method, "POST");
        assert_eq!(call.path, action);
        assert_eq!(call.query.as_deref(), Some("api-version=2024-01-01"));
        let bearer = call.header("authorization").unwrap_or_default();
        assert!(bearer.starts_with("Bearer "), "{bearer}");
    }
    // The exact body bytes: no permissionType, nothing else.
    assert_eq!(calls[2].body, r#"{"scope":"Video","videoId":"a1b2-c3_d4"}"#);

    let expires_on = chrono::DateTime::from_timestamp(exp as i64, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(account["scope"], "Account");
    assert_eq!(account["expiresOn"], expires_on.as_str());
    assert!(account.get("videoId").is_none() && account.get("embed").is_none());
    assert_eq!(project["scope"], "Project");
    assert_eq!(project["projectId"], "07ec9e38d4");
    assert_eq!(video["scope"], "Video");
    assert_eq!(video["videoId"], "a1b2-c3_d4");
    let token = video["accessToken"].as_str().unwrap();
    assert_ne!(token, account["accessToken"].as_str().unwrap());
    assert_eq!(
        video["embed"]["player"],
        format!(
            "https://www.videoindexer.ai/embed/player/{ACCOUNT}/a1b2-c3_d4/?location=westeurope&accessToken={token}"
        )
    );
    assert_eq!(
        video["embed"]["insights"],
        format!(
            "https://www.videoindexer.ai/embed/insights/{ACCOUNT}/a1b2-c3_d4/?location=westeurope&accessToken={token}"
        )
    );

    // Served from the cache afterwards.
    assert_eq!(vended(&gw, "/vi-tokens/videos/a1b2-c3_d4").await, video);
    assert_eq!(management.call_count(), 3);
}

#[tokio::test]
async fn classic_accounts_get_tokens_without_edit_rights() {
    let vi = MockVideoIndexer::start().await;
    let gw = start(&classic_account(
        &vi.url,
        r#"embed_url = "https://widgets.contoso.example/""#,
    ))
    .await;
    let video = vended(&gw, "/vi-tokens/videos/v1").await;
    vended(&gw, "/vi-tokens/projects/p1").await;
    vended(&gw, "/vi-tokens/account").await;
    let calls = vi.calls();
    let paths: Vec<(&str, Option<&str>)> = calls
        .iter()
        .map(|c| (c.path.as_str(), c.query.as_deref()))
        .collect();
    let base = format!("/auth/trial/Accounts/{ACCOUNT}");
    assert_eq!(
        paths,
        [
            (
                format!("{base}/Videos/v1/AccessToken").as_str(),
                Some("allowEdit=false")
            ),
            (
                format!("{base}/Projects/p1/AccessToken").as_str(),
                Some("allowEdit=false")
            ),
            (
                format!("{base}/AccessToken").as_str(),
                Some("allowEdit=false")
            ),
        ]
    );
    assert!(
        calls
            .iter()
            .all(|c| c.header("ocp-apim-subscription-key") == Some(KEY))
    );
    assert!(
        video["embed"]["player"]
            .as_str()
            .unwrap()
            .starts_with(&format!("https://widgets.contoso.example/embed/player/{ACCOUNT}/v1/?location=trial&accessToken=vi-token-1"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_for_one_video_make_one_upstream_call() {
    let vi = MockVideoIndexer::start().await;
    vi.set_delay(Duration::from_millis(300));
    let gw = start(&classic_account(&vi.url, "")).await;
    let h2 = h2c_client();
    let url = format!("{}/vi-tokens/videos/popular", gw.url);
    let requests = (0..1000).map(|_| {
        let (h2, url) = (h2.clone(), url.clone());
        tokio::spawn(async move {
            let response = h2.get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        })
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut tokens = std::collections::BTreeSet::new();
    for answer in answers {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 200, "{body}");
        let json: Value = serde_json::from_str(&body).unwrap();
        tokens.insert(json["accessToken"].as_str().unwrap().to_string());
    }
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(vi.call_count(), 1, "one fetch for one key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_videos_are_fetched_in_parallel_but_never_past_the_bound() {
    let vi = MockVideoIndexer::start().await;
    vi.set_delay(Duration::from_millis(150));
    let gw = start(&classic_account(&vi.url, "max_concurrent_fetches = 3")).await;
    let h2 = h2c_client();
    let requests = (0..24).map(|i| {
        let (h2, url) = (h2.clone(), format!("{}/vi-tokens/videos/v{i}", gw.url));
        tokio::spawn(async move { h2.get(url).send().await.unwrap().status().as_u16() })
    });
    for status in futures_util::future::join_all(requests).await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(vi.call_count(), 24);
    assert_eq!(
        vi.max_in_flight(),
        3,
        "three fetches at once, not more, not fewer"
    );
}

#[tokio::test(start_paused = true)]
async fn a_token_is_refetched_before_its_margin_and_never_served_inside_it() {
    let vi = MockVideoIndexer::start().await;
    vi.respond_with(|_, n| token_string(&jwt(json!({"exp": now_secs() + 3600, "n": n}))));
    let gw = start(&classic_account(&vi.url, "")).await;
    let first = vended(&gw, "/vi-tokens/videos/v1").await["accessToken"].clone();
    // 40 s left: still outside the 30 s margin, served from the cache.
    tokio::time::advance(Duration::from_secs(3560)).await;
    assert_eq!(
        vended(&gw, "/vi-tokens/videos/v1").await["accessToken"],
        first
    );
    assert_eq!(vi.call_count(), 1);
    // 25 s left: inside the margin, so a fresh token.
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_ne!(
        vended(&gw, "/vi-tokens/videos/v1").await["accessToken"],
        first
    );
    assert_eq!(vi.call_count(), 2);
}

#[tokio::test]
async fn the_cache_keeps_at_most_max_entries_tokens() {
    let vi = MockVideoIndexer::start().await;
    let gw = start(&classic_account(&vi.url, "max_entries = 5")).await;
    for i in 0..20 {
        vended(&gw, &format!("/vi-tokens/videos/v{i}")).await;
    }
    let admin = gw.admin_url.clone().unwrap();
    let metrics = support::metrics::scrape(&admin).await;
    let entries = get(
        &metrics,
        "azgate_vend_cache_entries",
        &[("route", "/vi-tokens")],
    );
    assert!((1.0..=5.0).contains(&entries), "{entries} entries");
    // The oldest went first: asking for it again costs a call, the newest does not.
    vended(&gw, "/vi-tokens/videos/v19").await;
    assert_eq!(vi.call_count(), 20);
    vended(&gw, "/vi-tokens/videos/v0").await;
    assert_eq!(vi.call_count(), 21);
    let count = |outcome: &str| {
        get(
            &metrics,
            "azgate_vend_requests_total",
            &[
                ("route", "/vi-tokens"),
                ("scope", "video"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(
        (count("miss"), count("hit"), count("refused")),
        (20.0, 0.0, 0.0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_remembered_for_30_seconds_then_asked_again() {
    let entra = MockEntra::start().await;
    let management = MockVideoIndexer::start().await;
    management.respond_with(|_, _| {
        arm_error(
            404,
            "BREAKDOWN_NOT_FOUND",
            "Video '07ec9e38d4' was not found",
        )
    });
    let gw = start(&arm_account(&entra.url, &management.url, "")).await;
    for _ in 0..5 {
        let (status, headers, body) = get_path(&gw, "/vi-tokens/videos/07ec9e38d4").await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(headers["x-azgate-error"], "token_refused");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"]["code"], "token_refused");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("BREAKDOWN_NOT_FOUND") && message.contains("was not found"),
            "{message}"
        );
    }
    assert_eq!(management.call_count(), 1);
    tokio::time::advance(Duration::from_secs(29)).await;
    assert_eq!(get_path(&gw, "/vi-tokens/videos/07ec9e38d4").await.0, 404);
    assert_eq!(management.call_count(), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(get_path(&gw, "/vi-tokens/videos/07ec9e38d4").await.0, 404);
    assert_eq!(management.call_count(), 2);
}

#[tokio::test]
async fn failures_that_are_not_refusals_are_502_and_not_remembered() {
    let vi = MockVideoIndexer::start().await;
    vi.respond_with(|_, _| vi_error(500, "GENERAL", "Something went wrong"));
    let gw = start(&classic_account(&vi.url, "")).await;
    for n in 1..=2 {
        let (status, headers, body) = get_path(&gw, "/vi-tokens/videos/v1").await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(headers["x-azgate-error"], "credential_unavailable");
        assert_eq!(vi.call_count(), n);
    }
}

#[tokio::test]
async fn malformed_ids_are_400_and_nothing_goes_upstream() {
    let vi = MockVideoIndexer::start().await;
    let gw = start(&classic_account(&vi.url, "")).await;
    let long = "x".repeat(65);
    for id in [
        "a%2Fb", "a%2fb", "a%20b", "%22v%22", "%00", "a.b", "", "a/b", "v%5C1", "%C3%A9", &long,
    ] {
        for kind in ["videos", "projects"] {
            let path = format!("/vi-tokens/{kind}/{id}");
            let (status, headers, body) = get_path(&gw, &path).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert_eq!(headers["x-azgate-error"], "bad_request", "{path}");
        }
    }
    for path in [
        "/vi-tokens",
        "/vi-tokens/",
        "/vi-tokens/videos",
        "/vi-tokens/users/x",
    ] {
        let (status, headers, _) = get_path(&gw, path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(headers["x-azgate-error"], "route_not_found");
    }
    let response = client()
        .post(format!("{}/vi-tokens/videos/v1", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "GET");
    assert_eq!(vi.call_count(), 0, "{:?}", vi.calls());
}

#[tokio::test]
async fn cors_is_answered_for_listed_origins_only() {
    let vi = MockVideoIndexer::start().await;
    let gw = start(&classic_account(
        &vi.url,
        "[routes.cors]\nallow_origins = [\"https://app.contoso.com\"]",
    ))
    .await;
    let url = format!("{}/vi-tokens/videos/v1", gw.url);
    let c = client();

    let listed = c
        .get(&url)
        .header("origin", "https://app.contoso.com")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 200);
    assert_eq!(
        listed.headers()["access-control-allow-origin"],
        "https://app.contoso.com"
    );
    assert_eq!(listed.headers()["vary"], "origin");

    let other = c
        .get(&url)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 200);
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let preflight = |origin: &'static str| {
        c.request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let ok = preflight("https://app.contoso.com").await.unwrap();
    assert_eq!(ok.status().as_u16(), 204);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.contoso.com"
    );
    assert_eq!(ok.headers()["access-control-allow-methods"], "GET");
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert!(
        refused
            .headers()
            .get("access-control-allow-methods")
            .is_none()
    );

    // Errors carry CORS too, so the page can read them.
    let bad = c
        .get(format!("{}/vi-tokens/videos/a.b", gw.url))
        .header("origin", "https://app.contoso.com")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    assert_eq!(
        bad.headers()["access-control-allow-origin"],
        "https://app.contoso.com"
    );
    assert_eq!(vi.call_count(), 1);
}

#[tokio::test]
async fn route_keys_narrow_who_may_get_tokens() {
    let vi = MockVideoIndexer::start().await;
    let body = format!(
        "[server.inbound]\napi_keys = [\"key-a-0123456789abcdef\", \"key-b-0123456789abcdef\"]\n{}",
        classic_account(&vi.url, "api_keys = [\"key-a-0123456789abcdef\"]")
    );
    let gw = start(&body).await;
    let url = format!("{}/vi-tokens/account", gw.url);
    let with = |key: &'static str| client().get(&url).header("x-azgate-key", key).send();
    assert_eq!(
        with("key-a-0123456789abcdef")
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        with("key-b-0123456789abcdef")
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    assert_eq!(
        client().get(&url).send().await.unwrap().status().as_u16(),
        401
    );
    assert_eq!(vi.call_count(), 1);
}

#[tokio::test]
async fn no_secret_reaches_an_answer_a_log_line_or_the_status_page() {
    let logs = LogCapture::default();
    let _guard = logs.install_json(tracing::Level::DEBUG);
    let entra = MockEntra::start().await;
    entra.respond_with(|_, n| v2_token(&format!("arm-access-SECRET-{n}"), 3599));
    let management = MockVideoIndexer::start().await;
    let gw = start(&arm_account(&entra.url, &management.url, "")).await;
    let mut seen = String::new();
    for path in [
        "/vi-tokens/account",
        "/vi-tokens/videos/v1",
        "/vi-tokens/videos/a.b",
    ] {
        seen.push_str(&get_path(&gw, path).await.2);
    }
    management.respond_with(|_, _| arm_error(403, "USER_NOT_ALLOWED", "no access"));
    seen.push_str(&get_path(&gw, "/vi-tokens/videos/v2").await.2);
    let admin = gw.admin_url.clone().unwrap();
    for page in ["/status.json", "/status", "/metrics"] {
        seen.push_str(
            &client()
                .get(format!("{admin}{page}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    seen.push_str(&logs.text());
    assert!(entra.call_count() >= 1);
    for secret in ["arm-access-SECRET", ARM_SECRET, KEY] {
        assert!(!seen.contains(secret), "{secret} leaked");
    }
    // The answers do carry the viewer tokens themselves: that is what they are for.
    assert!(seen.contains("vi-token-"));
}

/// The `accessToken` a forwarded request carried upstream (the mock echoes it).
async fn forwarded_token(gw: &Azgate, path: &str) -> String {
    let response = client()
        .get(format!("{}{path}", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{path}");
    let echo: Value = response.json().await.unwrap();
    let query = echo["query"].as_str().unwrap_or_default().to_string();
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "accessToken")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| panic!("{path}: no accessToken in {query}"))
}

#[tokio::test]
async fn scoped_tokens_give_a_forwarded_request_a_token_for_its_video_or_project_only() {
    let vi = MockVideoIndexer::start().await;
    vi.respond_with(|call, n| {
        // Name each token after the call that bought it.
        let scope = call.path.rsplit('/').nth(1).unwrap_or_default().to_string();
        token_string(&format!(
            "tok-{n}-{scope}-{}",
            call.query.as_deref().unwrap_or_default()
        ))
    });
    let body = classic_credential("vi", &vi.url, "allow_edit = true")
        + &format!(
            "[[routes]]\nprefix = \"/vi\"\nupstream = \"{vi}\"\ncredential = \"vi\"\nscoped_tokens = true\n\
             [[routes]]\nprefix = \"/vi-account\"\nupstream = \"{vi}\"\ncredential = \"vi\"\n",
            vi = vi.url
        );
    let gw = start(&body).await;
    let base = format!("/vi/trial/Accounts/{ACCOUNT}");

    let video = forwarded_token(&gw, &format!("{base}/Videos/v1/Index")).await;
    assert_eq!(
        video, "tok-1-v1-allowEdit=true",
        "the credential's permission, for v1"
    );
    assert_eq!(
        forwarded_token(&gw, &format!("{base}/Videos/v1/Captions?format=vtt")).await,
        video,
        "kept for the next request about v1"
    );
    let project = forwarded_token(&gw, &format!("{base}/Projects/p1/render")).await;
    assert_eq!(project, "tok-2-p1-allowEdit=true");
    // Requests about no one video or project get the account token.
    let account = forwarded_token(&gw, &format!("{base}/Videos/Search?query=x")).await;
    assert_eq!(account, format!("tok-3-{ACCOUNT}-allowEdit=true"));
    assert_eq!(
        forwarded_token(&gw, &format!("{base}/Videos")).await,
        account
    );
    // Without `scoped_tokens` a video path gets the account token, as before.
    let plain = format!("/vi-account/trial/Accounts/{ACCOUNT}/Videos/v1/Index");
    assert_eq!(forwarded_token(&gw, &plain).await, account);
    assert_eq!(vi.call_count(), 3);

    // A scoped token Video Indexer refuses is the client's 404, not a 502.
    vi.respond_with(|_, _| vi_error(404, "VIDEO_NOT_FOUND", "The video was not found"));
    let response = client()
        .get(format!("{}{base}/Videos/missing1/Index", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(response.headers()["x-azgate-error"], "token_refused");
}

#[tokio::test]
async fn a_reload_keeps_the_cached_tokens_of_an_unchanged_route() {
    let vi = MockVideoIndexer::start().await;
    let body = classic_account(&vi.url, "");
    let gw = start(&body).await;
    let url = gw.url.clone();
    let token = |url: String| async move {
        let json: Value = client()
            .get(format!("{url}/vi-tokens/videos/v1"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        json["accessToken"].as_str().unwrap().to_string()
    };
    let first = token(url.clone()).await;
    let server = gw.into_server();
    let parse = |text: String| {
        let env = env();
        let lookup = |name: &str| env.get(name).map(|v| v.to_string());
        azgate::config::parse(&config_text(&text), "test.toml", Path::new("."), &lookup).unwrap()
    };
    // Another route added: this one unchanged, its tokens kept.
    let more = format!(
        "{body}\n[[routes]]\nprefix = \"/other\"\nupstream = \"{}\"\n",
        vi.url
    );
    server.apply(parse(more)).unwrap();
    assert_eq!(token(url.clone()).await, first);
    assert_eq!(vi.call_count(), 1);
    // The route changed: a new cache.
    server
        .apply(parse(classic_account(&vi.url, "max_entries = 100")))
        .unwrap();
    assert_ne!(token(url.clone()).await, first);
    assert_eq!(vi.call_count(), 2);
    server.shutdown();
}

#[tokio::test(start_paused = true)]
async fn video_indexers_429_holds_the_routes_fetches_and_passes_its_retry_after_on() {
    let vi = MockVideoIndexer::start().await;
    vi.respond_with(|call, _| {
        if call.path.contains("/Videos/busy") {
            support::video_indexer::throttled(5)
        } else {
            token_string(&jwt(json!({"exp": now_secs() + 3600})))
        }
    });
    let gw = start(&classic_account(&vi.url, "")).await;
    // A token cached before the 429 is still served during the hold.
    vended(&gw, "/vi-tokens/videos/cached").await;
    let (status, headers, body) = get_path(&gw, "/vi-tokens/videos/busy").await;
    assert_eq!(status, 429);
    assert_eq!(
        headers.get("retry-after").map(|v| v.to_str().unwrap()),
        Some("5"),
        "{headers:?} {body}"
    );
    assert_eq!(headers["x-azgate-error"], "token_refused");
    // Other keys are not fetched while the account is throttled.
    tokio::time::advance(Duration::from_secs(2)).await;
    let (status, headers, _) = get_path(&gw, "/vi-tokens/videos/other").await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "3");
    vended(&gw, "/vi-tokens/videos/cached").await;
    assert_eq!(vi.call_count(), 2, "{:?}", vi.calls());
    // After the window, fetches go again.
    tokio::time::advance(Duration::from_secs(4)).await;
    vended(&gw, "/vi-tokens/videos/other").await;
    assert_eq!(vi.call_count(), 3);
}

#[tokio::test]
async fn readiness_of_a_vending_only_config_does_not_follow_the_account_token() {
    let vi = MockVideoIndexer::start().await;
    vi.respond_with(|_, _| vi_error(500, "GENERAL", "down"));
    let gw = start(&classic_account(&vi.url, "")).await;
    let admin = gw.admin_url.clone().unwrap();
    let ready = client()
        .get(format!("{admin}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        200,
        "a classic account's vending needs only its key"
    );
    assert_eq!(vi.call_count(), 0, "no account token was fetched");
}
