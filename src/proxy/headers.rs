//! Header hygiene, both directions: hop-by-hop headers removed, the client's own
//! credentials stripped, route headers added, and the request id carried through.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `x-ms-client-request-id`: chosen by the client (or azgate), logged by Azure.
pub const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-client-request-id");
/// `x-ms-request-id`: the upstream's own id for the request.
pub const UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-request-id");
/// The inbound key header of azgate; never forwarded.
pub const AZGATE_KEY: HeaderName = HeaderName::from_static("x-azgate-key");

/// Headers that only describe one connection (RFC 9110 §7.6.1), plus the proxy
/// credentials of that hop.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Credentials a client may send itself; azgate replaces them, never merges.
static CLIENT_CREDENTIALS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    HeaderName::from_static("ocp-apim-subscription-key"),
    AZGATE_KEY,
];

/// Removes hop-by-hop headers: `Connection` and every header it names, the fixed list
/// above, and `TE` unless it asks for `trailers` (then exactly `TE: trailers` is kept).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names first, noting which of the list are there: most messages
    // carry `Connection: keep-alive` and nothing else of it, and each removal hashes its
    // name (see bench/README.md).
    let (mut present, mut te, mut keep_alive_only) = (0u16, false, true);
    for (name, value) in headers.iter() {
        match hop_by_hop_index(name) {
            Some(i) => {
                present |= 1 << i;
                // `Connection: keep-alive` names only a header of the list itself.
                keep_alive_only &= i != 0 || value.as_bytes().eq_ignore_ascii_case(b"keep-alive");
            }
            None => te |= name == header::TE,
        }
    }
    if present & 1 != 0 && !keep_alive_only {
        // The headers `Connection` names (`keep-alive`, `close` and the like name none
        // that is there, usually): looked up without allocating, collected only if there.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|token| !token.is_empty() && headers.contains_key(*token))
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    // `Connection` may have named `TE` itself, which then is gone already.
    if te && headers.contains_key(header::TE) {
        let wants_trailers = headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| {
                token
                    .split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
            });
        headers.remove(header::TE);
        if wants_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// Where `name` is in [`HOP_BY_HOP`]. One match on the name's text: comparing it with each
/// listed name in turn (`HeaderName`'s `==`) cost about 1,000 instructions per request,
/// on each of the request's and the response's headers (bench/README.md).
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "trailer" => 3,
        "transfer-encoding" => 4,
        "upgrade" => 5,
        "proxy-authorization" => 6,
        "proxy-authenticate" => 7,
        _ => return None,
    })
}

/// Whether `name` is one of [`CLIENT_CREDENTIALS`] (a match, as `hop_by_hop_index`).
fn is_client_credential(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "authorization" | "ocp-apim-subscription-key" | "x-azgate-key"
    )
}

/// Strips the client's `Authorization`, `Ocp-Apim-Subscription-Key` and `x-azgate-key`.
pub fn strip_client_credentials(headers: &mut HeaderMap) {
    if headers.keys().any(is_client_credential) {
        for name in &CLIENT_CREDENTIALS {
            headers.remove(name);
        }
    }
}

/// Adds each route header the client did not send.
pub fn add_missing(headers: &mut HeaderMap, set_headers: &[(HeaderName, HeaderValue)]) {
    for (name, value) in set_headers {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Drops every header whose value contains `secret` (an upstream echoing the injected
/// credential back must not hand it to the client).
pub fn remove_echoes(headers: &mut HeaderMap, secret: &[u8]) {
    if secret.len() < 8 {
        return;
    }
    let echoed: Vec<HeaderName> = headers
        .iter()
        // Only a value at least as long as the secret can hold it; the length test
        // spares a substring search per header (each one sets up a searcher for the
        // whole needle, a 2 KB Entra token) on nearly every header.
        .filter(|(_, value)| {
            value.len() >= secret.len() && memchr::memmem::find(value.as_bytes(), secret).is_some()
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in echoed {
        tracing::warn!(header = %name, "the upstream echoed the injected credential in a response header; removed");
        headers.remove(name);
    }
}

/// The client's `x-ms-client-request-id` when it is a sensible id (1–256 visible ASCII
/// characters), else a new UUID.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(value) = headers.get(CLIENT_REQUEST_ID) {
        let bytes = value.as_bytes();
        if !bytes.is_empty()
            && bytes.len() <= 256
            && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
        {
            return value.clone();
        }
    }
    let id = uuid::Uuid::new_v4();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf))
        .unwrap_or(HeaderValue::from_static("invalid-uuid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_matches_agree_with_the_lists() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
            assert!(!is_client_credential(name), "{name}");
        }
        for name in &CLIENT_CREDENTIALS {
            assert!(is_client_credential(name), "{name}");
            assert_eq!(hop_by_hop_index(name), None, "{name}");
        }
        for other in [
            "te",
            "host",
            "content-length",
            "x-connection",
            "keep-alives",
            "upgrade-insecure-requests",
        ] {
            let name = HeaderName::from_static(other);
            assert_eq!(hop_by_hop_index(&name), None, "{other}");
            assert!(!is_client_credential(&name), "{other}");
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut n: Vec<String> = h
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        n.sort();
        n
    }

    #[test]
    fn hop_by_hop_table() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (
                &[("connection", "close"), ("accept", "*/*")],
                &["accept: */*"],
            ),
            (
                &[
                    ("connection", "keep-alive, X-Foo"),
                    ("x-foo", "1"),
                    ("x-bar", "2"),
                ],
                &["x-bar: 2"],
            ),
            (
                &[
                    ("connection", "x-a"),
                    ("connection", "x-b"),
                    ("x-a", "1"),
                    ("x-b", "1"),
                ],
                &[],
            ),
            (
                &[
                    ("keep-alive", "timeout=5"),
                    ("proxy-connection", "keep-alive"),
                ],
                &[],
            ),
            (&[("te", "trailers")], &["te: trailers"]),
            (&[("te", "gzip, trailers;q=0.5")], &["te: trailers"]),
            (&[("te", "gzip")], &[]),
            (
                &[("trailer", "x-checksum"), ("transfer-encoding", "chunked")],
                &[],
            ),
            (
                &[
                    ("upgrade", "websocket"),
                    ("proxy-authorization", "Basic x"),
                    ("proxy-authenticate", "Basic"),
                ],
                &[],
            ),
            (
                &[
                    ("content-type", "application/json"),
                    ("x-ms-version", "2.19"),
                ],
                &["content-type: application/json", "x-ms-version: 2.19"],
            ),
            (
                &[("connection", "bad header name!"), ("x-keep", "1")],
                &["x-keep: 1"],
            ),
            // Each listed header on its own, without a `Connection` naming it.
            (&[("upgrade", "h2c"), ("accept", "*/*")], &["accept: */*"]),
            (&[("transfer-encoding", "chunked")], &[]),
            (&[("keep-alive", "timeout=5"), ("x-a", "1")], &["x-a: 1"]),
            (&[("proxy-authenticate", "Basic")], &[]),
            // `Connection: keep-alive` alone (the common case, taken without parsing).
            (
                &[
                    ("connection", "Keep-Alive"),
                    ("keep-alive", "timeout=5"),
                    ("x-a", "1"),
                ],
                &["x-a: 1"],
            ),
            // … but not when another `Connection` value names more.
            (
                &[
                    ("connection", "keep-alive"),
                    ("connection", "x-foo"),
                    ("x-foo", "1"),
                    ("x-a", "1"),
                ],
                &["x-a: 1"],
            ),
            // `Connection` naming `TE` removes it, `trailers` or not.
            (&[("connection", "te"), ("te", "trailers")], &[]),
        ];
        for (input, want) in cases {
            let mut h = map(input);
            remove_hop_by_hop(&mut h);
            assert_eq!(
                names(&h),
                want.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{input:?}"
            );
        }
    }

    #[test]
    fn client_credentials_are_stripped() {
        let mut h = map(&[
            ("authorization", "Bearer client"),
            ("Ocp-Apim-Subscription-Key", "k"),
            ("x-azgate-key", "g"),
            ("accept", "*/*"),
        ]);
        strip_client_credentials(&mut h);
        assert_eq!(names(&h), vec!["accept: */*"]);
        for name in ["authorization", "ocp-apim-subscription-key", "x-azgate-key"] {
            let mut h = map(&[(name, "secret"), ("accept", "*/*")]);
            strip_client_credentials(&mut h);
            assert_eq!(names(&h), vec!["accept: */*"], "{name}");
        }
    }

    #[test]
    fn set_headers_only_fill_gaps() {
        let mut h = map(&[("x-ms-version", "client")]);
        add_missing(
            &mut h,
            &[
                (
                    HeaderName::from_static("x-ms-version"),
                    HeaderValue::from_static("2.19"),
                ),
                (
                    HeaderName::from_static("dataserviceversion"),
                    HeaderValue::from_static("3.0"),
                ),
            ],
        );
        assert_eq!(
            names(&h),
            vec!["dataserviceversion: 3.0", "x-ms-version: client"]
        );
    }

    #[test]
    fn request_id_is_kept_or_made() {
        let h = map(&[("x-ms-client-request-id", "abc-123")]);
        assert_eq!(request_id(&h), "abc-123");
        for bad in [
            &[][..],
            &[("x-ms-client-request-id", "has space")][..],
            &[("x-ms-client-request-id", "")][..],
        ] {
            let id = request_id(&map(bad));
            assert_eq!(id.len(), 36, "{bad:?}");
            assert!(uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok());
        }
        let long = "a".repeat(300);
        assert_eq!(
            request_id(&map(&[("x-ms-client-request-id", &long)])).len(),
            36
        );
    }
}
