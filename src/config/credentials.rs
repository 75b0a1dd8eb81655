//! `[credentials.NAME]` tables -> `CredentialConfig`, checked against the keys of their
//! `type`. Secret values are never echoed in messages.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::error::{Problems, join};
use super::raw::{self, RawCredential};
use super::{
    Audience, AzureCliConfig, ClientCertificateConfig, ClientSecretConfig, CredentialConfig,
    DefaultConfig, EntraApp, ManagedIdentityConfig, VideoIndexerAuth, VideoIndexerConfig,
    VideoIndexerInject, WorkloadIdentityConfig,
};
use crate::secret::Secret;

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
const DEFAULT_VI_API_URL: &str = "https://api.videoindexer.ai";
const DEFAULT_MANAGEMENT_URL: &str = "https://management.azure.com";

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

/// A Video Indexer credential's `arm` must name an Entra token credential.
fn check_video_indexer_references(
    all: &[(String, CredentialConfig)],
    declared: &[(String, Option<String>)],
    problems: &mut Problems,
) {
    for (name, config) in all {
        let CredentialConfig::VideoIndexer(vi) = config else {
            continue;
        };
        let VideoIndexerAuth::Arm { arm, .. } = &vi.auth else {
            continue;
        };
        let path = join(&join("credentials", name), "arm");
        match declared.iter().find(|(other, _)| other == arm) {
            Some((_, Some(kind))) if !ENTRA_TYPES.contains(&kind.as_str()) => {
                // An unknown type is reported at the credential itself.
                if TYPES.iter().any(|(t, _)| t == kind) {
                    problems.push(
                        path,
                        format!(
                            "credential \"{arm}\" is of type \"{kind}\"; `arm` needs an Entra ID token \
                             credential ({})",
                            ENTRA_TYPES.join(", ")
                        ),
                    );
                }
            }
            Some(_) => {}
            None => {
                let known: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
                let mut message =
                    format!("unknown credential \"{arm}\"; known: {}", known.join(", "));
                if let Some(near) = super::error::did_you_mean(arm, known) {
                    message.push_str(&format!("; did you mean \"{near}\"?"));
                }
                problems.push(path, message);
            }
        }
    }
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

/// Per-credential checks that record problems under the credential's path.
struct Check<'a> {
    path: &'a str,
    problems: &'a mut Problems,
    /// The audience a route preset gives when the credential names none.
    default_audience: Option<&'a Audience>,
}

impl Check<'_> {
    fn required(&mut self, key: &str, value: Option<String>) -> Option<String> {
        match value {
            Some(v) if !v.trim().is_empty() => Some(v),
            Some(_) => {
                self.problems.push(join(self.path, key), "is empty");
                None
            }
            None => {
                self.problems.missing(join(self.path, key), "missing key");
                None
            }
        }
    }

    fn optional_text(&mut self, key: &str, value: Option<String>) -> Option<String> {
        match value {
            Some(v) if v.trim().is_empty() => {
                self.problems
                    .push(join(self.path, key), "is empty; omit the key instead");
                None
            }
            other => other,
        }
    }

    fn secret(&mut self, key: &str, value: Option<String>) -> Option<Secret> {
        self.required(key, value).map(Secret::new)
    }

    fn url(&mut self, key: &str, text: &str) -> Option<String> {
        match text.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.authority().is_some() =>
            {
                Some(text.trim_end_matches('/').to_string())
            }
            _ => {
                self.problems.push(
                    join(self.path, key),
                    format!("\"{text}\" is not an absolute http(s) URL"),
                );
                None
            }
        }
    }

    fn entra_app(&mut self, raw: &RawCredential) -> Option<EntraApp> {
        let tenant = self.required("tenant", raw.tenant.clone());
        let client_id = self.required("client_id", raw.client_id.clone());
        let authority = raw
            .authority
            .as_deref()
            .and_then(|a| self.url("authority", a));
        let token_url = raw
            .token_url
            .as_deref()
            .and_then(|u| self.url("token_url", u));
        Some(EntraApp {
            tenant: tenant?,
            client_id: client_id?,
            authority,
            token_url,
        })
    }

    /// Exactly one of `scope` (v2) and `resource` (v1).
    fn audience(&mut self, raw: &RawCredential) -> Option<Audience> {
        match (&raw.scope, &raw.resource) {
            (Some(scope), None) if !scope.trim().is_empty() => Some(Audience::Scope(scope.clone())),
            (None, Some(resource)) if !resource.trim().is_empty() => {
                Some(Audience::Resource(resource.clone()))
            }
            (Some(_), Some(_)) => {
                self.problems.push(
                    self.path,
                    "set either `scope` (v2, e.g. \"https://management.azure.com/.default\") or `resource` (v1), not both",
                );
                None
            }
            (Some(_), None) | (None, Some(_)) => {
                self.problems
                    .push(self.path, "`scope` / `resource` is empty");
                None
            }
            (None, None) => match self.default_audience {
                Some(audience) => Some(audience.clone()),
                None => {
                    self.problems.push(
                        self.path,
                        "missing `scope` (e.g. \"https://management.azure.com/.default\") or `resource`",
                    );
                    None
                }
            },
        }
    }

    #[allow(clippy::type_complexity)]
    fn certificate(
        &mut self,
        file: Option<&str>,
        base_dir: &Path,
    ) -> Option<(PathBuf, Arc<Vec<CertificateDer<'static>>>, Secret)> {
        let key_path = join(self.path, "certificate");
        let Some(file) = file else {
            self.problems.missing(
                key_path,
                "missing key (a PEM file with the certificate and its private key)",
            );
            return None;
        };
        let path = base_dir.join(file);
        match read_client_certificate(&path) {
            Ok((chain, key_pem)) => Some((path, chain, key_pem)),
            Err(message) => {
                self.problems.push(key_path, message);
                None
            }
        }
    }

    fn video_indexer(&mut self, raw: RawCredential) -> Option<VideoIndexerConfig> {
        let location = self.required("location", raw.location);
        let account_id = self.required("account_id", raw.account_id);
        let inject = match raw.inject.as_deref() {
            None | Some("query") => VideoIndexerInject::Query,
            Some("header") => VideoIndexerInject::Header,
            Some(other) => {
                self.problems.push(
                    join(self.path, "inject"),
                    format!("unknown value \"{other}\"; expected \"query\" or \"header\""),
                );
                VideoIndexerInject::Query
            }
        };
        let api_url = match raw.api_url.as_deref() {
            Some(url) => self.url("api_url", url),
            None => Some(DEFAULT_VI_API_URL.to_string()),
        };
        let management_url = match raw.management_url.as_deref() {
            Some(url) => self.url("management_url", url),
            None => Some(DEFAULT_MANAGEMENT_URL.to_string()),
        };
        let auth = match (raw.subscription_key, raw.arm) {
            (Some(_), Some(_)) => {
                self.problems.push(
                    self.path,
                    "set either `subscription_key` (classic account) or `arm` (ARM-based account), not both",
                );
                None
            }
            (Some(key), None) => {
                if raw.permission.is_some() {
                    self.problems.push(
                        join(self.path, "permission"),
                        "applies to ARM-based accounts; classic accounts use allow_edit",
                    );
                }
                for (key_name, present) in [
                    ("subscription_id", raw.subscription_id.is_some()),
                    ("resource_group", raw.resource_group.is_some()),
                    ("account_name", raw.account_name.is_some()),
                ] {
                    if present {
                        self.problems.push(
                            join(self.path, key_name),
                            "applies to ARM-based accounts (with `arm`)",
                        );
                    }
                }
                self.secret("subscription_key", Some(key))
                    .map(|subscription_key| VideoIndexerAuth::Classic {
                        subscription_key,
                        allow_edit: raw.allow_edit.unwrap_or(false),
                    })
            }
            (None, Some(arm)) => {
                if raw.allow_edit.is_some() {
                    self.problems.push(
                        join(self.path, "allow_edit"),
                        "applies to classic accounts; ARM-based accounts use permission",
                    );
                }
                let subscription_id = self.required("subscription_id", raw.subscription_id);
                let resource_group = self.required("resource_group", raw.resource_group);
                let account_name = self.required("account_name", raw.account_name);
                let permission = match raw.permission.as_deref() {
                    None | Some("Reader") => Some("Reader".to_string()),
                    Some("Contributor") => Some("Contributor".to_string()),
                    Some(other) => {
                        self.problems.push(
                            join(self.path, "permission"),
                            format!(
                                "unknown permission \"{other}\"; expected \"Reader\" or \"Contributor\""
                            ),
                        );
                        None
                    }
                };
                Some(VideoIndexerAuth::Arm {
                    arm,
                    subscription_id: subscription_id?,
                    resource_group: resource_group?,
                    account_name: account_name?,
                    permission: permission?,
                })
            }
            (None, None) => {
                self.problems.push(
                    self.path,
                    "missing `subscription_key` (classic account) or `arm` (ARM-based account)",
                );
                None
            }
        };
        Some(VideoIndexerConfig {
            location: location?,
            account_id: account_id?,
            auth: auth?,
            inject,
            api_url: api_url?,
            management_url: management_url?,
        })
    }
}

fn header_name(
    value: Option<&str>,
    default: Option<&str>,
    path: &str,
    problems: &mut Problems,
) -> Option<HeaderName> {
    let Some(text) = value.or(default) else {
        problems.missing(path, "missing key");
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
        problems.missing(path, "missing key");
        return None;
    };
    if text.is_empty() {
        problems.push(path, "is empty");
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

/// Reads a PEM file holding a client certificate (then its chain) and the private key.
/// Also used for `AZURE_CLIENT_CERTIFICATE_PATH` by the `default` credential.
pub fn read_client_certificate(
    path: &Path,
) -> Result<(Arc<Vec<CertificateDer<'static>>>, Secret), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("\"{}\" is not valid PEM: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("\"{}\" holds no CERTIFICATE block", path.display()));
    }
    if PrivateKeyDer::from_pem_slice(text.as_bytes()).is_err() {
        return Err(format!(
            "\"{}\" holds no private key (PKCS#1, SEC1 or PKCS#8 PEM block)",
            path.display()
        ));
    }
    Ok((Arc::new(chain), Secret::new(text)))
}
