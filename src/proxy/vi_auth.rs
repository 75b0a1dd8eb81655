//! Route phase, Video Indexer routes only: the classic auth calls a legacy tool makes to
//! get its own token are answered here, from the route's credential, instead of being
//! forwarded (where Video Indexer would refuse the request azgate rewrote: the tool's key
//! stripped, azgate's `accessToken` added).
//!
//! ```text
//! GET {prefix}/auth/{location}/Accounts/{accountId}/AccessToken?allowEdit=true|false
//! GET {prefix}/auth/{location}/Accounts/{accountId}/Projects/{projectId}/AccessToken?…
//! GET {prefix}/auth/{location}/Accounts/{accountId}/Videos/{videoId}/AccessToken?…
//! ```
//!
//! The answer is what Video Indexer answers: 200 with the token as a JSON string, so the
//! tool carries on unchanged. The token is the scope asked for, with edit rights only
//! when asked for and the credential has them. Ids must be one plain segment
//! (`[A-Za-z0-9_-]{1,64}`, else 400); another account or location is 403. Nothing of the
//! request goes upstream.

use http::{HeaderValue, Method, Response, StatusCode, Uri, header};

use super::body::{self, ProxyBody};
use super::error::ProxyError;
use super::route::Route;
use crate::credentials::CredentialError;
use crate::credentials::token::FetchError;
use crate::credentials::video_indexer::{Scope, ScopedTokens, is_refusal, valid_id};

/// A classic auth call, as the path spelled it (ids not checked yet).
#[derive(Debug, PartialEq, Eq)]
pub struct AuthCall<'a> {
    location: &'a str,
    account_id: &'a str,
    /// `None` for the account; else ("Projects" | "Videos", id).
    scoped: Option<(ScopeKind, &'a str)>,
    edit: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScopeKind {
    Project,
    Video,
}

/// The classic auth call in `uri`, when the route's credential is a Video Indexer
/// credential and the path (after the route prefix) has the shape of one.
pub fn auth_call<'a>(route: &Route, uri: &'a Uri) -> Option<AuthCall<'a>> {
    route.credential.as_ref()?.video_indexer()?;
    let path = uri.path();
    let rest = match route.prefix() {
        "/" => path,
        prefix => path.get(prefix.len()..)?,
    };
    let segments: Vec<&str> = rest.strip_prefix('/')?.split('/').collect();
    let is = |segment: &str, name: &str| segment.eq_ignore_ascii_case(name);
    let [auth, location, accounts, account_id, tail @ ..] = segments.as_slice() else {
        return None;
    };
    if !is(auth, "auth") || !is(accounts, "Accounts") {
        return None;
    }
    let scoped = match tail {
        [token] if is(token, "AccessToken") => None,
        [kind, id, token] if is(token, "AccessToken") && is(kind, "Projects") => {
            Some((ScopeKind::Project, *id))
        }
        [kind, id, token] if is(token, "AccessToken") && is(kind, "Videos") => {
            Some((ScopeKind::Video, *id))
        }
        _ => return None,
    };
    Some(AuthCall {
        location,
        account_id,
        scoped,
        edit: allow_edit(uri.query()),
    })
}

/// `allowEdit=true` (any case); Video Indexer's default is false.
fn allow_edit(query: Option<&str>) -> bool {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(name, _)| name.eq_ignore_ascii_case("allowEdit"))
        .last()
        .is_some_and(|(_, value)| value.eq_ignore_ascii_case("true"))
}

/// Answers `call` from the route's credential.
pub async fn answer(
    route: &Route,
    method: &Method,
    call: AuthCall<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Some((credential, tokens)) = route
        .credential
        .as_ref()
        .and_then(|c| Some((c.name(), c.video_indexer()?)))
    else {
        return Err(ProxyError::BadRequest(
            "this route has no Video Indexer credential".into(),
        ));
    };
    if method != Method::GET {
        return Err(ProxyError::MethodNotAllowed {
            method: method.to_string(),
            route: route.prefix().to_string(),
            allowed: "GET".into(),
        });
    }
    let scope = checked_scope(&call, tokens)?;
    let token = tokens
        .token(scope, call.edit)
        .await
        .map_err(|err| refusal(credential, err))?;
    // The body Video Indexer gives: the token as a JSON string.
    let text = serde_json::Value::from(token.value.expose()).to_string();
    let mut response = Response::new(body::full(text));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The scope of `call`, once its ids are plain segments (400) naming this credential's
/// account and location (403).
fn checked_scope(call: &AuthCall<'_>, tokens: &ScopedTokens) -> Result<Scope, ProxyError> {
    let ids = [
        Some(call.location),
        Some(call.account_id),
        call.scoped.map(|s| s.1),
    ];
    if let Some(bad) = ids.into_iter().flatten().find(|id| !valid_id(id)) {
        return Err(ProxyError::BadRequest(format!(
            "\"{}\" is not a valid Video Indexer id: one path segment of A-Z, a-z, 0-9, '-' and '_', at most 64 characters",
            bad.chars().take(80).collect::<String>()
        )));
    }
    if !call.location.eq_ignore_ascii_case(tokens.location())
        || !call.account_id.eq_ignore_ascii_case(tokens.account_id())
    {
        return Err(ProxyError::Forbidden(format!(
            "this route gives tokens for account {} in {} only",
            tokens.account_id(),
            tokens.location()
        )));
    }
    Ok(match call.scoped {
        None => Scope::Account,
        Some((ScopeKind::Project, id)) => Scope::Project(id.to_string()),
        Some((ScopeKind::Video, id)) => Scope::Video(id.to_string()),
    })
}

/// Video Indexer's (or ARM's) 4xx goes back as `token_refused` with that status, quoting
/// its code and message, so a client sees "not found" for an unknown video; anything else
/// is the credential failing. Shared by every route that fetches scoped tokens.
pub(super) fn refusal(credential: &str, err: FetchError) -> ProxyError {
    match err.status.and_then(|s| StatusCode::from_u16(s).ok()) {
        Some(status) if is_refusal(&err) => ProxyError::TokenRefused {
            status,
            retry_after: err
                .retry_after
                .filter(|_| status == StatusCode::TOO_MANY_REQUESTS),
            message: format!(
                "credential \"{credential}\": Video Indexer refused the token: {}",
                err.message
            ),
        },
        _ => ProxyError::CredentialUnavailable(CredentialError {
            credential: credential.to_string(),
            reason: err.message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_rights_are_asked_for_with_allow_edit_true() {
        let cases = [
            (None, false),
            (Some(""), false),
            (Some("allowEdit=true"), true),
            (Some("allowedit=TRUE&x=1"), true),
            (Some("allowEdit=false"), false),
            (Some("allowEdit=1"), false),
            (Some("allowEdit=true&allowEdit=false"), false),
            (Some("accessToken=x&allowEdit=true"), true),
        ];
        for (query, want) in cases {
            assert_eq!(allow_edit(query), want, "{query:?}");
        }
    }

    #[test]
    fn refusals_keep_video_indexers_4xx() {
        let refused = refusal(
            "vi",
            FetchError::new("Video Indexer answered 404: NOT_FOUND").with_status(404),
        );
        assert_eq!(refused.code(), "token_refused");
        assert_eq!(refused.status(), StatusCode::NOT_FOUND);
        assert!(refused.to_string().contains("NOT_FOUND"));
        let failed = refusal(
            "vi",
            FetchError::new("Video Indexer answered 500: GENERAL").with_status(500),
        );
        assert_eq!(failed.code(), "credential_unavailable");
        let unreachable = refusal("vi", FetchError::new("cannot reach Video Indexer"));
        assert_eq!(unreachable.status(), StatusCode::BAD_GATEWAY);
    }
}
