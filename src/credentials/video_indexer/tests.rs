//! Unit tests of the Video Indexer token source: URLs, descriptions, and calls against a
//! tiny ARM mock.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, header};
use serde_json::{Value, json};

use super::*;
use crate::config::VideoIndexerInject;

/// The account-token source of a credential built from `config`.
fn account(config: &VideoIndexerConfig, arm: Option<Arc<TokenCache>>) -> AccountToken {
    AccountToken(Arc::new(VideoIndexer::new(config, arm)))
}

fn config(auth: VideoIndexerAuth) -> VideoIndexerConfig {
    VideoIndexerConfig {
        location: "trial".into(),
        account_id: "00000000-1111-2222-3333-444444444444".into(),
        auth,
        inject: VideoIndexerInject::Query,
        api_url: "https://api.videoindexer.ai".into(),
        management_url: "https://management.azure.com".into(),
    }
}

fn arm_auth(permission: &str) -> VideoIndexerAuth {
    VideoIndexerAuth::Arm {
        arm: "arm".into(),
        subscription_id: "sub 1".into(),
        resource_group: "rg/(x)".into(),
        account_name: "myvi".into(),
        permission: permission.into(),
    }
}

#[test]
fn urls_and_descriptions() {
    let classic = VideoIndexer::new(
        &config(VideoIndexerAuth::Classic {
            subscription_key: Secret::new("key-123"),
            allow_edit: true,
        }),
        None,
    );
    let Account::Classic(c) = &classic.account else {
        panic!("classic")
    };
    let base =
        "https://api.videoindexer.ai/auth/trial/Accounts/00000000-1111-2222-3333-444444444444";
    let cases = [
        (
            Scope::Account,
            true,
            format!("{base}/AccessToken?allowEdit=true"),
        ),
        (
            Scope::Project("p-1".into()),
            false,
            format!("{base}/Projects/p-1/AccessToken?allowEdit=false"),
        ),
        (
            Scope::Video("v_2".into()),
            true,
            format!("{base}/Videos/v_2/AccessToken?allowEdit=true"),
        ),
    ];
    for (scope, edit, want) in cases {
        assert_eq!(c.url(&scope, edit), want);
    }
    assert!(classic.allows_edit());
    assert_eq!(
        classic.describe(),
        "video_indexer (classic, location trial, account 0000…, allow_edit, https://api.videoindexer.ai)"
    );
    let arm = VideoIndexer::new(&config(arm_auth("Reader")), None);
    assert!(!arm.allows_edit());
    let Account::Arm(a) = &arm.account else {
        panic!("arm")
    };
    assert_eq!(
        a.url,
        "https://management.azure.com/subscriptions/sub%201/resourceGroups/rg%2F%28x%29/providers/Microsoft.VideoIndexer/accounts/myvi/generateAccessToken?api-version=2024-01-01"
    );
    assert_eq!(
        arm.describe(),
        "video_indexer (ARM account myvi via credential arm, Reader, https://management.azure.com)"
    );
    assert_eq!(segment("a b/c?d#e%f"), "a%20b%2Fc%3Fd%23e%25f");
    assert_eq!(abbreviate("abc"), "abc");
}

#[tokio::test]
async fn arm_mode_without_its_arm_cache_fails_clearly() {
    crate::install_crypto_provider();
    let source = account(&config(arm_auth("Reader")), None);
    let err = source.fetch().await.unwrap_err();
    assert_eq!(
        err.message,
        "the ARM credential \"arm\" was not built (it must be an Entra ID token credential)"
    );
}

/// An ARM token source that always answers the same way.
struct FixedArm(Result<&'static str, &'static str>);

impl TokenSource for FixedArm {
    fn fetch(&self) -> FetchFuture<'_> {
        let answer = self.0;
        Box::pin(async move {
            match answer {
                Ok(token) => Token::new(token.to_string(), Duration::from_secs(3600)),
                Err(message) => Err(FetchError::new(message)),
            }
        })
    }
    fn describe(&self) -> String {
        "fixed".into()
    }
}

#[tokio::test]
async fn arm_credential_failure_is_named() {
    crate::install_crypto_provider();
    let arm = TokenCache::new(
        "arm",
        Box::new(FixedArm(Err(
            "invalid_client: AADSTS7000215: Invalid client secret provided. (HTTP 401)",
        ))),
    );
    let source = account(&config(arm_auth("Reader")), Some(arm));
    let err = source.fetch().await.unwrap_err();
    assert_eq!(
        err.message,
        "the ARM credential \"arm\" failed: invalid_client: AADSTS7000215: Invalid client secret provided. (HTTP 401)"
    );
}

/// One request as a tiny ARM mock saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Value,
}

/// A loopback HTTP/1.1 server answering every request with `status` and `body`.
async fn mock_arm(status: u16, body: &'static str) -> (String, Arc<std::sync::Mutex<Vec<Seen>>>) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        let (parts, incoming) = request.into_parts();
                        let bytes = incoming.collect().await.unwrap().to_bytes();
                        let text = |name| {
                            parts
                                .headers
                                .get(name)
                                .map(|v: &HeaderValue| v.to_str().unwrap().to_string())
                        };
                        record.lock().unwrap().push(Seen {
                            method: parts.method.to_string(),
                            uri: parts.uri.to_string(),
                            authorization: text(header::AUTHORIZATION),
                            content_type: text(header::CONTENT_TYPE),
                            body: serde_json::from_slice(&bytes).unwrap_or_default(),
                        });
                        let response = http::Response::builder()
                            .status(status)
                            .body(Full::new(bytes::Bytes::from_static(body.as_bytes())))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (url, seen)
}

#[tokio::test]
async fn arm_mode_posts_generate_access_token_with_the_arm_bearer() {
    crate::install_crypto_provider();
    let (url, seen) = mock_arm(200, r#"{"accessToken":"vi-from-arm"}"#).await;
    let arm = TokenCache::new("arm", Box::new(FixedArm(Ok("arm-token"))));
    let mut cfg = config(arm_auth("Contributor"));
    cfg.management_url = url;
    let source = account(&cfg, Some(arm));
    let token = source.fetch().await.unwrap();
    assert_eq!(token.value.expose(), "vi-from-arm");
    let lifetime = token.lifetime().as_secs();
    assert_eq!(lifetime, 3600, "no exp in an opaque token: one hour");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].uri,
        "/subscriptions/sub%201/resourceGroups/rg%2F%28x%29/providers/Microsoft.VideoIndexer/accounts/myvi/generateAccessToken?api-version=2024-01-01"
    );
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer arm-token"));
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(
        seen[0].body,
        json!({"permissionType": "Contributor", "scope": "Account"})
    );
}

#[tokio::test]
async fn arm_401_drops_the_arm_token() {
    crate::install_crypto_provider();
    let (url, seen) = mock_arm(
        401,
        r#"{"error":{"code":"ExpiredAuthenticationToken","message":"The access token expiry UTC time is earlier than current UTC time."}}"#,
    )
    .await;
    let arm = TokenCache::new("arm", Box::new(FixedArm(Ok("arm-token"))));
    let mut cfg = config(arm_auth("Reader"));
    cfg.management_url = url;
    let source = account(&cfg, Some(arm.clone()));
    let err = source.fetch().await.unwrap_err();
    assert_eq!(
        err.message,
        "ARM generateAccessToken answered 401: ExpiredAuthenticationToken: The access token expiry UTC time is earlier than current UTC time."
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    // The rejected token was dropped and a new one fetched in its place.
    tokio::time::timeout(Duration::from_secs(5), async {
        while arm.status().fetches < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn unreachable_endpoints_are_named() {
    crate::install_crypto_provider();
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = config(VideoIndexerAuth::Classic {
        subscription_key: Secret::new("key-123"),
        allow_edit: false,
    });
    cfg.api_url = format!("http://127.0.0.1:{port}");
    let err = account(&cfg, None).fetch().await.unwrap_err();
    assert!(
        err.message.starts_with("cannot reach Video Indexer: "),
        "{}",
        err.message
    );
    assert!(!err.message.contains("key-123"));
}
