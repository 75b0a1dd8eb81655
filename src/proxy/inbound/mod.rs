//! The "inbound check" phase: who the client is and whether it may use the proxy (address
//! allow-list, `x-azgate-key`), and whether the request is one azgate forwards at all —
//! hostile shapes (dot segments, encoded slashes, CONNECT, upgrades, absolute-form targets
//! for other hosts, ambiguous framing) are answered with a 4xx and never reach an upstream.

pub mod access;
pub mod body;
pub mod path;

use std::net::IpAddr;

use http::{HeaderMap, Method, Request, Version, header};

use super::ConnInfo;
use super::error::ProxyError;
use super::headers::AZGATE_KEY;
use super::route::Route;
use access::{AccessPolicy, KeyDigest};

/// A request that passed the listener-wide checks.
#[derive(Debug)]
pub struct Admitted {
    /// The client address the allow-list was applied to.
    pub client: IpAddr,
    /// The digest of the `x-azgate-key` the client sent, if any.
    pub key: Option<KeyDigest>,
    /// Whether the direct peer is a trusted proxy (its forwarding headers are kept).
    pub peer_trusted: bool,
}

/// Listener-wide checks, before routing. `max_header_bytes` is `server.max_header_bytes`.
pub fn admit<B>(
    request: &Request<B>,
    conn: &ConnInfo,
    policy: &AccessPolicy,
    max_header_bytes: usize,
) -> Result<Admitted, ProxyError> {
    // First: nothing else needs to look at a head this large.
    let size = head_size(request);
    if size > max_header_bytes {
        return Err(ProxyError::HeadersTooLarge {
            size,
            limit: max_header_bytes,
        });
    }
    let client = policy.client_addr(conn.peer.ip(), request.headers());
    if !policy.address_allowed(client) {
        return Err(ProxyError::Forbidden(format!(
            "the client address {client} is not allowed to use this proxy"
        )));
    }
    let key = request
        .headers()
        .get(AZGATE_KEY)
        .map(|v| KeyDigest::of(v.as_bytes()));
    if policy.requires_key() {
        match &key {
            None => {
                return Err(ProxyError::Unauthorized(
                    "send the proxy key in the x-azgate-key header".into(),
                ));
            }
            Some(k) if !policy.key_accepted(k) => {
                return Err(ProxyError::Unauthorized(
                    "the x-azgate-key is not valid".into(),
                ));
            }
            Some(_) => {}
        }
    }
    check_shape(request)?;
    path::check(request.uri().path(), true)
        .map_err(|p| ProxyError::BadRequest(p.message().into()))?;
    Ok(Admitted {
        client,
        key,
        peer_trusted: policy.is_trusted_proxy(conn.peer.ip()),
    })
}

/// Route-specific checks, after routing: the route's own keys, encoded slashes, and a
/// declared body size over the route's limit.
/// A route that narrows the inbound keys (`api_keys`) admits only those.
pub fn admit_keys(
    admitted: &Admitted,
    keys: Option<&[access::KeyDigest]>,
    prefix: &str,
) -> Result<(), ProxyError> {
    let Some(keys) = keys else {
        return Ok(());
    };
    let allowed = admitted
        .key
        .as_ref()
        .is_some_and(|k| access::key_matches(k, keys));
    if allowed {
        Ok(())
    } else {
        Err(ProxyError::Forbidden(format!(
            "this proxy key may not use the route {prefix}"
        )))
    }
}

pub fn admit_to_route<B>(
    request: &Request<B>,
    admitted: &Admitted,
    route: &Route,
) -> Result<(), ProxyError> {
    admit_keys(admitted, route.key_digests.as_deref(), route.prefix())?;
    if !route.config.allow_encoded_slash {
        path::check(request.uri().path(), false)
            .map_err(|p| ProxyError::BadRequest(p.message().into()))?;
    }
    if let Some(length) = content_length(request.headers())
        && length > route.config.max_body
    {
        return Err(ProxyError::PayloadTooLarge {
            limit: route.config.max_body,
        });
    }
    Ok(())
}

/// Requests azgate does not forward, whatever their route.
fn check_shape<B>(request: &Request<B>) -> Result<(), ProxyError> {
    let bad = |m: &str| Err(ProxyError::BadRequest(m.to_string()));
    if request.method() == Method::CONNECT {
        return bad("CONNECT is not supported: azgate is a reverse proxy, not a tunnel");
    }
    let headers = request.headers();
    // Absolute-form (`GET http://other/ HTTP/1.1`) asks for another host than ours.
    if request.version() <= Version::HTTP_11
        && let Some(target) = request.uri().authority()
    {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if host.is_none_or(|h| !h.eq_ignore_ascii_case(target.as_str())) {
            return bad("the request target names another host; azgate is not a forward proxy");
        }
    }
    // `Upgrade: h2c` (curl --http2) is harmless and answered in HTTP/1.1; other upgrades
    // (WebSocket) would hand the connection to the upstream with our credentials.
    let upgrades = headers
        .get_all(header::UPGRADE)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"h2c"));
    if upgrades {
        return bad("protocol upgrades (such as WebSocket) are not supported");
    }
    if headers.contains_key(header::TRANSFER_ENCODING)
        && headers.contains_key(header::CONTENT_LENGTH)
    {
        return bad("the request has both Content-Length and Transfer-Encoding");
    }
    Ok(())
}

/// The request head as counted against `server.max_header_bytes`: the method, the request
/// target, and each header's name and value with the 4 bytes (`: ` and CRLF) they take in
/// HTTP/1.1, so the count does not depend on the protocol the client spoke.
fn head_size<B>(request: &Request<B>) -> usize {
    let uri = request.uri();
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    request.headers().iter().fold(
        request.method().as_str().len() + target,
        |sum, (name, value)| sum + name.as_str().len() + value.len() + 4,
    )
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
