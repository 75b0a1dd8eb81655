//! `[server.inbound]` and `[admin.inbound]`: API keys, the client allow-list and the
//! trusted proxies, with warnings for lists that restrict nothing.

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::InboundConfig;
use crate::config::error::{Problems, join};
use crate::secret::Secret;

/// `[server.inbound]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawInbound {
    pub api_keys: Option<Vec<String>>,
    pub allow: Option<Vec<String>>,
    pub trusted_proxies: Option<Vec<String>>,
}

pub fn inbound(raw: RawInbound, section: &str, problems: &mut Problems) -> InboundConfig {
    let mut api_keys = Vec::new();
    for (i, key) in raw.api_keys.unwrap_or_default().into_iter().enumerate() {
        let path = format!("{}[{i}]", join(section, "api_keys"));
        if key.trim().is_empty() {
            problems.push(path, "is empty");
        } else if key.trim().len() < 16 {
            problems.push(
                path,
                "too short: use at least 16 random characters (value not shown)",
            );
        } else {
            api_keys.push(Secret::new(key));
        }
    }
    let allow_path = join(section, "allow");
    let allow = cidrs(raw.allow.unwrap_or_default(), &allow_path, problems);
    for (i, net) in allow.iter().enumerate() {
        if net.prefix_len() == 0 {
            problems.warn(
                format!("{allow_path}[{i}]"),
                format!(
                    "\"{net}\" admits every {} address: this allow-list restricts nothing",
                    family(net)
                ),
            );
        }
    }
    let trusted_path = join(section, "trusted_proxies");
    let trusted_proxies = cidrs(
        raw.trusted_proxies.unwrap_or_default(),
        &trusted_path,
        problems,
    );
    for (i, net) in trusted_proxies.iter().enumerate() {
        if net.prefix_len() == 0 {
            problems.warn(
                format!("{trusted_path}[{i}]"),
                format!(
                    "\"{net}\" trusts every {} peer as a proxy: any client can name its own \
                     address in X-Forwarded-For and pass the allow-list; list only the \
                     addresses of your proxies",
                    family(net)
                ),
            );
        }
    }
    InboundConfig {
        api_keys,
        allow,
        trusted_proxies,
    }
}

fn family(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "IPv4",
        IpNet::V6(_) => "IPv6",
    }
}

/// CIDRs, or bare addresses (a /32 or /128).
pub fn cidrs(list: Vec<String>, path: &str, problems: &mut Problems) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, text) in list.iter().enumerate() {
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => out.push(net.trunc()),
            Err(_) => problems.push(
                format!("{path}[{i}]"),
                format!("\"{text}\" is not a CIDR such as \"10.0.0.0/8\" or \"fd00::/8\""),
            ),
        }
    }
    out
}
