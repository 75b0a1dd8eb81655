//! Who may use the proxy: client address allow-list (with `X-Forwarded-For` honoured only
//! from trusted proxies) and inbound API keys compared in constant time.

use std::net::IpAddr;

use aws_lc_rs::digest;
use http::HeaderMap;
use ipnet::IpNet;
use subtle::ConstantTimeEq;

use crate::config::InboundConfig;
use crate::secret::Secret;

/// A SHA-256 digest of a key: comparing fixed-length digests keeps the comparison time
/// independent of the key's length and contents.
#[derive(Clone)]
pub struct KeyDigest([u8; 32]);

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyDigest(***)")
    }
}

impl KeyDigest {
    pub fn of(key: &[u8]) -> Self {
        let d = digest::digest(&digest::SHA256, key);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    pub fn of_secret(key: &Secret) -> Self {
        Self::of(key.expose().as_bytes())
    }
}

/// True when `presented` equals one of `keys`. Every key is compared, always.
pub fn key_matches(presented: &KeyDigest, keys: &[KeyDigest]) -> bool {
    let mut found = subtle::Choice::from(0);
    for key in keys {
        found |= presented.0.ct_eq(&key.0);
    }
    found.into()
}

/// The inbound access policy of the proxy listener.
#[derive(Debug, Default)]
pub struct AccessPolicy {
    keys: Vec<KeyDigest>,
    allow: Vec<IpNet>,
    trusted_proxies: Vec<IpNet>,
}

impl AccessPolicy {
    pub fn new(config: &InboundConfig) -> Self {
        Self {
            keys: config.api_keys.iter().map(KeyDigest::of_secret).collect(),
            allow: config.allow.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
        }
    }

    pub fn requires_key(&self) -> bool {
        !self.keys.is_empty()
    }

    pub fn key_accepted(&self, presented: &KeyDigest) -> bool {
        key_matches(presented, &self.keys)
    }

    /// The client's address: the direct peer, unless the peer is a trusted proxy, in
    /// which case the right-most `X-Forwarded-For` entry that is not a trusted proxy.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusted(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
            .map(canonical)
            .collect();
        forwarded
            .iter()
            .rev()
            .find(|addr| !self.trusted(**addr))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer)
    }

    /// Whether `addr` may use the proxy (always, without an allow-list).
    pub fn address_allowed(&self, addr: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&canonical(addr)))
    }

    /// Whether a direct peer is one of `trusted_proxies` (whose forwarding headers are
    /// believed).
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.trusted(canonical(peer))
    }

    fn trusted(&self, addr: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&addr))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, as dual-stack sockets report them) are
/// compared as the IPv4 address they are.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn policy(allow: &[&str], trusted: &[&str]) -> AccessPolicy {
        AccessPolicy {
            keys: vec![
                KeyDigest::of(b"key-one-0123456789"),
                KeyDigest::of(b"key-two-0123456789"),
            ],
            allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
            trusted_proxies: trusted.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn keys() {
        let p = policy(&[], &[]);
        assert!(p.key_accepted(&KeyDigest::of(b"key-one-0123456789")));
        assert!(p.key_accepted(&KeyDigest::of(b"key-two-0123456789")));
        assert!(!p.key_accepted(&KeyDigest::of(b"key-one-012345678")));
        assert!(!p.key_accepted(&KeyDigest::of(b"")));
        assert!(!format!("{p:?}").contains("key-one"));
    }

    #[test]
    fn allow_list_v4_v6_and_mapped() {
        let p = policy(&["10.0.0.0/8", "fd00::/8"], &[]);
        let cases = [
            ("10.1.2.3", true),
            ("11.0.0.1", false),
            ("fd12::1", true),
            ("fe80::1", false),
            ("::ffff:10.9.9.9", true),
            ("::ffff:192.168.1.1", false),
        ];
        for (addr, want) in cases {
            assert_eq!(p.address_allowed(addr.parse().unwrap()), want, "{addr}");
        }
        assert!(policy(&[], &[]).address_allowed("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let p = policy(&[], &["10.0.0.0/24"]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.7, 198.51.100.2, 10.0.0.9"),
        );
        // A trusted peer: the right-most untrusted entry is the client.
        assert_eq!(
            p.client_addr("10.0.0.5".parse().unwrap(), &h),
            "198.51.100.2".parse::<IpAddr>().unwrap()
        );
        // An untrusted peer cannot choose its address.
        assert_eq!(
            p.client_addr("192.0.2.1".parse().unwrap(), &h),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        // No header, or garbage: the peer itself.
        assert_eq!(
            p.client_addr("10.0.0.5".parse().unwrap(), &HeaderMap::new()),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
        let mut junk = HeaderMap::new();
        junk.insert("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
        assert_eq!(
            p.client_addr("10.0.0.5".parse().unwrap(), &junk),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
        // Without trusted proxies the header is never read.
        let none = policy(&[], &[]);
        assert_eq!(
            none.client_addr("10.0.0.5".parse().unwrap(), &h),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
    }
}
