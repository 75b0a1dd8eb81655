//! The "prepare upstream request" phase: the client's request head becomes a template
//! for the upstream's: new URI, hop-by-hop and client credential headers removed, the
//! forwarding headers set, route headers added, the request id set. Each attempt then builds a request from the
//! template with the credential injected, so a replay can carry a fresh token.

use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version, header};

use super::body::ProxyBody;
use super::error::ProxyError;
use super::forwarded::{self, ClientHop};
use super::headers;
use super::query;
use super::route::Route;
use crate::credentials::Injection;

/// The upstream request minus credential and body.
#[derive(Debug)]
pub struct UpstreamRequest {
    method: Method,
    /// Upstream scheme and authority, and the mapped path.
    uri_parts: (Option<http::uri::Scheme>, Option<http::uri::Authority>),
    path: String,
    /// The client's query minus its own `accessToken`.
    query: Option<String>,
    headers: HeaderMap,
}

impl UpstreamRequest {
    /// Takes the client's request head (its headers are reused, not copied).
    pub fn new(client: Parts, route: &Route, request_id: &HeaderValue, hop: &ClientHop) -> Self {
        let mut headers = client.headers;
        headers::remove_hop_by_hop(&mut headers);
        headers::strip_client_credentials(&mut headers);
        forwarded::apply(&mut headers, hop, route.config.forwarded_headers);
        // The client already got its 100 Continue from azgate's own server.
        headers.remove(header::EXPECT);
        // The pooled client sets Host (or :authority) from the upstream URI.
        headers.remove(header::HOST);
        headers::add_missing(&mut headers, &route.config.set_headers);
        if route.config.rewrite_body_links {
            // Links in compressed bodies could not be rewritten.
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        // A new value on every request: kept out of an HTTP/2 upstream's HPACK table
        // (never-indexed), where it would push out the entries worth keeping, the
        // credential first.
        let mut request_id = request_id.clone();
        request_id.set_sensitive(true);
        headers.insert(headers::CLIENT_REQUEST_ID, request_id);
        let upstream = &route.config.upstream;
        Self {
            method: client.method.clone(),
            uri_parts: (upstream.scheme().cloned(), upstream.authority().cloned()),
            path: route.upstream_path(client.uri.path()),
            query: query::add_missing(
                client.uri.query().and_then(query::strip_client_credentials),
                &route.config.set_query,
            ),
            headers,
        }
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Where attempts go, for their client spans: the URL without the injected credential
    /// and with the query redacted as in the access log, the host and the port.
    pub fn target_for_trace(&self) -> (String, &str, u16) {
        let (scheme, authority) = &self.uri_parts;
        let scheme = scheme.as_ref().map_or("https", |s| s.as_str());
        let host = authority.as_ref().map_or("", |a| a.host());
        let port = authority.as_ref().and_then(|a| a.port_u16());
        let port = port.unwrap_or(if scheme == "http" { 80 } else { 443 });
        let url = format!(
            "{scheme}://{}{}",
            authority.as_ref().map_or("", |a| a.as_str()),
            query::redact_for_log(&self.path, self.query.as_deref())
        );
        (url, host, port)
    }

    /// One attempt's request: the template plus the credential and a body.
    pub fn build(
        &self,
        injection: Option<&Injection>,
        body: ProxyBody,
    ) -> Result<Request<ProxyBody>, ProxyError> {
        let query = match injection {
            Some(Injection::Query { name, value }) => {
                Some(query::append(self.query.as_deref(), name, value.expose()))
            }
            _ => self.query.clone(),
        };
        let path_and_query = match query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        };
        let invalid = |e: http::Error| {
            ProxyError::BadRequest(format!("the request path cannot be forwarded: {e}"))
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = self.uri_parts.0.clone();
        parts.authority = self.uri_parts.1.clone();
        parts.path_and_query =
            Some(PathAndQuery::try_from(path_and_query).map_err(|e| invalid(e.into()))?);
        let uri = Uri::from_parts(parts).map_err(|e| invalid(e.into()))?;

        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri;
        // Requests leave as HTTP/1.1; the pool upgrades to HTTP/2 when ALPN agrees.
        *request.version_mut() = Version::HTTP_11;
        let mut headers = self.headers.clone();
        if let Some(Injection::Header { name, value }) = injection {
            headers.insert(name.clone(), value.clone());
        }
        *request.headers_mut() = headers;
        Ok(request)
    }
}
