//! Video Indexer's wire formats, for `mod.rs`: the classic auth endpoint's answer (a JSON
//! string), `generateAccessToken`'s (`{"accessToken": …}`), their errors in the shapes
//! AZURE.md records, bounded body reads, and the JWT `exp` claim that gives a token's
//! expiry. Messages name the cause without quoting a token or a key.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD_INDIFFERENT;
use http::{HeaderMap, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::super::token::{FetchError, retry_after, snippet};

/// Per call; the cache bounds the whole fetch (ARM token included) at 60 s.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A token answer is a few KiB; anything far larger is not one and is not read whole.
const MAX_BODY: usize = 64 * 1024;
/// Everything but RFC 3986 unreserved characters, so a value stays one path segment.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(super) fn classic_token(
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
        .with_retry_after(retry_after(headers))
        .with_status(status.as_u16()));
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
pub(super) fn arm_access_token(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
    what: &str,
) -> Result<String, FetchError> {
    if !status.is_success() {
        let json: Value = serde_json::from_str(body).unwrap_or_default();
        let kind = json["error"]["code"].as_str();
        let message = json["error"]["message"].as_str();
        let detail = detail(kind, message, body);
        return Err(
            FetchError::new(format!("{what} answered {}: {detail}", status.as_u16()))
                .with_retry_after(retry_after(headers))
                .with_status(status.as_u16()),
        );
    }
    let parsed = serde_json::from_str::<Value>(body).ok();
    match parsed.as_ref().map(|json| &json["accessToken"]) {
        Some(Value::String(token)) if !token.is_empty() => Ok(token.clone()),
        Some(Value::Null) | None => Err(FetchError::new(format!(
            "{what} answered {} with {} and no accessToken",
            status.as_u16(),
            shape(parsed.as_ref(), body)
        ))),
        Some(_) => Err(FetchError::new(format!(
            "{what} answered {} with an accessToken that is not a non-empty string",
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
pub(super) async fn read(
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

pub(super) fn transport_error(what: &str, error: &reqwest::Error) -> FetchError {
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
pub(super) fn redact(mut error: FetchError, secret: &str) -> FetchError {
    if !secret.is_empty() && error.message.contains(secret) {
        error.message = error.message.replace(secret, "***");
    }
    error
}

pub(super) fn segment(value: &str) -> String {
    utf8_percent_encode(value, PATH_SEGMENT).to_string()
}

/// The first characters of an id, enough to tell accounts apart in a status line.
pub(super) fn abbreviate(id: &str) -> String {
    if id.chars().count() <= 4 {
        id.to_string()
    } else {
        format!("{}…", id.chars().take(4).collect::<String>())
    }
}

/// The `exp` claim (epoch seconds) of a JWT, read without checking the signature: the
/// token is passed on to Video Indexer, which checks it; here only its lifetime matters.
/// `None` when the token is not a three-part JWT with a JSON payload holding a numeric `exp`.
pub(super) fn jwt_expiry(token: &str) -> Option<u64> {
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
    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
    use http::{HeaderValue, header};

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
            let refused = (status != StatusCode::OK).then_some(status.as_u16());
            assert_eq!(err.status, refused, "{want}");
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
        let err = arm_access_token(
            StatusCode::TOO_MANY_REQUESTS,
            &retry_in("7"),
            "",
            "ARM generateAccessToken",
        )
        .unwrap_err();
        assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
    }

    #[test]
    fn arm_answers() {
        let none = HeaderMap::new();
        assert_eq!(
            arm_access_token(
                StatusCode::OK,
                &none,
                r#"{"accessToken":"eyJ.x.y"}"#,
                "ARM generateAccessToken"
            )
            .unwrap(),
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
                arm_access_token(status, &none, body, "ARM generateAccessToken")
                    .unwrap_err()
                    .message,
                want
            );
        }
    }

    #[test]
    fn secrets_are_redacted_from_messages() {
        let err = redact(FetchError::new("echoed key-123 back"), "key-123");
        assert_eq!(err.message, "echoed *** back");
        assert_eq!(redact(FetchError::new("plain"), "").message, "plain");
    }
}
