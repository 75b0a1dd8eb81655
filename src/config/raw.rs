//! The config file as written: serde mirrors of the TOML tables, every field optional and
//! every value in the form the user typed it. `validate` turns these into typed config.
//!
//! Each section is deserialised on its own, so that a wrong type in one route does not hide
//! the problems of the others; unknown keys are collected (they are usually typos).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::{Problems, join};

/// `[server]`: the proxy listener.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawServer {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub allow_unauthenticated: Option<bool>,
    pub shutdown_grace: Option<String>,
    pub drain_delay: Option<String>,
    pub header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub body_idle_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub backlog: Option<u32>,
    pub max_header_bytes: Option<String>,
    pub tls: Option<toml::Table>,
    pub inbound: Option<toml::Table>,
}

/// `[admin]`: the admin listener.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub ready_requires: Option<Vec<String>>,
    pub tls: Option<toml::Table>,
    pub inbound: Option<toml::Table>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// `[credentials.NAME]`: the union of every credential type's keys. Which keys a given
/// `type` accepts is checked in `credentials.rs`, against its own key list.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCredential {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
    pub authority: Option<String>,
    pub token_url: Option<String>,
    pub certificate: Option<String>,
    pub send_chain: Option<bool>,
    pub endpoint: Option<String>,
    pub token_file: Option<String>,
    pub subscription: Option<String>,
    pub key: Option<String>,
    pub secondary_key: Option<String>,
    pub header: Option<String>,
    pub value: Option<String>,
    pub location: Option<String>,
    pub account_id: Option<String>,
    pub subscription_key: Option<String>,
    pub arm: Option<String>,
    pub subscription_id: Option<String>,
    pub resource_group: Option<String>,
    pub account_name: Option<String>,
    pub permission: Option<String>,
    pub allow_edit: Option<bool>,
    pub inject: Option<String>,
    pub api_url: Option<String>,
    pub management_url: Option<String>,
}

/// `[[routes]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRoute {
    pub prefix: Option<String>,
    pub upstream: Option<String>,
    pub credential: Option<String>,
    pub strip_prefix: Option<bool>,
    pub methods: Option<Vec<String>>,
    pub set_headers: Option<BTreeMap<String, String>>,
    pub timeout: Option<String>,
    pub ca_file: Option<String>,
    pub retry: Option<super::retry::RawRetry>,
    pub max_body: Option<String>,
    pub allow_encoded_slash: Option<bool>,
    pub api_keys: Option<Vec<String>>,
    pub preset: Option<String>,
    pub account: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub set_query: Option<BTreeMap<String, String>>,
    pub rewrite_body_links: Option<bool>,
    pub rewrite_body_limit: Option<String>,
}

/// Deserialises one section, recording unknown keys and type errors under `path`.
/// Returns `None` when the section's types are wrong (its problems are recorded).
pub fn section<T: DeserializeOwned>(
    value: toml::Value,
    path: &str,
    problems: &mut Problems,
) -> Option<T> {
    let mut unknown = Vec::new();
    let result: Result<T, _> = {
        let mut record = |p: serde_ignored::Path<'_>| unknown.push(ignored_path(&p));
        let ignored = serde_ignored::Deserializer::new(value, &mut record);
        serde_path_to_error::deserialize(ignored)
    };
    for key in unknown {
        problems.push(join(path, &key), "unknown key");
    }
    match result {
        Ok(parsed) => Some(parsed),
        Err(err) => {
            let at = err.path().to_string();
            let at = if at == "." { String::new() } else { at };
            problems.push(
                join(path, &at),
                err.into_inner().message().trim_end().to_string(),
            );
            None
        }
    }
}

/// Formats a serde_ignored path the way the rest of the config reports paths
/// (`tls.cert`, `methods[0]`), skipping the `Option` layers serde inserts.
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => join(&ignored_path(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}
