//! `[credentials.NAME]` tables -> `CredentialConfig`, checked against the keys of their
//! `type`. Secret values are never echoed in messages.

use http::{HeaderName, HeaderValue};

use super::CredentialConfig;
use super::error::{Problems, join};
use super::raw::{self, RawCredential};

/// Every credential type of the contract, with the keys it accepts (besides `type`).
const TYPES: &[(&str, &[&str])] = &[
    (
        "client_secret",
        &[
            "tenant",
            "client_id",
            "client_secret",
            "scope",
            "resource",
            "authority",
            "token_url",
        ],
    ),
    (
        "client_certificate",
        &[
            "tenant",
            "client_id",
            "certificate",
            "scope",
            "resource",
            "send_chain",
            "authority",
            "token_url",
        ],
    ),
    (
        "managed_identity",
        &["scope", "resource", "client_id", "endpoint"],
    ),
    (
        "workload_identity",
        &["scope", "tenant", "client_id", "token_file", "authority"],
    ),
    (
        "azure_cli",
        &["scope", "resource", "tenant", "subscription"],
    ),
    ("default", &["scope", "resource"]),
    ("subscription_key", &["key", "secondary_key", "header"]),
    ("static", &["header", "value"]),
    (
        "video_indexer",
        &[
            "location",
            "account_id",
            "subscription_key",
            "arm",
            "subscription_id",
            "resource_group",
            "account_name",
            "permission",
            "allow_edit",
            "inject",
            "api_url",
            "management_url",
        ],
    ),
];

/// Types this build can already fetch credentials for.
const AVAILABLE: &[&str] = &["static", "subscription_key"];

const DEFAULT_KEY_HEADER: &str = "ocp-apim-subscription-key";

pub fn validate_all(
    tables: toml::Table,
    problems: &mut Problems,
) -> Vec<(String, CredentialConfig)> {
    let mut out = Vec::new();
    for (name, value) in tables {
        let path = join("credentials", &name);
        if !valid_name(&name) {
            problems.push(&path, "credential names use letters, digits, '-' and '_'");
        }
        let toml::Value::Table(table) = value else {
            problems.push(&path, "must be a table with a `type` key");
            continue;
        };
        if let Some(credential) = validate_one(table, &path, problems) {
            out.push((name, credential));
        }
    }
    out
}

fn validate_one(
    table: toml::Table,
    path: &str,
    problems: &mut Problems,
) -> Option<CredentialConfig> {
    let kind = match table.get("type") {
        Some(toml::Value::String(kind)) => kind.clone(),
        Some(_) => {
            problems.push(join(path, "type"), "must be a string");
            return None;
        }
        None => {
            problems.push(
                path,
                format!("missing key `type`; expected one of: {}", type_names()),
            );
            return None;
        }
    };
    let Some((_, keys)) = TYPES.iter().find(|(name, _)| *name == kind) else {
        problems.push(
            join(path, "type"),
            format!("unknown type \"{kind}\"; expected one of: {}", type_names()),
        );
        return None;
    };
    for key in table.keys() {
        let known_somewhere = TYPES.iter().any(|(_, ks)| ks.contains(&key.as_str()));
        if key != "type" && known_somewhere && !keys.contains(&key.as_str()) {
            problems.push(
                join(path, key),
                format!(
                    "does not apply to type \"{kind}\"; its keys are: {}",
                    keys.join(", ")
                ),
            );
        }
    }
    let raw: RawCredential = raw::section(toml::Value::Table(table), path, problems)?;
    if !AVAILABLE.contains(&kind.as_str()) {
        problems.push(
            join(path, "type"),
            format!(
                "type \"{kind}\" is not available in this build yet; available now: {}",
                AVAILABLE.join(", ")
            ),
        );
        return None;
    }
    match kind.as_str() {
        "static" => {
            let header = header_name(raw.header.as_deref(), None, &join(path, "header"), problems);
            let value = secret_header_value(raw.value, &join(path, "value"), problems);
            Some(CredentialConfig::Static {
                header: header?,
                value: value?,
            })
        }
        "subscription_key" => {
            let header = header_name(
                raw.header.as_deref(),
                Some(DEFAULT_KEY_HEADER),
                &join(path, "header"),
                problems,
            );
            let key = secret_header_value(raw.key, &join(path, "key"), problems);
            if raw.secondary_key.is_some() {
                problems.push(
                    join(path, "secondary_key"),
                    "key failover is not available in this build yet; remove secondary_key",
                );
            }
            Some(CredentialConfig::SubscriptionKey {
                header: header?,
                key: key?,
            })
        }
        _ => None,
    }
}

fn header_name(
    value: Option<&str>,
    default: Option<&str>,
    path: &str,
    problems: &mut Problems,
) -> Option<HeaderName> {
    let Some(text) = value.or(default) else {
        problems.push(path, "missing key");
        return None;
    };
    match HeaderName::from_bytes(text.as_bytes()) {
        Ok(name) => Some(name),
        Err(_) => {
            problems.push(path, format!("\"{text}\" is not a valid header name"));
            None
        }
    }
}

/// A secret that will be sent as a header value, marked sensitive. The value itself is
/// never echoed.
fn secret_header_value(
    value: Option<String>,
    path: &str,
    problems: &mut Problems,
) -> Option<HeaderValue> {
    let Some(text) = value else {
        problems.push(path, "missing key");
        return None;
    };
    if text.is_empty() {
        problems.push(path, "is empty (is the environment variable it names set?)");
        return None;
    }
    match HeaderValue::from_str(&text) {
        Ok(mut value) => {
            value.set_sensitive(true);
            Some(value)
        }
        Err(_) => {
            problems.push(
                path,
                "contains characters not allowed in a header value (value not shown)",
            );
            None
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn type_names() -> String {
    TYPES
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}
