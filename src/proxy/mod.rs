//! The request path, top to bottom:
//!
//! ```text
//! inbound check -> route -> prepare upstream request (strip, inject credential)
//!       -> send with retry -> rewrite response -> log + metrics
//! ```
//!
//! `Proxy::handle` is the whole path for one request; each phase is a named function in
//! its own module. In the route phase, a Video Indexer route answers the classic auth
//! calls of legacy tools itself (`vi_auth`) instead of forwarding them, and a vending
//! route (`vend`) answers with viewer tokens. Errors of any phase become a response in
//! `error::respond`, and only there.

pub mod access_log;
pub mod body;
pub mod error;
pub mod forwarded;
pub mod headers;
pub mod inbound;
pub mod prepare;
pub mod query;
pub mod replay;
pub mod retry;
pub mod rewrite;
pub mod route;
pub mod send;
pub mod throttle;
pub mod upstream;
pub mod vend;
pub mod vi_auth;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use opentelemetry::context::FutureExt as _;

use self::access_log::AccessLog;
use self::body::ProxyBody;
pub use self::body::ResponseBody;
use self::error::ProxyError;
pub use self::inbound::body::BodyReadGuard;
use self::inbound::body::InboundBody;
use self::prepare::UpstreamRequest;
use self::replay::ReplayBody;
use self::upstream::UpstreamBody;
use crate::gateway::Gateway;
use crate::telemetry::Telemetry;
use crate::trace::{self, Tracing};

/// Set on responses that took more than one upstream attempt.
const ATTEMPTS: http::HeaderName = http::HeaderName::from_static("x-azgate-attempts");

/// What azgate knows about the client connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The direct peer (a proxy in front of azgate, or the client itself).
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The verified client certificate's subject, with mTLS.
    pub client_subject: Option<Arc<str>>,
}

impl ConnInfo {
    pub fn plain(peer: SocketAddr) -> Self {
        Self {
            peer,
            tls: false,
            client_subject: None,
        }
    }
}

/// The proxy service shared by every connection. Cloning is cheap.
#[derive(Clone)]
pub struct Proxy {
    gateway: Arc<ArcSwap<Gateway>>,
    telemetry: Arc<Telemetry>,
    /// The span export pipeline; `None` when no OTLP endpoint is set.
    tracing: Option<Arc<Tracing>>,
}

impl Proxy {
    pub fn new(
        gateway: Arc<ArcSwap<Gateway>>,
        telemetry: Arc<Telemetry>,
        tracing: Option<Arc<Tracing>>,
    ) -> Self {
        Self {
            gateway,
            telemetry,
            tracing,
        }
    }

    /// Serves one request. Never fails: azgate's own errors are responses too. `finish`
    /// hands the response to the server, which adds its part (the connection's).
    ///
    /// Owned handles and `finish`, not borrows and a wrapping future: the server boxes
    /// this future as it is, and a wrapper would be one more copy of its 5.6 KiB per
    /// request (bench/README.md, "Seventh round").
    pub async fn handle<T>(
        self,
        request: Request<Incoming>,
        conn: Arc<ConnInfo>,
        finish: impl FnOnce(Response<ResponseBody>) -> T,
    ) -> T {
        let conn = &*conn;
        // One snapshot of the hot state for the whole request, even if a reload lands.
        let gateway = self.gateway.load_full();
        let request_id = headers::request_id(request.headers());
        let mut log = AccessLog::start(
            conn.peer,
            request.method().clone(),
            query::redact_for_log(request.uri().path(), request.uri().query()),
            request_id.to_str().unwrap_or_default().to_string(),
        );
        log.client_subject = conn.client_subject.clone();
        log.telemetry = Some((self.telemetry.clone(), self.telemetry.inflight()));
        // Trace context is read here, at the inbound edge. Without export, only the
        // client's trace id is noted, for the log line and error bodies.
        log.trace = self.tracing.as_ref().map(|tracing| {
            let inbound = trace::Inbound {
                method: request.method(),
                path: &log.path,
                tls: conn.tls,
            };
            tracing.server_span(request.headers(), &inbound)
        });
        log.trace_id = match &log.trace {
            Some(trace) => Some(trace.trace_id()),
            None => trace::context::incoming_trace_id(request.headers()),
        };
        // Headers every answer of the route carries, errors included (CORS).
        let mut extra = Vec::new();

        // The phases run in the server span's context, for the spans opened inside them.
        // Two calls, not one future bound to a name and then wrapped or awaited: that
        // moved the whole request future once more on every request, traced or not
        // (bench/README.md, "Tracing"). The traced one is boxed for the same reason.
        let forwarded = match log.trace.clone() {
            Some(trace) => {
                let forwarding = forward(
                    request,
                    conn,
                    &gateway,
                    &self.telemetry,
                    &request_id,
                    &mut log,
                    &mut extra,
                );
                Box::pin(forwarding.with_context(trace.context().clone())).await
            }
            None => {
                forward(
                    request,
                    conn,
                    &gateway,
                    &self.telemetry,
                    &request_id,
                    &mut log,
                    &mut extra,
                )
                .await
            }
        };
        let (mut response, idle_limit) = match forwarded {
            Ok((response, idle_limit)) => (response, Some(idle_limit)),
            Err(err) => {
                log.error = Some(err.code());
                tracing::debug!(request_id = %log.request_id, source = ?err.source(), "{err}");
                (error::respond(&err, &log.request_id, log.trace_id), None)
            }
        };
        response
            .headers_mut()
            .insert(headers::CLIENT_REQUEST_ID, request_id);
        for (name, value) in extra {
            response.headers_mut().append(name, value);
        }
        if log.attempts > 1 {
            response
                .headers_mut()
                .insert(ATTEMPTS, HeaderValue::from(log.attempts));
        }
        log.status = response.status().as_u16();
        finish(response.map(|body| ResponseBody::new(body, idle_limit, log)))
    }
}

/// inbound check -> route -> prepare -> send with retry -> rewrite. Returns the response
/// and the idle limit for its body.
async fn forward(
    request: Request<Incoming>,
    conn: &ConnInfo,
    gateway: &Gateway,
    telemetry: &Telemetry,
    request_id: &HeaderValue,
    log: &mut AccessLog,
    extra: &mut Vec<(http::HeaderName, HeaderValue)>,
) -> Result<(Response<ProxyBody>, std::time::Duration), ProxyError> {
    // inbound check
    let max_header_bytes = gateway.config.server.max_header_bytes;
    let admitted = inbound::admit(&request, conn, &gateway.access, max_header_bytes)?;
    log.client = Some(admitted.client);

    // route
    let matched =
        gateway
            .router
            .route(request.uri().path())
            .ok_or_else(|| ProxyError::RouteNotFound {
                path: request.uri().path().to_string(),
            })?;
    let route = match matched {
        route::Matched::Forward(route) => route,
        // A vending route answers itself with a viewer token (vend.rs).
        route::Matched::Vend(vending) => {
            log.route = Some(vending.name.clone());
            if let Some(trace) = &log.trace {
                trace.routed(request.method(), vending.prefix(), None);
            }
            *extra = vending.cors(request.headers());
            inbound::admit_keys(&admitted, vending.key_digests.as_deref(), vending.prefix())?;
            // Boxed, as the other answers azgate makes itself: held inline, each of these
            // futures (~3 KiB) would grow every forwarded request's future to its size,
            // and hyper copies that future as it boxes it (bench/README.md).
            let response = Box::pin(vend::answer(
                vending,
                request.method(),
                request.uri().path(),
                request.headers(),
                telemetry,
            ))
            .await?;
            return Ok((response, gateway.config.server.body_idle_timeout));
        }
    };
    log.route = Some(route.name.clone());
    let trace = log.trace.clone();
    if let Some(trace) = &trace {
        let credential = route.credential.as_ref().map(|c| c.name());
        trace.routed(request.method(), route.prefix(), credential);
    }
    route.check_method(request.method())?;
    inbound::admit_to_route(&request, &admitted, route)?;
    // A Video Indexer route answers the classic auth calls itself: a legacy tool that
    // fetches its own token gets one from the route's credential (vi_auth.rs).
    if let Some(call) = vi_auth::auth_call(route, request.uri()) {
        let response = Box::pin(vi_auth::answer(route, request.method(), call)).await?;
        return Ok((response, route.config.timeout));
    }
    // Kept to build links back to azgate, if the response has any (cheap clones).
    let origin = OriginHint {
        host: request.headers().get(http::header::HOST).cloned(),
        authority: request.uri().authority().cloned(),
        tls: conn.tls,
    };

    // prepare upstream request: strip, inject credential, hold the body for replay
    // The route's timeout bounds everything before the response headers: the wait for a
    // token first (the fetch itself goes on for the requests after this one), then the
    // first attempt gets what is left.
    let deadline = tokio::time::Instant::now() + route.config.timeout;
    let scope = route.token_scope(request.uri().path());
    let authorization = match &trace {
        Some(trace) => {
            let waiting = send::authorize_until(route, scope.as_ref(), deadline);
            send::wait_for_token(trace, route, waiting).await?
        }
        None => send::authorize_until(route, scope.as_ref(), deadline).await?,
    };
    let (mut parts, incoming) = request.into_parts();
    // Moves with the body, not the head the upstream requests are built from.
    let reading = parts.extensions.remove::<BodyReadGuard>();
    let hop = forwarded::ClientHop {
        peer: conn.peer.ip(),
        peer_trusted: admitted.peer_trusted,
        tls: conn.tls,
        host: origin.host.clone().or_else(|| {
            origin
                .authority
                .as_ref()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        }),
    };
    let template = UpstreamRequest::new(parts, route, request_id, &hop);
    let incoming = InboundBody::new(
        incoming,
        reading,
        log.bytes_in.clone(),
        route.config.max_body,
        gateway.config.server.body_idle_timeout,
    );
    let mut body = ReplayBody::read(body::boxed(incoming), route.replay_limit()).await?;

    // send with retry
    let sent = send::send_with_retry(
        route,
        &template,
        &mut body,
        authorization,
        &send::RequestFacts {
            id: &log.request_id,
            scope: scope.as_ref(),
            deadline,
            trace: trace.as_ref(),
        },
        telemetry,
        &mut log.attempts,
    )
    .await;
    log.upstream_duration = sent.upstream_duration;

    // rewrite response
    let secret = sent
        .authorization
        .as_ref()
        .map(|a| a.injection.secret_bytes());
    let mut response = rewrite_response(sent.result?, secret, log);
    let wants_links = route.config.rewrite_body_links || rewrite::has_links(response.headers());
    let links = wants_links
        .then(|| public_origin(gateway, &origin))
        .flatten()
        .and_then(|origin| rewrite::LinkRewriter::new(route, &origin));
    if let Some(links) = &links {
        links.headers(response.headers_mut());
        if route.config.rewrite_body_links {
            let skipped;
            (response, skipped) =
                rewrite::json_response(response, links, route.config.rewrite_body_limit).await;
            if let Some(skipped) = skipped {
                link_rewrite_skipped(route, skipped, telemetry, &log.request_id);
            }
        }
    }
    Ok((response, route.config.timeout))
}

/// Counts a body whose links were not rewritten, and warns (at most once a minute per
/// route) when links may have been left pointing at the upstream.
fn link_rewrite_skipped(
    route: &route::Route,
    skipped: rewrite::Skipped,
    telemetry: &Telemetry,
    request_id: &str,
) {
    telemetry.record_link_rewrite_skipped(&route.name, skipped.label());
    if !skipped.loses_links() {
        return;
    }
    if let Some(held_back) = route.rewrite_warnings.allow() {
        let why = match skipped {
            rewrite::Skipped::TooLarge => "the body is larger than rewrite_body_limit",
            _ => "the upstream compressed the body although azgate asked for identity",
        };
        tracing::warn!(
            route = %route.prefix(),
            reason = skipped.label(),
            limit = route.config.rewrite_body_limit,
            request_id,
            held_back,
            "links in a response body were not rewritten: {why}; they still point at the upstream"
        );
    }
}

/// What the client called azgate, for links back to it.
struct OriginHint {
    host: Option<HeaderValue>,
    authority: Option<http::uri::Authority>,
    tls: bool,
}

/// Where clients reach azgate: `server.public_url`, else the scheme of the connection and
/// the `Host` (or HTTP/2 `:authority`) the client used.
fn public_origin(gateway: &Gateway, hint: &OriginHint) -> Option<String> {
    if let Some(url) = &gateway.config.server.public_url {
        return Some(url.to_string().trim_end_matches('/').to_string());
    }
    let host = hint
        .host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| hint.authority.as_ref().map(|a| a.to_string()))?;
    // A Host header that is not a plain authority must not end up in a Location header.
    http::uri::Authority::try_from(host.as_str()).ok()?;
    let scheme = if hint.tls { "https" } else { "http" };
    Some(format!("{scheme}://{host}"))
}

/// The "rewrite response" phase: hop-by-hop headers removed, any header that echoes the
/// injected credential dropped, the upstream's request id noted for the log; the body
/// streams on untouched.
fn rewrite_response(
    response: Response<UpstreamBody>,
    injected: Option<&[u8]>,
    log: &mut AccessLog,
) -> Response<ProxyBody> {
    let (mut parts, incoming) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    if let Some(secret) = injected {
        headers::remove_echoes(&mut parts.headers, secret);
    }
    log.upstream_request_id = parts
        .headers
        .get(headers::UPSTREAM_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, body::boxed(incoming))
}
