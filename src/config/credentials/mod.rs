//! `[credentials.NAME]` tables -> `CredentialConfig`, checked against the keys of their
//! `type`. Secret values are never echoed in messages.

mod certificate;
mod check;
mod video_indexer;

use std::collections::HashMap;
use std::path::Path;

use super::error::{Problems, join};
use super::raw::{self, RawCredential};
use super::{
    Audience, AzureCliConfig, ClientCertificateConfig, ClientSecretConfig, CredentialConfig,
    DefaultConfig, ManagedIdentityConfig, WorkloadIdentityConfig,
};
use check::{Check, header_name, secret_header_value};
use video_indexer::check_video_indexer_references;

pub use certificate::read_client_certificate;

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

/// The types that yield an Entra ID bearer token (see `CredentialConfig::is_entra_token`).
const ENTRA_TYPES: &[&str] = &[
    "client_secret",
    "client_certificate",
    "managed_identity",
    "workload_identity",
    "azure_cli",
    "default",
];

const DEFAULT_KEY_HEADER: &str = "ocp-apim-subscription-key";

pub fn validate_all(
    tables: toml::Table,
    default_audiences: &HashMap<String, Audience>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Vec<(String, CredentialConfig)> {
    // Declared names and their `type`, valid or not: a reference to a broken credential is
    // not a second problem (the credential's own problems say what is wrong).
    let declared: Vec<(String, Option<String>)> = tables
        .iter()
        .map(|(name, value)| {
            let kind = value
                .get("type")
                .and_then(|t| t.as_str())
                .map(str::to_owned);
            (name.clone(), kind)
        })
        .collect();
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
        let default_audience = default_audiences.get(&name);
        if let Some(credential) = validate_one(table, &path, default_audience, base_dir, problems) {
            out.push((name, credential));
        }
    }
    check_video_indexer_references(&out, &declared, problems);
    out
}

fn validate_one(
    mut table: toml::Table,
    path: &str,
    default_audience: Option<&Audience>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<CredentialConfig> {
    let kind = table
        .get("type")
        .and_then(|t| t.as_str())
        .map(str::to_owned);
    let type_keys = kind
        .as_deref()
        .and_then(|kind| TYPES.iter().find(|(name, _)| *name == kind))
        .map(|(_, keys)| *keys);
    // Keys no type knows are typos: suggested from the keys of this type (or of any type,
    // when the type is not known), and taken out so the model does not report them again.
    let unknown: Vec<String> = table
        .keys()
        .filter(|key| *key != "type" && !TYPES.iter().any(|(_, ks)| ks.contains(&key.as_str())))
        .cloned()
        .collect();
    for key in unknown {
        table.remove(&key);
        let mut valid: Vec<&str> = vec!["type"];
        match type_keys {
            Some(keys) => valid.extend_from_slice(keys),
            None => {
                for key in TYPES.iter().flat_map(|(_, keys)| keys.iter()) {
                    if !valid.contains(key) {
                        valid.push(key);
                    }
                }
            }
        }
        problems.unknown_key(path, &key, &valid);
    }
    let kind = match (kind, table.get("type")) {
        (Some(kind), _) => kind,
        (None, Some(_)) => {
            problems.push(join(path, "type"), "must be a string");
            return None;
        }
        (None, None) => {
            problems.missing(
                join(path, "type"),
                format!("missing key; expected one of: {}", type_names()),
            );
            return None;
        }
    };
    let Some(keys) = type_keys else {
        let mut message = format!("unknown type \"{kind}\"; expected one of: {}", type_names());
        if let Some(near) = super::error::did_you_mean(&kind, TYPES.iter().map(|(t, _)| *t)) {
            message = format!("unknown type \"{kind}\"; did you mean \"{near}\"?");
        }
        problems.push(join(path, "type"), message);
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
    let mut v = Check {
        path,
        problems,
        default_audience,
    };
    let config = match kind.as_str() {
        "static" => {
            let header = header_name(
                raw.header.as_deref(),
                None,
                &join(path, "header"),
                v.problems,
            );
            let value = secret_header_value(raw.value, &join(path, "value"), v.problems);
            CredentialConfig::Static {
                header: header?,
                value: value?,
            }
        }
        "subscription_key" => {
            let header = header_name(
                raw.header.as_deref(),
                Some(DEFAULT_KEY_HEADER),
                &join(path, "header"),
                v.problems,
            );
            let key = secret_header_value(raw.key, &join(path, "key"), v.problems);
            let secondary_key = match raw.secondary_key {
                Some(text) => Some(secret_header_value(
                    Some(text),
                    &join(path, "secondary_key"),
                    v.problems,
                )?),
                None => None,
            };
            CredentialConfig::SubscriptionKey {
                header: header?,
                key: key?,
                secondary_key,
            }
        }
        "client_secret" => {
            let app = v.entra_app(&raw);
            let secret = v.secret("client_secret", raw.client_secret.clone());
            let audience = v.audience(&raw);
            CredentialConfig::ClientSecret(ClientSecretConfig {
                app: app?,
                client_secret: secret?,
                audience: audience?,
            })
        }
        "client_certificate" => {
            let app = v.entra_app(&raw);
            let audience = v.audience(&raw);
            let bundle = v.certificate(raw.certificate.as_deref(), base_dir);
            let (certificate_path, chain, key_pem) = bundle?;
            CredentialConfig::ClientCertificate(ClientCertificateConfig {
                app: app?,
                audience: audience?,
                certificate_path,
                chain,
                key_pem,
                send_chain: raw.send_chain.unwrap_or(false),
            })
        }
        "managed_identity" => {
            let endpoint = raw.endpoint.as_deref().and_then(|e| v.url("endpoint", e));
            let client_id = v.optional_text("client_id", raw.client_id.clone());
            CredentialConfig::ManagedIdentity(ManagedIdentityConfig {
                audience: v.audience(&raw)?,
                client_id,
                endpoint,
            })
        }
        "workload_identity" => {
            let authority = raw.authority.as_deref().and_then(|a| v.url("authority", a));
            let tenant = v.optional_text("tenant", raw.tenant.clone());
            let client_id = v.optional_text("client_id", raw.client_id.clone());
            CredentialConfig::WorkloadIdentity(WorkloadIdentityConfig {
                audience: v.audience(&raw)?,
                tenant,
                client_id,
                token_file: raw.token_file.map(|f| base_dir.join(f)),
                authority,
            })
        }
        "azure_cli" => {
            let tenant = v.optional_text("tenant", raw.tenant.clone());
            let subscription = v.optional_text("subscription", raw.subscription.clone());
            CredentialConfig::AzureCli(AzureCliConfig {
                audience: v.audience(&raw)?,
                tenant,
                subscription,
            })
        }
        "default" => CredentialConfig::Default(DefaultConfig {
            audience: v.audience(&raw)?,
        }),
        "video_indexer" => CredentialConfig::VideoIndexer(v.video_indexer(raw)?),
        _ => return None,
    };
    Some(config)
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
