//! The listener rules: which listen address needs an inbound control (the safe-bind rule,
//! for the proxy and the admin listener), and which two addresses would take one socket.

use std::net::SocketAddr;

use ipnet::IpNet;

use crate::config::{InboundConfig, TlsConfig};

/// The safe-bind rule of the proxy listener: an address reachable from other machines
/// needs an inbound control, unless `allow_unauthenticated` says something in front
/// restricts access. Checked at start against the configured address and on reload
/// against the address actually bound. Returns the problem, if any.
pub fn exposed_proxy(
    listen: SocketAddr,
    inbound: &InboundConfig,
    tls: Option<&TlsConfig>,
    allow_unauthenticated: bool,
) -> Option<String> {
    (!listen.ip().is_loopback() && !controlled(inbound, tls) && !allow_unauthenticated).then(|| {
        let allow_all = if allows_everything(&inbound.allow) {
            " ([server.inbound] allow admits every address, so it controls nothing)"
        } else {
            ""
        };
        format!(
            "{listen} is reachable from other machines, and without inbound access control \
             anyone who reaches it can use azgate's Azure credentials{allow_all}. Add one of \
             [server.inbound] api_keys (clients send x-azgate-key), [server.inbound] allow \
             (client CIDRs) or [server.tls] client_ca (mTLS); or set \
             server.allow_unauthenticated = true if something in front of azgate already \
             restricts access"
        )
    })
}

/// The same rule for the admin listener. The admin endpoints never proxy, but the status
/// page shows routes and recent request paths. An allow-list of every address still counts
/// here (with its warning): the admin listener has no `allow_unauthenticated`, and probes
/// from changing node addresses may need it.
pub fn exposed_admin(
    listen: SocketAddr,
    inbound: &InboundConfig,
    tls: Option<&TlsConfig>,
) -> Option<String> {
    let controlled = controlled(inbound, tls) || !inbound.allow.is_empty();
    (!listen.ip().is_loopback() && !controlled).then(|| {
        format!(
            "{listen} is reachable from other machines; protect the admin endpoints with \
             [admin.inbound] api_keys or allow, or [admin.tls] client_ca, or keep them on loopback"
        )
    })
}

/// Whether two listen addresses would take the same socket: the same port (port 0 asks
/// for a fresh one, so it never collides) and overlapping addresses. An unspecified address
/// overlaps every address of its family, and `[::]` also the IPv4 ones, because Linux binds
/// it dual-stack by default.
pub fn listeners_collide(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let (x, y) = (a.ip().to_canonical(), b.ip().to_canonical());
    let covers = |wide: std::net::IpAddr, other: std::net::IpAddr| {
        wide.is_unspecified() && (wide.is_ipv6() || other.is_ipv4())
    };
    x == y || covers(x, y) || covers(y, x)
}

/// An allow-list with a `/0` entry admits every client of that address family.
fn allows_everything(allow: &[IpNet]) -> bool {
    allow.iter().any(|net| net.prefix_len() == 0)
}

/// Whether a listener has an inbound control: keys, an address allow-list that excludes
/// someone, or mTLS.
pub fn controlled(inbound: &InboundConfig, tls: Option<&TlsConfig>) -> bool {
    !inbound.api_keys.is_empty()
        || (!inbound.allow.is_empty() && !allows_everything(&inbound.allow))
        || tls.is_some_and(|t| t.client_ca.is_some())
}

#[cfg(test)]
mod tests {
    use super::listeners_collide;

    #[test]
    fn listeners_collide_on_the_same_port_and_overlapping_addresses() {
        let cases = [
            ("127.0.0.1:8080", "127.0.0.1:8080", true),
            ("0.0.0.0:8080", "127.0.0.1:8080", true),
            ("127.0.0.1:8080", "0.0.0.0:8080", true),
            ("[::]:8080", "127.0.0.1:8080", true),
            ("[::]:8080", "[::1]:8080", true),
            ("[::ffff:127.0.0.1]:8080", "127.0.0.1:8080", true),
            ("0.0.0.0:8080", "[::1]:8080", false),
            ("127.0.0.1:8080", "127.0.0.2:8080", false),
            ("127.0.0.1:8080", "127.0.0.1:9090", false),
            ("127.0.0.1:0", "127.0.0.1:0", false),
            ("0.0.0.0:0", "0.0.0.0:0", false),
        ];
        for (a, b, want) in cases {
            let (a, b) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(listeners_collide(a, b), want, "{a} vs {b}");
        }
    }
}
