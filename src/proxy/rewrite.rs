//! The "rewrite response" phase's links: absolute URLs that point at the route's upstream
//! come back pointing at azgate, so a legacy tool following a long-running operation or a
//! paged list stays on azgate instead of calling Azure without a token. Links to other
//! hosts are left alone.

use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use super::route::Route;

/// Response headers that carry links to follow.
const LINK_HEADERS: [HeaderName; 4] = [
    http::header::LOCATION,
    http::header::CONTENT_LOCATION,
    HeaderName::from_static("operation-location"),
    HeaderName::from_static("azure-asyncoperation"),
];

/// Whether a response carries a link header worth rewriting.
pub fn has_links(headers: &HeaderMap) -> bool {
    // One pass over the names instead of a hashed lookup per link header.
    headers.keys().any(|name| LINK_HEADERS.contains(name))
}

/// Maps upstream URLs of one route to azgate URLs.
#[derive(Debug, Clone)]
pub struct LinkRewriter {
    scheme: String,
    host: String,
    port: u16,
    /// The upstream's base path, without a trailing slash.
    base_path: String,
    /// `https://gw.contoso.com` (no trailing slash).
    public_origin: String,
    /// What a mapped path starts with on azgate: the route prefix when it is stripped
    /// upstream, nothing when the upstream path already contains it.
    public_prefix: String,
}

impl LinkRewriter {
    /// `None` when the upstream is not a plain absolute URL (cannot happen after validation).
    pub fn new(route: &Route, public_origin: &str) -> Option<Self> {
        let upstream = &route.config.upstream;
        let scheme = upstream.scheme_str()?.to_ascii_lowercase();
        let host = upstream.host()?.to_ascii_lowercase();
        let port = upstream.port_u16().unwrap_or(default_port(&scheme));
        let public_prefix = if route.config.strip_prefix && route.config.prefix != "/" {
            route.config.prefix.clone()
        } else {
            String::new()
        };
        Some(Self {
            scheme,
            host,
            port,
            base_path: upstream.path().trim_end_matches('/').to_string(),
            public_origin: public_origin.trim_end_matches('/').to_string(),
            public_prefix,
        })
    }

    /// The azgate URL for an upstream URL, or `None` for a URL elsewhere.
    pub fn rewrite_url(&self, url: &str) -> Option<String> {
        let uri: Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let host = uri.host()?.to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(default_port(&scheme));
        if scheme != self.scheme || host != self.host || port != self.port {
            return None;
        }
        let path = uri.path();
        let rest = path.strip_prefix(self.base_path.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let mut out = format!("{}{}{}", self.public_origin, self.public_prefix, rest);
        if rest.is_empty() && self.public_prefix.is_empty() {
            out.push('/');
        }
        if let Some(query) = uri.query() {
            out.push('?');
            out.push_str(query);
        }
        Some(out)
    }

    /// Rewrites the link headers in place.
    pub fn headers(&self, headers: &mut HeaderMap) {
        for name in &LINK_HEADERS {
            let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            if let Some(rewritten) = self.rewrite_url(value.trim())
                && let Ok(value) = HeaderValue::from_str(&rewritten)
            {
                headers.insert(name.clone(), value);
            }
        }
    }

    /// Rewrites JSON string values that start with the upstream's URL (also in the
    /// `\/`-escaped form); the rest of the document is kept byte for byte. `None` when
    /// nothing matched.
    pub fn json_body(&self, body: &[u8]) -> Option<Vec<u8>> {
        let authority = if self.port == default_port(&self.scheme) {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let plain_from = format!("\"{}://{}{}", self.scheme, authority, self.base_path);
        let plain_to = format!("\"{}{}", self.public_origin, self.public_prefix);
        let escaped_from = plain_from.replace('/', "\\/");
        let escaped_to = plain_to.replace('/', "\\/");
        let once = replace_at_boundaries(body, plain_from.as_bytes(), plain_to.as_bytes());
        let twice = replace_at_boundaries(
            once.as_deref().unwrap_or(body),
            escaped_from.as_bytes(),
            escaped_to.as_bytes(),
        );
        twice.or(once)
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "http" { 80 } else { 443 }
}

/// Replaces `from` with `to` where `from` is followed by the end of a path segment (so a
/// base path `/api` does not match `/apis`). `None` when nothing was replaced.
fn replace_at_boundaries(haystack: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    let finder = memchr::memmem::Finder::new(from);
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    for at in finder.find_iter(haystack) {
        let after = haystack.get(at + from.len()).copied();
        let boundary = matches!(after, Some(b'/' | b'?' | b'"' | b'#' | b'\\'));
        if !boundary {
            continue;
        }
        let buf = out.get_or_insert_with(|| Vec::with_capacity(haystack.len()));
        buf.extend_from_slice(&haystack[copied..at]);
        buf.extend_from_slice(to);
        copied = at + from.len();
    }
    let mut buf = out?;
    buf.extend_from_slice(&haystack[copied..]);
    Some(buf)
}

/// Why a response body with `rewrite_body_links` was passed on without its links rewritten
/// (the `reason` label of `azgate_link_rewrite_skipped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Larger than the route's `rewrite_body_limit`: links in it still point upstream.
    TooLarge,
    /// Compressed although azgate asked for `identity`: links in it still point upstream.
    Compressed,
    /// Not JSON (and not empty): nothing to rewrite in azgate's view.
    NotJson,
}

impl Skipped {
    pub const ALL: [Skipped; 3] = [Skipped::TooLarge, Skipped::Compressed, Skipped::NotJson];

    pub fn label(self) -> &'static str {
        match self {
            Skipped::TooLarge => "too_large",
            Skipped::Compressed => "compressed",
            Skipped::NotJson => "not_json",
        }
    }

    /// Whether links the client needs may have been left pointing at the upstream.
    pub fn loses_links(self) -> bool {
        self != Skipped::NotJson
    }
}

/// Reads a JSON response body up to `limit` bytes and rewrites its links; a larger body,
/// a compressed one or a non-JSON one streams on unchanged, and says why. `Content-Length`
/// is set to the rewritten length.
pub async fn json_response(
    response: http::Response<super::body::ProxyBody>,
    rewriter: &LinkRewriter,
    limit: u64,
) -> (http::Response<super::body::ProxyBody>, Option<Skipped>) {
    use http_body::Body;
    use http_body_util::BodyExt;

    let (mut parts, mut body) = response.into_parts();
    let is_json = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        });
    let encoded = parts
        .headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    let skipped = if encoded {
        Some(Skipped::Compressed)
    } else if !is_json {
        // An empty body (204, HEAD) is not worth counting.
        (body.size_hint().upper() != Some(0)).then_some(Skipped::NotJson)
    } else if body.size_hint().lower() > limit {
        Some(Skipped::TooLarge)
    } else {
        None
    };
    if !is_json || encoded || skipped.is_some() {
        return (http::Response::from_parts(parts, body), skipped);
    }
    let mut chunks = std::collections::VecDeque::new();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(err) => {
                // Hand the failure on to the client as a broken body, as streaming would.
                let rest = super::body::boxed(http_body_util::StreamBody::new(
                    futures_util::stream::once(async move {
                        Err::<http_body::Frame<bytes::Bytes>, _>(err)
                    }),
                ));
                let body = super::body::Prefixed::new(chunks, rest);
                return (
                    http::Response::from_parts(parts, super::body::boxed(body)),
                    None,
                );
            }
        };
        match frame.into_data() {
            Ok(data) => {
                total += data.len() as u64;
                chunks.push_back(data);
                if total > limit {
                    let body = super::body::Prefixed::new(chunks, body);
                    return (
                        http::Response::from_parts(parts, super::body::boxed(body)),
                        Some(Skipped::TooLarge),
                    );
                }
            }
            // JSON responses carry no trailers worth keeping once rewritten.
            Err(_trailers) => {}
        }
    }
    let mut whole = Vec::with_capacity(total as usize);
    for chunk in &chunks {
        whole.extend_from_slice(chunk);
    }
    let out = rewriter.json_body(&whole).unwrap_or(whole);
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    (
        http::Response::from_parts(parts, super::body::full(out)),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewriter(prefix: &str, upstream: &str, strip: bool) -> LinkRewriter {
        let route = crate::proxy::route::tests::route(prefix, upstream, strip);
        LinkRewriter::new(&route, "https://gw.contoso.com/").unwrap()
    }

    #[test]
    fn urls() {
        let arm = rewriter("/arm", "https://management.azure.com", true);
        let ms = rewriter(
            "/ms",
            "https://acct.restv2.westeurope.media.azure.net/api",
            true,
        );
        let kept = rewriter("/keep", "https://host.example", false);
        let cases: &[(&LinkRewriter, &str, Option<&str>)] = &[
            (
                &arm,
                "https://management.azure.com/subscriptions/1/operations/2?api-version=2023",
                Some("https://gw.contoso.com/arm/subscriptions/1/operations/2?api-version=2023"),
            ),
            (
                &arm,
                "https://MANAGEMENT.azure.com:443/x",
                Some("https://gw.contoso.com/arm/x"),
            ),
            (
                &arm,
                "https://management.azure.com",
                Some("https://gw.contoso.com/arm/"),
            ),
            (&arm, "http://management.azure.com/x", None),
            (&arm, "https://management.azure.com:8443/x", None),
            (&arm, "https://login.microsoftonline.com/x", None),
            (&arm, "/relative/path", None),
            (
                &ms,
                "https://acct.restv2.westeurope.media.azure.net/api/Assets('nb:cid')",
                Some("https://gw.contoso.com/ms/Assets('nb:cid')"),
            ),
            (
                &ms,
                "https://acct.restv2.westeurope.media.azure.net/apis/x",
                None,
            ),
            (
                &ms,
                "https://acct.restv2.westeurope.media.azure.net/other",
                None,
            ),
            (
                &kept,
                "https://host.example/keep/x",
                Some("https://gw.contoso.com/keep/x"),
            ),
        ];
        for (rewriter, url, want) in cases {
            assert_eq!(rewriter.rewrite_url(url).as_deref(), *want, "{url}");
        }
    }

    #[test]
    fn json_bodies_keep_everything_else_byte_for_byte() {
        let ms = rewriter(
            "/ms",
            "https://acct.restv2.westeurope.media.azure.net/api",
            true,
        );
        let body = br#"{"odata.nextLink":"https://acct.restv2.westeurope.media.azure.net/api/Assets?$skiptoken=1",
  "value":[{"__metadata":{"uri":"https:\/\/acct.restv2.westeurope.media.azure.net\/api\/Assets('a')"},"Name":"https://acct.restv2.westeurope.media.azure.net/api is here"}],
  "other":"https://elsewhere.example/api/x","apis":"https://acct.restv2.westeurope.media.azure.net/apis"}"#;
        let out = String::from_utf8(ms.json_body(body).unwrap()).unwrap();
        assert!(
            out.contains(r#""odata.nextLink":"https://gw.contoso.com/ms/Assets?$skiptoken=1""#),
            "{out}"
        );
        assert!(
            out.contains(r#""uri":"https:\/\/gw.contoso.com\/ms\/Assets('a')""#),
            "{out}"
        );
        assert!(
            out.contains(r#""Name":"https://acct.restv2.westeurope.media.azure.net/api is here""#),
            "only string values that start with the URL"
        );
        assert!(out.contains(r#""other":"https://elsewhere.example/api/x""#));
        assert!(out.contains(r#""apis":"https://acct.restv2.westeurope.media.azure.net/apis""#));
        assert!(out.contains("\n  \"value\""), "formatting is kept");
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok());
        assert!(ms.json_body(br#"{"a":"b"}"#).is_none());
    }
}
