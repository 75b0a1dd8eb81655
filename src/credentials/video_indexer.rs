//! `video_indexer`: the account access token Video Indexer expects on data-plane calls.
//!
//! Classic (API key) accounts buy it with the subscription key at
//! `{api_url}/auth/{location}/Accounts/{id}/AccessToken`; ARM-based accounts buy it with
//! another credential's ARM token at `generateAccessToken`. Neither answer says when the
//! token expires, so the expiry comes from the JWT's `exp` claim (one hour without it).
//! The cache calls `fetch`; `mod.rs` puts the token in the query or in a bearer header.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD_INDIFFERENT;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::cache::TokenCache;
use super::token::{
    FetchError, FetchFuture, Token, TokenSource, http_client, remaining, retry_after, snippet,
};
use crate::config::{VideoIndexerAuth, VideoIndexerConfig};
use crate::secret::Secret;

/// What `generateAccessToken` is called with; the ARM REST spec version AZURE.md quotes.
const ARM_API_VERSION: &str = "2024-01-01";
/// Per call; the cache bounds the whole fetch (ARM token included) at 60 s.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Video Indexer account tokens live one hour; used when the token does not say.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// A token answer is a few KiB; anything far larger is not one and is not read whole.
const MAX_BODY: usize = 64 * 1024;
/// Everything but RFC 3986 unreserved characters, so a value stays one path segment.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub struct VideoIndexer {
    location: String,
    account_id: String,
    account: Account,
    /// Built once; if that failed, every fetch reports why.
    client: Result<reqwest::Client, FetchError>,
}

enum Account {
    Classic(Classic),
    Arm(Arm),
}

struct Classic {
    api_url: String,
    /// The full auth URL, query included.
    url: String,
    subscription_key: Secret,
    allow_edit: bool,
}

struct Arm {
    /// The name of the credential that gives the ARM token.
    credential: String,
    /// `None` only if config validation let an unknown `arm` through.
    cache: Option<Arc<TokenCache>>,
    management_url: String,
    /// The full `generateAccessToken` URL, query included.
    url: String,
    account_name: String,
    permission: String,
}

impl VideoIndexer {
    pub fn new(config: &VideoIndexerConfig, arm: Option<Arc<TokenCache>>) -> Self {
        let account = match &config.auth {
            VideoIndexerAuth::Classic {
                subscription_key,
                allow_edit,
            } => Account::Classic(Classic {
                api_url: config.api_url.clone(),
                url: format!(
                    "{}/auth/{}/Accounts/{}/AccessToken?allowEdit={allow_edit}",
                    config.api_url.trim_end_matches('/'),
                    segment(&config.location),
                    segment(&config.account_id),
                ),
                subscription_key: subscription_key.clone(),
                allow_edit: *allow_edit,
            }),
            VideoIndexerAuth::Arm {
                arm: credential,
                subscription_id,
                resource_group,
                account_name,
                permission,
            } => Account::Arm(Arm {
                credential: credential.clone(),
                cache: arm,
                management_url: config.management_url.clone(),
                url: format!(
                    "{}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.VideoIndexer/accounts/{}/generateAccessToken?api-version={ARM_API_VERSION}",
                    config.management_url.trim_end_matches('/'),
                    segment(subscription_id),
                    segment(resource_group),
                    segment(account_name),
                ),
                account_name: account_name.clone(),
                permission: permission.clone(),
            }),
        };
        Self {
            location: config.location.clone(),
            account_id: config.account_id.clone(),
            account,
            client: http_client(CALL_TIMEOUT),
        }
    }
}

impl TokenSource for VideoIndexer {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let client = self.client.as_ref().map_err(Clone::clone)?;
            let value = match &self.account {
                Account::Classic(classic) => classic.fetch(client).await?,
                Account::Arm(arm) => arm.fetch(client).await?,
            };
            let expires_in = jwt_expiry(&value).map_or(DEFAULT_LIFETIME, remaining);
            Token::new(value, expires_in)
        })
    }

    fn describe(&self) -> String {
        match &self.account {
            Account::Classic(classic) => format!(
                "video_indexer (classic, location {}, account {}, {}, {})",
                self.location,
                abbreviate(&self.account_id),
                if classic.allow_edit {
                    "allow_edit"
                } else {
                    "read-only"
                },
                classic.api_url,
            ),
            Account::Arm(arm) => format!(
                "video_indexer (ARM account {} via credential {}, {}, {})",
                arm.account_name, arm.credential, arm.permission, arm.management_url,
            ),
        }
    }
}

impl Classic {
    async fn fetch(&self, client: &reqwest::Client) -> Result<String, FetchError> {
        let mut key = HeaderValue::from_str(self.subscription_key.expose()).map_err(|_| {
            FetchError::new("subscription_key holds characters not allowed in a header")
        })?;
        key.set_sensitive(true);
        let response = client
            .get(&self.url)
            .header("Ocp-Apim-Subscription-Key", key)
            .send()
            .await
            .map_err(|e| transport_error("Video Indexer", &e))?;
        let (status, headers, body) = read(response, "Video Indexer").await?;
        classic_token(status, &headers, &body)
            .map_err(|e| redact(e, self.subscription_key.expose()))
    }
}

impl Arm {
    async fn fetch(&self, client: &reqwest::Client) -> Result<String, FetchError> {
        let cache = self.cache.as_ref().ok_or_else(|| {
            FetchError::new(format!(
                "the ARM credential \"{}\" was not built (it must be an Entra ID token credential)",
                self.credential
            ))
        })?;
        // The ARM cache keeps its own backoff; its Retry-After is not ours to repeat.
        let arm_token = cache.token().await.map_err(|e| {
            FetchError::new(format!(
                "the ARM credential \"{}\" failed: {}",
                self.credential, e.message
            ))
        })?;
        let body = serde_json::json!({ "permissionType": self.permission, "scope": "Account" });
        let response = client
            .post(&self.url)
            .header(header::AUTHORIZATION, arm_token.bearer.clone())
            .json(&body)
            .send()
            .await
            .map_err(|e| transport_error("ARM generateAccessToken", &e))?;
        let (status, headers, body) = read(response, "ARM generateAccessToken").await?;
        if status == StatusCode::UNAUTHORIZED {
            // ARM refused the token itself (revoked, or expired early): the next attempt
            // should not present it again.
            cache.reject(&arm_token);
        }
        arm_access_token(status, &headers, &body).map_err(|e| redact(e, arm_token.value.expose()))
    }
}

/// The classic auth endpoint's answer: on success the body is the token as a JSON string.
fn classic_token(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
) -> Result<String, FetchError> {
    if !status.is_success() {
        let json: Value = serde_json::from_str(body).unwrap_or_default();
        // Video Indexer says `ErrorType`/`Message`; the API Management gateway in front
        // of it (bad or missing key) says `statusCode`/`message`.
        let kind = json["ErrorType"].as_str();
        let message = json["Message"].as_str().or(json["message"].as_str());
        let detail = detail(kind, message, body);
        return Err(FetchError::new(format!(
            "Video Indexer answered {}: {detail}",
            status.as_u16()
        ))
        .with_retry_after(retry_after(headers)));
    }
    match serde_json::from_str::<Value>(body) {
        Ok(Value::String(token)) if !token.is_empty() => Ok(token),
        parsed => Err(FetchError::new(format!(
            "Video Indexer answered {} with {} where the token, a JSON string, was expected",
            status.as_u16(),
            shape(parsed.as_ref().ok(), body)
        ))),
    }
}

/// `generateAccessToken`'s answer: `{"accessToken": "<jwt>"}`.
fn arm_access_token(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
) -> Result<String, FetchError> {
    if !status.is_success() {
        let json: Value = serde_json::from_str(body).unwrap_or_default();
        let kind = json["error"]["code"].as_str();
        let message = json["error"]["message"].as_str();
        let detail = detail(kind, message, body);
        return Err(FetchError::new(format!(
            "ARM generateAccessToken answered {}: {detail}",
            status.as_u16()
        ))
        .with_retry_after(retry_after(headers)));
    }
    let parsed = serde_json::from_str::<Value>(body).ok();
    match parsed.as_ref().map(|json| &json["accessToken"]) {
        Some(Value::String(token)) if !token.is_empty() => Ok(token.clone()),
        Some(Value::Null) | None => Err(FetchError::new(format!(
            "ARM generateAccessToken answered {} with {} and no accessToken",
            status.as_u16(),
            shape(parsed.as_ref(), body)
        ))),
        Some(_) => Err(FetchError::new(format!(
            "ARM generateAccessToken answered {} with an accessToken that is not a non-empty string",
            status.as_u16()
        ))),
    }
}

/// `CODE: first line of the message`, or what there is of it, or the body itself.
fn detail(kind: Option<&str>, message: Option<&str>, body: &str) -> String {
    let message = message.and_then(|m| m.lines().map(str::trim).find(|l| !l.is_empty()));
    match (kind, message) {
        (Some(kind), Some(message)) => format!("{kind}: {message}"),
        (Some(kind), None) => kind.to_string(),
        (None, Some(message)) => message.to_string(),
        (None, None) => snippet(body),
    }
}

/// What a successful but unusable body looked like, without quoting it: it may hold a
/// token in a shape we did not expect. Markup is quoted, as no token starts with `<`.
fn shape(parsed: Option<&Value>, body: &str) -> String {
    match parsed {
        Some(Value::Object(map)) if map.is_empty() => "an empty JSON object".to_string(),
        Some(Value::Object(map)) => {
            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
            format!("a JSON object with keys {}", keys.join(", "))
        }
        Some(Value::String(s)) if s.is_empty() => "an empty JSON string".to_string(),
        Some(Value::String(_)) => "a JSON string".to_string(),
        Some(Value::Array(_)) => "a JSON array".to_string(),
        Some(Value::Number(_)) => "a JSON number".to_string(),
        Some(Value::Bool(_)) => "a JSON boolean".to_string(),
        Some(Value::Null) => "JSON null".to_string(),
        None if body.trim().is_empty() => "an empty body".to_string(),
        None if body.trim_start().starts_with('<') => format!("markup ({})", snippet(body)),
        None => format!("a body that is not JSON ({} bytes)", body.len()),
    }
}

/// Status, headers and at most `MAX_BODY` of the body.
async fn read(
    mut response: reqwest::Response,
    what: &str,
) -> Result<(StatusCode, HeaderMap, String), FetchError> {
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(what, &e))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(FetchError::new(format!(
                "{what} answered {} with a body over {} KiB",
                status.as_u16(),
                MAX_BODY / 1024
            ))
            .with_retry_after(retry_after(&headers)));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

fn transport_error(what: &str, error: &reqwest::Error) -> FetchError {
    if error.is_timeout() {
        return FetchError::new(format!(
            "{what} did not answer within {}s",
            CALL_TIMEOUT.as_secs()
        ));
    }
    // reqwest's own message is terse ("error sending request"); the cause is below it.
    let mut message = format!("cannot reach {what}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    FetchError::new(message)
}

/// Belt and braces: should a service ever echo a secret in its error text, it goes no further.
fn redact(mut error: FetchError, secret: &str) -> FetchError {
    if !secret.is_empty() && error.message.contains(secret) {
        error.message = error.message.replace(secret, "***");
    }
    error
}

fn segment(value: &str) -> String {
    utf8_percent_encode(value, PATH_SEGMENT).to_string()
}

/// The first characters of an id, enough to tell accounts apart in a status line.
fn abbreviate(id: &str) -> String {
    if id.chars().count() <= 4 {
        id.to_string()
    } else {
        format!("{}…", id.chars().take(4).collect::<String>())
    }
}

/// The `exp` claim (epoch seconds) of a JWT, read without checking the signature: the
/// token is passed on to Video Indexer, which checks it; here only its lifetime matters.
/// `None` when the token is not a three-part JWT with a JSON payload holding a numeric `exp`.
pub(crate) fn jwt_expiry(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    // JWTs use unpadded base64url, but padded payloads are seen in the wild.
    let bytes = URL_SAFE_NO_PAD_INDIFFERENT.decode(payload).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_number()?;
    exp.as_u64().or_else(|| {
        exp.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VideoIndexerInject;
    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
    use serde_json::json;

    fn jwt_with(payload: &str, engine: &impl base64::Engine) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
            engine.encode(payload)
        )
    }

    #[test]
    fn jwt_expiry_reads_exp() {
        // Payload lengths 0, 1 and 2 mod 3 give no, two and one padding characters.
        for payload in [
            r#"{"exp":1700000000}"#,
            r#"{"exp":1700000000} "#,
            r#"{"exp":1700000000}  "#,
        ] {
            assert_eq!(
                jwt_expiry(&jwt_with(payload, &URL_SAFE_NO_PAD)),
                Some(1_700_000_000)
            );
            assert_eq!(
                jwt_expiry(&jwt_with(payload, &URL_SAFE)),
                Some(1_700_000_000)
            );
        }
        let claims = r#"{"aud":"https://api.videoindexer.ai/","exp":1700000000.9,"iss":"x"}"#;
        assert_eq!(
            jwt_expiry(&jwt_with(claims, &URL_SAFE_NO_PAD)),
            Some(1_700_000_000)
        );
        // `~~` and `??` encode to `fn5-` and `Pz8_`: the URL-safe alphabet is required.
        let url_safe = r#"{"n":"~~??","exp":5}"#;
        assert_eq!(jwt_expiry(&jwt_with(url_safe, &URL_SAFE_NO_PAD)), Some(5));
    }

    #[test]
    fn jwt_expiry_gives_up_quietly() {
        let no_exp = jwt_with(r#"{"iss":"x"}"#, &URL_SAFE_NO_PAD);
        let string_exp = jwt_with(r#"{"exp":"1700000000"}"#, &URL_SAFE_NO_PAD);
        let negative = jwt_with(r#"{"exp":-5}"#, &URL_SAFE_NO_PAD);
        let not_json = jwt_with("exp=1700000000", &URL_SAFE_NO_PAD);
        let array = jwt_with("[1700000000]", &URL_SAFE_NO_PAD);
        let payload = URL_SAFE_NO_PAD.encode(r#"{"exp":1700000000}"#);
        let cases = [
            no_exp,
            string_exp,
            negative,
            not_json,
            array,
            "vi-token-opaque".to_string(),
            String::new(),
            format!("head.{payload}"),
            format!("head.{payload}.sig.extra.parts"),
            "head.!!not base64!!.sig".to_string(),
            "head.eyJleHAiOjF9=.sig".replace("=", "==="),
            format!("head.{}.sig", payload.replace('i', "+")),
        ];
        for token in cases {
            assert_eq!(jwt_expiry(&token), None, "{token}");
        }
    }

    fn retry_in(seconds: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_str(seconds).unwrap());
        headers
    }

    #[test]
    fn classic_answers() {
        let ok = StatusCode::OK;
        let none = HeaderMap::new();
        assert_eq!(
            classic_token(ok, &none, r#""eyJ0eXAi.abc.def""#).unwrap(),
            "eyJ0eXAi.abc.def"
        );
        let cases = [
            (
                401,
                r#"{"ErrorType":"USER_NOT_ALLOWED","Message":"User has no access to account.\r\nTrace: 1"}"#,
                "Video Indexer answered 401: USER_NOT_ALLOWED: User has no access to account.",
            ),
            (
                400,
                r#"{"ErrorType":"INVALID_INPUT","Message":"Invalid location."}"#,
                "Video Indexer answered 400: INVALID_INPUT: Invalid location.",
            ),
            (
                500,
                r#"{"ErrorType":"GENERAL"}"#,
                "Video Indexer answered 500: GENERAL",
            ),
            (
                504,
                r#"{"ErrorType":"SERVER_TIMEOUT","Message":"\n  Server timeout.  "}"#,
                "Video Indexer answered 504: SERVER_TIMEOUT: Server timeout.",
            ),
            (
                401,
                r#"{ "statusCode": 401, "message": "Access denied due to invalid subscription key." }"#,
                "Video Indexer answered 401: Access denied due to invalid subscription key.",
            ),
            (
                502,
                "<html>\n<body>Bad gateway</body>\n</html>",
                "Video Indexer answered 502: <html> <body>Bad gateway</body> </html>",
            ),
            (503, "", "Video Indexer answered 503: (empty body)"),
            (
                200,
                r#"{"accessToken":"eyJ.a.b"}"#,
                "Video Indexer answered 200 with a JSON object with keys accessToken where the token, a JSON string, was expected",
            ),
            (
                200,
                "eyJ0eXAi.unquoted.token",
                "Video Indexer answered 200 with a body that is not JSON (23 bytes) where the token, a JSON string, was expected",
            ),
            (
                200,
                r#""""#,
                "Video Indexer answered 200 with an empty JSON string where the token, a JSON string, was expected",
            ),
            (
                200,
                "",
                "Video Indexer answered 200 with an empty body where the token, a JSON string, was expected",
            ),
            (
                200,
                "<!DOCTYPE html><p>Sign in</p>",
                "Video Indexer answered 200 with markup (<!DOCTYPE html><p>Sign in</p>) where the token, a JSON string, was expected",
            ),
            (
                200,
                "null",
                "Video Indexer answered 200 with JSON null where the token, a JSON string, was expected",
            ),
        ];
        for (status, body, want) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            let err = classic_token(status, &none, body).unwrap_err();
            assert_eq!(err.message, want);
            assert_eq!(err.retry_after, None);
        }
        assert!(
            !format!(
                "{:?}",
                classic_token(ok, &none, r#"{"accessToken":"secret-ish"}"#)
            )
            .contains("secret-ish")
        );
    }

    #[test]
    fn throttling_carries_retry_after() {
        let err = classic_token(
            StatusCode::TOO_MANY_REQUESTS,
            &retry_in("120"),
            r#"{"ErrorType":"USER_THROTTLED","Message":"Too many requests."}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "Video Indexer answered 429: USER_THROTTLED: Too many requests."
        );
        assert_eq!(err.retry_after, Some(Duration::from_secs(120)));
        let err = arm_access_token(StatusCode::TOO_MANY_REQUESTS, &retry_in("7"), "").unwrap_err();
        assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
    }

    #[test]
    fn arm_answers() {
        let none = HeaderMap::new();
        assert_eq!(
            arm_access_token(StatusCode::OK, &none, r#"{"accessToken":"eyJ.x.y"}"#).unwrap(),
            "eyJ.x.y"
        );
        let cases = [
            (
                403,
                r#"{"error":{"code":"AuthorizationFailed","message":"The client 'abc' with object id 'abc' does not have authorization to perform action 'Microsoft.VideoIndexer/accounts/generateAccessToken/action'.\nMore"}}"#,
                "ARM generateAccessToken answered 403: AuthorizationFailed: The client 'abc' with object id 'abc' does not have authorization to perform action 'Microsoft.VideoIndexer/accounts/generateAccessToken/action'.",
            ),
            (
                404,
                r#"{"error":{"code":"ResourceNotFound"}}"#,
                "ARM generateAccessToken answered 404: ResourceNotFound",
            ),
            (
                500,
                "upstream connect error",
                "ARM generateAccessToken answered 500: upstream connect error",
            ),
            (
                200,
                "{}",
                "ARM generateAccessToken answered 200 with an empty JSON object and no accessToken",
            ),
            (
                200,
                r#"{"token":"x","expiresIn":3600}"#,
                "ARM generateAccessToken answered 200 with a JSON object with keys expiresIn, token and no accessToken",
            ),
            (
                200,
                r#"{"accessToken":42}"#,
                "ARM generateAccessToken answered 200 with an accessToken that is not a non-empty string",
            ),
            (
                200,
                r#""eyJ.x.y""#,
                "ARM generateAccessToken answered 200 with a JSON string and no accessToken",
            ),
            (
                200,
                r#"{"accessToken":""}"#,
                "ARM generateAccessToken answered 200 with an accessToken that is not a non-empty string",
            ),
            (
                200,
                "not json",
                "ARM generateAccessToken answered 200 with a body that is not JSON (8 bytes) and no accessToken",
            ),
        ];
        for (status, body, want) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(
                arm_access_token(status, &none, body).unwrap_err().message,
                want
            );
        }
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
        assert_eq!(
            c.url,
            "https://api.videoindexer.ai/auth/trial/Accounts/00000000-1111-2222-3333-444444444444/AccessToken?allowEdit=true"
        );
        assert_eq!(
            classic.describe(),
            "video_indexer (classic, location trial, account 0000…, allow_edit, https://api.videoindexer.ai)"
        );
        let arm = VideoIndexer::new(&config(arm_auth("Reader")), None);
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

    #[test]
    fn secrets_are_redacted_from_messages() {
        let err = redact(FetchError::new("echoed key-123 back"), "key-123");
        assert_eq!(err.message, "echoed *** back");
        assert_eq!(redact(FetchError::new("plain"), "").message, "plain");
    }

    #[tokio::test]
    async fn arm_mode_without_its_arm_cache_fails_clearly() {
        crate::install_crypto_provider();
        let source = VideoIndexer::new(&config(arm_auth("Reader")), None);
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
        let source = VideoIndexer::new(&config(arm_auth("Reader")), Some(arm));
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
    async fn mock_arm(
        status: u16,
        body: &'static str,
    ) -> (String, Arc<std::sync::Mutex<Vec<Seen>>>) {
        use http_body_util::{BodyExt, Full};
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
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
                    },
                );
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
        let source = VideoIndexer::new(&cfg, Some(arm));
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
        let source = VideoIndexer::new(&cfg, Some(arm.clone()));
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
        let err = VideoIndexer::new(&cfg, None).fetch().await.unwrap_err();
        assert!(
            err.message.starts_with("cannot reach Video Indexer: "),
            "{}",
            err.message
        );
        assert!(!err.message.contains("key-123"));
    }
}
