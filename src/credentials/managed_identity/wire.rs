//! What the identity endpoint answers: the token and its expiry on success, a readable
//! line from the error body otherwise.

use crate::credentials::token::{self, FetchError, Token};

/// A success body: `access_token` and an expiry in one of its shapes. Nothing from the
/// body goes into an error message, since it may hold the token.
pub(super) fn parse_token(body: &str) -> Result<Token, FetchError> {
    let json: serde_json::Value = serde_json::from_str(body).map_err(|_| {
        FetchError::new(format!(
            "the managed identity endpoint answered with a body that is not JSON ({} bytes)",
            body.len()
        ))
    })?;
    let Some(value) = json["access_token"].as_str().filter(|t| !t.is_empty()) else {
        return Err(FetchError::new(
            "the managed identity endpoint's answer has no access_token",
        ));
    };
    let (expires_in, refresh_in) = token::parse_expiry(&json)?;
    Ok(Token::new(value.to_string(), expires_in)?.with_refresh_in(refresh_in))
}

/// The readable part of an error body: IMDS sends `{"error","error_description"}`, App
/// Service `{"statusCode","message"}`, some proxies `{"error":{"message"}}`.
pub(super) fn error_detail(body: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let text = [
        &json["error_description"],
        &json["message"],
        &json["Message"],
        &json["error"]["message"],
        &json["error"],
    ]
    .into_iter()
    .find_map(|v| v.as_str().filter(|s| !s.trim().is_empty()));
    match text {
        Some(text) => text.lines().next().unwrap_or_default().trim().to_string(),
        None => token::snippet(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_details() {
        let cases = [
            (
                r#"{"error":"invalid_request","error_description":"Identity not found"}"#,
                "Identity not found",
            ),
            (
                r#"{"statusCode":400,"message":"Unable to load the proper Managed Identity."}"#,
                "Unable to load the proper Managed Identity.",
            ),
            (
                r#"{"error":{"code":"x","message":"from a proxy"}}"#,
                "from a proxy",
            ),
            (r#"{"error":"invalid_resource"}"#, "invalid_resource"),
            ("<html>\n<b>Bad</b>\n</html>", "<html> <b>Bad</b> </html>"),
            ("", "(empty body)"),
        ];
        for (body, want) in cases {
            assert_eq!(error_detail(body), want, "{body}");
        }
    }

    #[test]
    fn bad_success_bodies_do_not_echo_the_body() {
        for body in [
            "not json secret-token",
            r#"{"access_token":""}"#,
            r#"{"token":"secret-token"}"#,
            r#"{"access_token":"secret-token"}"#,
            r#"{"access_token":"secret-token","expires_on":"tomorrow"}"#,
        ] {
            let err = parse_token(body).unwrap_err();
            assert!(!err.message.contains("secret-token"), "{}", err.message);
        }
    }
}
