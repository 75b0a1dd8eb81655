//! The "prepare upstream request" phase: the client's request becomes the upstream's:
//! new URI, hop-by-hop and client credential headers removed, route headers added, the
//! request id set and the credential injected. The body is passed on as a stream.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use http::uri::PathAndQuery;
use http::{Extensions, HeaderValue, Request, Uri, Version, header};
use hyper::body::Incoming;

use super::body::{self, CountingBody, ProxyBody};
use super::error::ProxyError;
use super::headers;
use super::query;
use super::route::Route;
use crate::credentials::Injection;

pub fn upstream_request(
    request: Request<Incoming>,
    route: &Route,
    injection: Option<Injection>,
    request_id: &HeaderValue,
    bytes_in: Arc<AtomicU64>,
) -> Result<Request<ProxyBody>, ProxyError> {
    let (mut parts, incoming) = request.into_parts();

    parts.uri = upstream_uri(&parts.uri, route, injection.as_ref())?;
    // Requests leave as HTTP/1.1; the pool upgrades to HTTP/2 when ALPN agrees.
    parts.version = Version::HTTP_11;
    // Inbound extensions describe the client's connection, not this request.
    parts.extensions = Extensions::new();

    let h = &mut parts.headers;
    headers::remove_hop_by_hop(h);
    headers::strip_client_credentials(h);
    // The client already got its 100 Continue from azgate's own server.
    h.remove(header::EXPECT);
    // The pooled client sets Host (or :authority) from the upstream URI.
    h.remove(header::HOST);
    headers::add_missing(h, &route.config.set_headers);
    h.insert(headers::CLIENT_REQUEST_ID, request_id.clone());
    if let Some(Injection::Header { name, value }) = injection {
        h.insert(name, value);
    }

    let body = body::boxed(CountingBody::new(incoming, bytes_in));
    Ok(Request::from_parts(parts, body))
}

/// The upstream URI: upstream scheme and authority, the mapped path, the client's query
/// byte for byte minus its own `accessToken`, plus an injected query credential.
fn upstream_uri(
    original: &Uri,
    route: &Route,
    injection: Option<&Injection>,
) -> Result<Uri, ProxyError> {
    let path = route.upstream_path(original.path());
    let mut query = original.query().and_then(query::strip_client_credentials);
    if let Some(Injection::Query { name, value }) = injection {
        query = Some(query::append(query.as_deref(), name, value.expose()));
    }
    let path_and_query = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = route.config.upstream.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).map_err(|e| {
        ProxyError::BadRequest(format!("the request path cannot be forwarded: {e}"))
    })?);
    Uri::from_parts(parts)
        .map_err(|e| ProxyError::BadRequest(format!("the request path cannot be forwarded: {e}")))
}
