//! Part of the "prepare upstream request" phase: the forwarding headers (`X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded`, `X-Real-IP` …) the upstream sees.
//!
//! Anyone can write these headers, so they are believed only from a peer listed in
//! `trusted_proxies`: from any other peer they are dropped, and azgate says what it saw
//! itself — the peer's address, the scheme of the connection and the `Host` it was asked
//! for. From a trusted peer its chain is kept and the peer appended, as every proxy in a
//! chain does. A route with `forwarded_headers = false` sends none of them at all.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe the client or the hops before azgate. Only a trusted proxy's
/// are passed on.
static FORWARDING: [HeaderName; 7] = [
    header::FORWARDED,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-real-ip"),
];

/// Whether `name` is one of [`FORWARDING`]: one match on its text, cheaper than comparing
/// it with each listed name (`HeaderName`'s `==`) on every header of every request.
fn is_forwarding(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-forwarded-port"
            | "x-forwarded-prefix"
            | "x-real-ip"
    )
}

/// The hop azgate itself received the request on.
#[derive(Debug, Clone)]
pub struct ClientHop {
    /// The direct peer: the client, or the proxy in front of azgate.
    pub peer: IpAddr,
    /// Whether the peer is one of `trusted_proxies`.
    pub peer_trusted: bool,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// The `Host` (or HTTP/2 `:authority`) the client asked for.
    pub host: Option<HeaderValue>,
}

/// Sets the forwarding headers of an upstream request (see the module doc). `enabled` is
/// the route's `forwarded_headers`.
pub fn apply(headers: &mut HeaderMap, hop: &ClientHop, enabled: bool) {
    let trusted = enabled && hop.peer_trusted;
    if !trusted {
        // One pass over the names first: most requests carry none of these.
        if headers.keys().any(is_forwarding) {
            for name in &FORWARDING {
                headers.remove(name);
            }
        }
        if !enabled {
            return;
        }
    }
    // Only a trusted peer's are left to look up (each lookup hashes the name).
    let peer = address_text(canonical(hop.peer));
    let chain: Vec<&str> = if trusted {
        headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    let forwarded_for = if chain.is_empty() {
        HeaderValue::from_bytes(peer.as_bytes())
    } else {
        let peer = std::str::from_utf8(peer.as_bytes()).unwrap_or_default();
        HeaderValue::from_str(&format!("{}, {peer}", chain.join(", ")))
    };
    if let Ok(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, value);
    }
    // A trusted proxy in front knows the scheme and host the client used; keep them.
    if !(trusted && headers.contains_key(X_FORWARDED_PROTO)) {
        let proto = if hop.tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(trusted && headers.contains_key(X_FORWARDED_HOST))
        && let Some(host) = &hop.host
    {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

/// An address as text. IPv4, by far the common case, is written digit by digit: the
/// standard `Display` costs about a thousand instructions per request (bench/README.md).
enum AddressText {
    V4 { buf: [u8; 15], len: usize },
    Other(String),
}

impl AddressText {
    fn as_bytes(&self) -> &[u8] {
        match self {
            AddressText::V4 { buf, len } => &buf[..*len],
            AddressText::Other(text) => text.as_bytes(),
        }
    }
}

fn address_text(addr: IpAddr) -> AddressText {
    let IpAddr::V4(v4) = addr else {
        return AddressText::Other(addr.to_string());
    };
    let (mut buf, mut len) = ([0u8; 15], 0);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        let digits = [octet / 100, octet / 10 % 10, octet % 10];
        let skip = if octet >= 100 {
            0
        } else if octet >= 10 {
            1
        } else {
            2
        };
        for digit in &digits[skip..] {
            buf[len] = b'0' + digit;
            len += 1;
        }
    }
    AddressText::V4 { buf, len }
}

/// IPv4-mapped IPv6 addresses (dual-stack sockets) are written as the IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_match_agrees_with_the_list() {
        for name in &FORWARDING {
            assert!(is_forwarding(name), "{name}");
        }
        for other in [
            "host",
            "x-forwarded",
            "x-forwarded-fors",
            "via",
            "x-real-ips",
        ] {
            assert!(!is_forwarding(&HeaderName::from_static(other)), "{other}");
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "192.168.100.9",
            "255.255.255.255",
            "1.10.100.200",
            "2001:db8::1",
            "::1",
        ] {
            let addr: IpAddr = text.parse().unwrap();
            assert_eq!(address_text(addr).as_bytes(), text.as_bytes());
        }
    }

    fn hop(peer: &str, trusted: bool, tls: bool, host: Option<&'static str>) -> ClientHop {
        ClientHop {
            peer: peer.parse().unwrap(),
            peer_trusted: trusted,
            tls,
            host: host.map(HeaderValue::from_static),
        }
    }

    fn lines(h: &HeaderMap) -> Vec<String> {
        let mut out: Vec<String> = h
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn table() {
        let spoofed: &[(&str, &str)] = &[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
            ("forwarded", "for=1.2.3.4;proto=https"),
            ("x-real-ip", "1.2.3.4"),
            ("accept", "*/*"),
        ];
        type Case<'a> = (ClientHop, bool, &'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            // An untrusted client: everything it claims is dropped, azgate says what it saw.
            (
                hop("192.0.2.7", false, false, Some("gw.local:8080")),
                true,
                spoofed,
                &[
                    "accept: */*",
                    "x-forwarded-for: 192.0.2.7",
                    "x-forwarded-host: gw.local:8080",
                    "x-forwarded-proto: http",
                ],
            ),
            // Over TLS, no Host (cannot happen over HTTP/1.1, but nothing is made up).
            (
                hop("2001:db8::1", false, true, None),
                true,
                &[],
                &["x-forwarded-for: 2001:db8::1", "x-forwarded-proto: https"],
            ),
            // A dual-stack socket's mapped address is written as IPv4.
            (
                hop("::ffff:10.0.0.9", false, false, Some("h")),
                true,
                &[],
                &[
                    "x-forwarded-for: 10.0.0.9",
                    "x-forwarded-host: h",
                    "x-forwarded-proto: http",
                ],
            ),
            // A trusted proxy: its chain is kept (several lines joined) and the peer
            // appended; its Proto and Host win; its other headers pass.
            (
                hop("10.0.0.5", true, false, Some("gw.internal")),
                true,
                &[
                    ("x-forwarded-for", "203.0.113.7, 198.51.100.2"),
                    ("x-forwarded-for", "10.0.0.4"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", "api.contoso.com"),
                    ("x-real-ip", "203.0.113.7"),
                ],
                &[
                    "x-forwarded-for: 203.0.113.7, 198.51.100.2, 10.0.0.4, 10.0.0.5",
                    "x-forwarded-host: api.contoso.com",
                    "x-forwarded-proto: https",
                    "x-real-ip: 203.0.113.7",
                ],
            ),
            // A trusted proxy that sent nothing: azgate fills in what it saw.
            (
                hop("10.0.0.5", true, true, Some("gw.internal")),
                true,
                &[],
                &[
                    "x-forwarded-for: 10.0.0.5",
                    "x-forwarded-host: gw.internal",
                    "x-forwarded-proto: https",
                ],
            ),
            // Switched off on the route: none reach the upstream, trusted or not.
            (
                hop("192.0.2.7", false, false, Some("h")),
                false,
                spoofed,
                &["accept: */*"],
            ),
            (
                hop("10.0.0.5", true, false, Some("h")),
                false,
                &[("x-forwarded-for", "203.0.113.7"), ("forwarded", "for=x")],
                &[],
            ),
        ];
        for (hop, enabled, input, want) in cases {
            let mut h = HeaderMap::new();
            for (k, v) in *input {
                h.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_static(v),
                );
            }
            apply(&mut h, hop, *enabled);
            assert_eq!(
                lines(&h),
                want.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{hop:?} enabled={enabled} {input:?}"
            );
        }
    }
}
