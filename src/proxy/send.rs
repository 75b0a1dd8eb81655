//! The "send with retry" phase. Each attempt is built from the request template with the
//! current credential. A 401 on a token credential drops the token, fetches a new one and
//! replays once; 429, 504 and connection failures are retried as `retry::decide` says,
//! within the route's retry budget. The last response goes back to the client unchanged.

use std::pin::Pin;
use std::time::Duration;

use http::{Response, StatusCode};
use tokio::time::Instant;

use super::error::ProxyError;
use super::prepare::UpstreamRequest;
use super::replay::ReplayBody;
use super::retry::{self, Decision, Outcome};
use super::route::Route;
use super::throttle;
use super::upstream::{self, UpstreamBody};
use super::vi_auth;
use crate::credentials::video_indexer::Scope;
use crate::credentials::{Authorization, CredentialError, Refusal};
use crate::telemetry::Telemetry;
use crate::trace::{RequestTrace, Target, context::TRACEPARENT};
use opentelemetry::KeyValue;
use opentelemetry::context::FutureExt as _;

/// The final upstream outcome and how it was reached.
pub struct Sent {
    /// The last response, or why the last attempt got none.
    pub result: Result<Response<UpstreamBody>, ProxyError>,
    /// From the first attempt's send to the final response headers; `None` when none was
    /// sent (refused by the hold or pace).
    pub upstream_duration: Option<Duration>,
    /// The credential the last attempt carried.
    pub authorization: Option<Authorization>,
}

/// The route credential's authorization for the next attempt, if the route has one: a
/// token scoped to `scope` when the request is about one video or project and the route
/// has `scoped_tokens`.
pub async fn authorize(
    route: &Route,
    scope: Option<&Scope>,
) -> Result<Option<Authorization>, ProxyError> {
    match (&route.credential, scope) {
        // Boxed (cold: `scoped_tokens` routes only): its cache lookup is ~3 KiB of future,
        // which every request's future would otherwise be laid out to hold.
        (Some(credential), Some(scope)) => Box::pin(credential.authorize_scoped(scope))
            .await
            .map(Some)
            .map_err(|err| vi_auth::refusal(credential.name(), err)),
        (Some(credential), None) => Ok(Some(credential.authorize().await?)),
        (None, _) => Ok(None),
    }
}

/// `authorize`, given up at `deadline`: a token endpoint that hangs costs the request its
/// route timeout, not the fetch's own (longer) one.
pub async fn authorize_until(
    route: &Route,
    scope: Option<&Scope>,
    deadline: Instant,
) -> Result<Option<Authorization>, ProxyError> {
    match tokio::time::timeout_at(deadline, authorize(route, scope)).await {
        Ok(result) => result,
        Err(_) => Err(ProxyError::CredentialUnavailable(CredentialError {
            credential: route
                .credential
                .as_ref()
                .map_or_else(String::new, |c| c.name().to_string()),
            reason: format!(
                "no token within the route's timeout ({}); the fetch goes on for the requests that follow",
                humantime::format_duration(route.config.timeout)
            ),
        })),
    }
}

/// What the send phase needs to know about the request beyond its template.
pub struct RequestFacts<'a> {
    /// The client's (or azgate's) request id, for log lines.
    pub id: &'a str,
    /// The video or project a scoped token is for (`scoped_tokens`).
    pub scope: Option<&'a Scope>,
    /// The route timeout's end, counted from before the token wait.
    pub deadline: Instant,
    /// The request's server span, while spans are exported.
    pub trace: Option<&'a RequestTrace>,
}

/// Runs `waiting` (a wait for the route credential's token) inside a `token wait` span of
/// the request, when the route has a credential: a token fetch it starts opens its span
/// under it. Boxed, and not an `async fn`: held inline, the wrapper (with `waiting` in it
/// twice) grew every request's future by kilobytes, traced or not, and hyper moves that
/// future three times per request (bench/README.md, "Tracing").
pub fn wait_for_token<'a, T: 'a>(
    trace: &'a RequestTrace,
    route: &'a Route,
    waiting: impl Future<Output = T> + Send + 'a,
) -> Pin<Box<dyn Future<Output = T> + Send + 'a>> {
    Box::pin(async move {
        let Some(credential) = &route.credential else {
            return waiting.await;
        };
        let wait = trace.child(
            "token wait",
            vec![KeyValue::new(
                "azgate.credential",
                credential.name().to_string(),
            )],
        );
        let result = waiting.with_context(wait.context().clone()).await;
        wait.end();
        result
    })
}

/// Sends attempts until one's answer goes back to the client. `attempts_sent` counts the
/// attempts sent, written as each leaves, so that it is right even if the client goes away.
pub async fn send_with_retry(
    route: &Route,
    template: &UpstreamRequest,
    body: &mut ReplayBody,
    mut authorization: Option<Authorization>,
    request: &RequestFacts<'_>,
    telemetry: &Telemetry,
    attempts_sent: &mut u32,
) -> Sent {
    let (scope, deadline, request_id) = (request.scope, request.deadline, request.id);
    let trace = request.trace;
    // Upstream time starts when the first attempt leaves, after any hold or paced wait.
    let mut started: Option<Instant> = None;
    let policy = &route.config.retry;
    route.retry_budget.record_request();
    let mut attempts = 0u32;
    // Attempts a hold answered: waiting out a declared window is not a failure, so they
    // do not use up max_attempts (the request's deadline bounds them instead).
    let mut held_attempts = 0u32;
    let mut credential_replayed = false;
    loop {
        attempts += 1;
        // A route that holds after the upstream's 429 sends nothing until the hold is over;
        // this request waits for it if its deadline (and max_delay) allow, else it is
        // answered 429 `throttled` at once.
        let now = Instant::now();
        let wait_limit = deadline.max(now).min(now + policy.max_delay);
        let pass = match route
            .throttle
            .admit(template.method(), wait_limit, telemetry)
            .await
        {
            Ok(pass) => pass,
            Err(err) => return finish(Err(err), started, authorization),
        };
        let Some(attempt_body) = body.attempt() else {
            let err = ProxyError::BadRequest(
                "the request body was already sent and cannot be sent again".into(),
            );
            return finish(Err(err), started, authorization);
        };
        let injection = authorization.as_ref().map(|a| &a.injection);
        let mut request = match template.build(injection, attempt_body) {
            Ok(request) => request,
            Err(err) => return finish(Err(err), started, authorization),
        };
        // Written per attempt: the upstream's parent is this attempt's client span.
        let mut span = trace.map(|trace| {
            let (url, host, port) = template.target_for_trace();
            let target = Target {
                url: &url,
                host,
                port,
            };
            trace.attempt(template.method(), &target, attempts - 1)
        });
        if let Some(traceparent) = span.as_ref().and_then(|s| s.traceparent()) {
            request.headers_mut().insert(TRACEPARENT, traceparent);
        }
        // The first attempt has what the token wait (and any hold) left of the route's
        // timeout; a retry has the whole timeout again.
        let sent_at = Instant::now();
        let timeout = if attempts == 1 {
            deadline.saturating_duration_since(sent_at)
        } else {
            route.config.timeout
        };
        started.get_or_insert(sent_at);
        // Counted as it leaves: a client that goes away meanwhile is logged with it.
        *attempts_sent = attempts;
        let result = route
            .upstream
            .send(request, timeout, &route.upstream_label)
            .await;
        let unprocessed = matches!(&result, Err(failed) if failed.unprocessed);
        let result = result.map_err(|failed| match failed.error {
            ProxyError::UpstreamTimeout { upstream, .. } => ProxyError::UpstreamTimeout {
                upstream,
                after: route.config.timeout,
            },
            other => other,
        });
        if let Some(span) = &mut span {
            match &result {
                Ok(response) => span.answered(response.status().as_u16()),
                Err(err) => span.failed(err.code()),
            }
        }
        drop(span);

        let result = match result {
            Ok(response) => Ok(response),
            Err(err @ ProxyError::UpstreamUnreachable { .. }) => Err(err),
            // A timeout already cost the route's whole timeout: not retried.
            Err(other) => return finish(Err(other), started, authorization),
        };
        let outcome = match &result {
            Ok(response) => Outcome::Response(response.status(), response.headers()),
            Err(_) if unprocessed => Outcome::Unprocessed,
            Err(_) => Outcome::ConnectionFailed,
        };
        let throttled_for = match &result {
            Ok(response) => {
                record_quota(route, response.headers(), telemetry);
                throttle::throttled_for(response.status(), || {
                    retry::requested_wait(response.headers())
                })
            }
            Err(_) => None,
        };
        // Only a 429 speaks of the route's rate: a 503's wait (maintenance, overload,
        // a fault) holds the route but teaches no pace.
        let over_quota = matches!(&result, Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS);
        route
            .throttle
            .observe(pass, throttled_for, over_quota, telemetry);

        if let Outcome::Response(status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN), _) =
            outcome
            && !credential_replayed
            && body.replayable()
            && let Some(refusal) = refused(route, authorization.as_ref(), status)
        {
            if refusal == Refusal::FailedOver {
                telemetry.record_failover(route.credential.as_ref().map_or("", |c| c.name()));
            }
            tracing::info!(
                route = %route.prefix(),
                request_id,
                %status,
                "upstream refused the credential: replaying once with a new one"
            );
            credential_replayed = true;
            discard(result);
            let replayed = match trace {
                Some(trace) => wait_for_token(trace, route, authorize(route, scope)).await,
                None => authorize(route, scope).await,
            };
            authorization = match replayed {
                Ok(authorization) => authorization,
                Err(err) => return finish(Err(err), started, authorization),
            };
            continue;
        }

        match retry::decide(
            policy,
            template.method(),
            outcome,
            attempts - held_attempts,
            body.replayable(),
        ) {
            // The hold now keeps every request of the route waiting, this one included:
            // it waits in `admit` like the others, and waiting out a declared window is
            // not a failure, so it does not count against the retry budget.
            Decision::Retry { reason, .. } if throttled_for.is_some() && route.throttle.holds() => {
                tracing::info!(
                    route = %route.prefix(),
                    attempt = attempts,
                    outcome = %describe(&result),
                    request_id,
                    reason,
                    "throttled: waiting out the route's hold, then retrying"
                );
                telemetry.record_retry(&route.name, reason);
                held_attempts += 1;
                discard(result);
            }
            Decision::Retry { wait, reason } if route.retry_budget.try_retry() => {
                tracing::info!(
                    route = %route.prefix(),
                    attempt = attempts,
                    outcome = %describe(&result),
                    wait_ms = wait.as_millis() as u64,
                    request_id,
                    reason,
                    "retrying"
                );
                telemetry.record_retry(&route.name, reason);
                discard(result);
                tokio::time::sleep(wait).await;
            }
            Decision::Retry { .. } => {
                // Under a sustained outage this is every request: one line per interval,
                // with the count held back, not one per request.
                if let Some(held_back) = route.budget_warnings.allow() {
                    tracing::warn!(
                        route = %route.prefix(),
                        attempt = attempts,
                        outcome = %describe(&result),
                        request_id,
                        held_back,
                        "retry budget of the route is spent: returning the upstream's answer \
                         (held_back: answers like it since the last line)"
                    );
                }
                return finish(result, started, authorization);
            }
            Decision::Stop(_) => return finish(result, started, authorization),
        }
    }
}

/// The quota headers Azure Resource Manager sends: what is left of the principal's quota.
const QUOTA_HEADERS: [&str; 9] = [
    "x-ms-ratelimit-remaining-subscription-reads",
    "x-ms-ratelimit-remaining-subscription-writes",
    "x-ms-ratelimit-remaining-subscription-deletes",
    "x-ms-ratelimit-remaining-tenant-reads",
    "x-ms-ratelimit-remaining-tenant-writes",
    "x-ms-ratelimit-remaining-tenant-deletes",
    "x-ms-ratelimit-remaining-subscription-global-reads",
    "x-ms-ratelimit-remaining-subscription-global-writes",
    "x-ms-ratelimit-remaining-subscription-global-deletes",
];

/// Each quota header of a response becomes `azgate_upstream_ratelimit_remaining` and feeds
/// the route's pace. One pass over the headers, most of which are not quota headers.
fn record_quota(route: &Route, headers: &http::HeaderMap, telemetry: &Telemetry) {
    for (name, value) in headers {
        if !name.as_str().starts_with("x-ms-ratelimit-remaining-") {
            continue;
        }
        let Some(known) = QUOTA_HEADERS.iter().find(|q| **q == name.as_str()) else {
            continue;
        };
        if let Some(left) = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
        {
            telemetry.record_ratelimit_remaining(&route.name, known, left);
            route.throttle.note_quota(known, left);
        }
    }
}

fn finish(
    result: Result<Response<UpstreamBody>, ProxyError>,
    started: Option<Instant>,
    authorization: Option<Authorization>,
) -> Sent {
    Sent {
        result,
        upstream_duration: started.map(|at| at.elapsed()),
        authorization,
    }
}

/// An answer that is not passed on: its connection is kept if it can be.
fn discard(result: Result<Response<UpstreamBody>, ProxyError>) {
    if let Ok(response) = result {
        upstream::discard(response);
    }
}

fn describe(result: &Result<Response<UpstreamBody>, ProxyError>) -> String {
    match result {
        Ok(response) => response.status().to_string(),
        Err(err) => err.to_string(),
    }
}

/// Tells the credential the upstream refused it; `Some` when a replay with a new token or
/// the secondary key makes sense.
fn refused(
    route: &Route,
    authorization: Option<&Authorization>,
    status: StatusCode,
) -> Option<Refusal> {
    let (credential, authorization) = (route.credential.as_ref()?, authorization?);
    match credential.refuse(authorization, status) {
        Refusal::Final => None,
        replay => Some(replay),
    }
}
