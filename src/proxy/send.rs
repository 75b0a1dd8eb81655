//! The "send with retry" phase: each attempt is built from the request template with the
//! current credential; an upstream 401 on a token credential drops the token, fetches a
//! new one and replays the request once (when its body could be kept for replay).

use std::time::Duration;

use http::{Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::error::ProxyError;
use super::prepare::UpstreamRequest;
use super::replay::ReplayBody;
use super::route::Route;
use crate::credentials::Authorization;

/// The final upstream response and how it was reached.
pub struct Sent {
    pub response: Response<Incoming>,
    pub attempts: u32,
    /// From the first attempt's send to the final response headers.
    pub upstream_duration: Duration,
}

/// The route credential's authorization for the next attempt, if the route has one.
pub async fn authorize(route: &Route) -> Result<Option<Authorization>, ProxyError> {
    match &route.credential {
        Some(credential) => Ok(Some(credential.authorize().await?)),
        None => Ok(None),
    }
}

pub async fn send_with_retry(
    route: &Route,
    template: &UpstreamRequest,
    body: &mut ReplayBody,
    mut authorization: Option<Authorization>,
) -> Result<Sent, ProxyError> {
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let Some(attempt_body) = body.attempt() else {
            return Err(ProxyError::BadRequest(
                "the request body was already sent and cannot be sent again".into(),
            ));
        };
        let injection = authorization.as_ref().map(|a| &a.injection);
        let request = template.build(injection, attempt_body)?;
        let response = route
            .client
            .send(request, route.config.timeout, &route.upstream_label)
            .await?;

        if response.status() == StatusCode::UNAUTHORIZED
            && attempts == 1
            && body.replayable()
            && rejected(route, authorization.as_ref())
        {
            tracing::info!(
                route = %route.prefix(),
                "upstream answered 401: replaying once with a new token"
            );
            authorization = authorize(route).await?;
            continue;
        }
        return Ok(Sent {
            response,
            attempts,
            upstream_duration: started.elapsed(),
        });
    }
}

/// Tells the credential its token was refused; true when a new one is on its way.
fn rejected(route: &Route, authorization: Option<&Authorization>) -> bool {
    match (&route.credential, authorization) {
        (Some(credential), Some(authorization)) => credential.reject(authorization),
        _ => false,
    }
}
