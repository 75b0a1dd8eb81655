//! The token request every Entra source shares: POST a client-credentials form to the
//! v1 or v2 endpoint, and turn the answer into a `Token` or a `FetchError` that names
//! the cause (the `AADSTS…` code, the HTTP status, a timeout) and never a secret.

use std::time::Duration;

use crate::config::{Audience, EntraApp};
use crate::credentials::token::{self, FetchError, Token};
use crate::env::Env;

const PUBLIC_CLOUD: &str = "https://login.microsoftonline.com";
/// The whole token request, connect included. Entra answers in well under a second; this
/// only bounds a hung endpoint, and stays below the cache's own 60 s limit so the user
/// sees which endpoint hung rather than a generic timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A token response is a few KB; anything far larger is not a token response and is not
/// worth holding in memory.
const MAX_RESPONSE: usize = 256 * 1024;

/// One Entra ID token endpoint: where to POST, which protocol version, and the client.
pub(super) struct TokenEndpoint {
    pub(super) url: String,
    /// The form field naming what the token is for: `scope` (v2) or `resource` (v1).
    audience: (&'static str, String),
    client: Result<reqwest::Client, FetchError>,
}

impl TokenEndpoint {
    /// `token_url` when configured, else `{authority}/{tenant}/oauth2[/v2.0]/token`; the
    /// version follows the audience either way.
    pub(super) fn for_app(app: &EntraApp, audience: &Audience, env: &Env) -> Self {
        let url = match &app.token_url {
            Some(url) => url.clone(),
            None => {
                let authority = authority(app.authority.as_deref(), env);
                match audience {
                    Audience::Scope(_) => format!("{authority}/{}/oauth2/v2.0/token", app.tenant),
                    Audience::Resource(_) => format!("{authority}/{}/oauth2/token", app.tenant),
                }
            }
        };
        Self::new(url, audience)
    }

    pub(super) fn new(url: String, audience: &Audience) -> Self {
        let audience = match audience {
            Audience::Scope(scope) => ("scope", scope.clone()),
            Audience::Resource(resource) => ("resource", resource.clone()),
        };
        Self {
            url,
            audience,
            client: token::http_client(REQUEST_TIMEOUT),
        }
    }

    pub(super) fn describe(&self) -> String {
        let version = match self.audience.0 {
            "resource" => "v1",
            _ => "v2",
        };
        format!("{version} endpoint {}", self.url)
    }

    /// The client-credentials exchange. `proof` is the secret or the assertion fields.
    pub(super) async fn request(
        &self,
        client_id: &str,
        proof: &[(&str, &str)],
    ) -> Result<Token, FetchError> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            (self.audience.0, self.audience.1.as_str()),
        ];
        form.extend_from_slice(proof);
        let response = client
            .post(&self.url)
            .header(http::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let retry_after = token::retry_after(response.headers());
        let body = read_body(response)
            .await
            .map_err(|e| self.transport_error(&e))?;
        if !status.is_success() {
            let mut message = format!(
                "the token request to {} failed: {}",
                self.url,
                token::entra_error(status, &body)
            );
            if let Some(wait) = retry_after {
                message.push_str(&format!("; retry after {}s", wait.as_secs()));
            }
            return Err(FetchError::new(message).with_retry_after(retry_after));
        }
        parse_token_response(&body)
            .map_err(|e| FetchError::new(format!("the token endpoint {} {}", self.url, e.message)))
    }

    fn transport_error(&self, e: &reqwest::Error) -> FetchError {
        if e.is_timeout() {
            return FetchError::new(format!(
                "the token endpoint {} did not answer within {}s",
                self.url,
                REQUEST_TIMEOUT.as_secs()
            ));
        }
        // reqwest's own message only repeats the URL; the cause is further down.
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        let cause = if causes.is_empty() {
            e.to_string()
        } else {
            causes.join(": ")
        };
        FetchError::new(format!(
            "cannot reach the token endpoint {}: {cause}",
            self.url
        ))
    }
}

/// The body, refusing to buffer more than `MAX_RESPONSE`.
async fn read_body(mut response: reqwest::Response) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_RESPONSE.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if chunk.len() > room {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A 2xx body: `access_token` plus its expiry in whichever shape the version uses.
/// Errors complete the sentence "the token endpoint URL …".
fn parse_token_response(body: &str) -> Result<Token, FetchError> {
    let json: serde_json::Value = serde_json::from_str(body).map_err(|_| {
        // A cut-off success body may still hold most of a token: never echo it.
        let shown = if body.contains("access_token") {
            "(body not shown: it may hold a token)".to_string()
        } else {
            token::snippet(body)
        };
        FetchError::new(format!("answered with a body that is not JSON: {shown}"))
    })?;
    let Some(fields) = json.as_object() else {
        return Err(FetchError::new(format!(
            "answered with JSON that is not an object: {}",
            token::snippet(body)
        )));
    };
    let access_token = match fields.get("access_token") {
        Some(serde_json::Value::String(value)) if !value.is_empty() => value.clone(),
        Some(_) => {
            return Err(FetchError::new(
                "answered with an access_token that is empty or not a string",
            ));
        }
        None => {
            // Field names only: the values may be secrets.
            let names: Vec<&str> = fields.keys().map(String::as_str).collect();
            return Err(FetchError::new(format!(
                "answered without an access_token (fields: {})",
                names.join(", ")
            )));
        }
    };
    let (expires_in, refresh_in) = token::parse_expiry(&json)
        .map_err(|e| FetchError::new(format!("answered with {}", e.message)))?;
    Ok(Token::new(access_token, expires_in)
        .map_err(|e| FetchError::new(format!("answered with an unusable token: {}", e.message)))?
        .with_refresh_in(refresh_in))
}

/// The authority host without trailing slashes: the configured one, else
/// `AZURE_AUTHORITY_HOST`, else the public cloud.
pub(super) fn authority(configured: Option<&str>, env: &Env) -> String {
    let host = configured
        .map(str::to_string)
        .or_else(|| env.get("AZURE_AUTHORITY_HOST"))
        .unwrap_or_else(|| PUBLIC_CLOUD.to_string());
    let host = host.trim().trim_end_matches('/');
    // The SDKs accept a bare host name in AZURE_AUTHORITY_HOST.
    if host.contains("://") {
        host.to_string()
    } else {
        format!("https://{host}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        Env::from_pairs(vars)
    }

    #[test]
    fn authority_comes_from_config_then_env_then_public_cloud() {
        let gov = env(&[("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/")]);
        let bare = env(&[("AZURE_AUTHORITY_HOST", "login.chinacloudapi.cn")]);
        let cases = [
            (
                Some("https://adfs.contoso.com//"),
                &gov,
                "https://adfs.contoso.com",
            ),
            (None, &gov, "https://login.microsoftonline.us"),
            (None, &bare, "https://login.chinacloudapi.cn"),
            (None, &env(&[]), "https://login.microsoftonline.com"),
        ];
        for (configured, env, want) in cases {
            assert_eq!(authority(configured, env), want, "{configured:?}");
        }
    }

    #[tokio::test]
    async fn token_responses() {
        let ok = |body: &str| {
            parse_token_response(body).map(|t| {
                (
                    t.value.expose().to_string(),
                    t.lifetime().as_secs(),
                    t.refresh_at.map(|r| (r - t.fetched_at).as_secs()),
                )
            })
        };
        assert_eq!(
            ok(
                r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"a"}"#
            ),
            Ok(("a".into(), 3599, None))
        );
        assert_eq!(
            ok(
                r#"{"access_token":"b","token_type":"Bearer","expires_in":"1800","expires_on":"1","resource":"r"}"#
            ),
            Ok(("b".into(), 1800, None))
        );
        assert_eq!(
            ok(r#"{"access_token":"c","expires_in":7200,"refresh_in":3600}"#),
            Ok(("c".into(), 7200, Some(3600)))
        );
        let failures = [
            (
                "<html><body>Service Unavailable</body></html>",
                "not JSON: <html>",
            ),
            (
                r#"{"access_token":"eyJhbGciOiJSUzI1NiJ9.cut-of"#,
                "(body not shown",
            ),
            (r#"["access_token"]"#, "not an object"),
            (
                r#"{"token_type":"Bearer","refresh_token":"rt-secret"}"#,
                "without an access_token (fields: refresh_token, token_type)",
            ),
            (r#"{"access_token":42,"expires_in":1}"#, "not a string"),
            (r#"{"access_token":""}"#, "empty"),
            (
                r#"{"access_token":"d"}"#,
                "neither expires_in nor expires_on",
            ),
            (
                r#"{"access_token":"bad\ntoken","expires_in":1}"#,
                "not allowed in a header",
            ),
            ("", "not JSON: (empty body)"),
        ];
        for (body, want) in failures {
            let message = ok(body).unwrap_err().message;
            assert!(message.contains(want), "{body}: {message}");
            assert!(
                !message.contains("eyJ") && !message.contains("rt-secret"),
                "{message}"
            );
        }
    }
}
