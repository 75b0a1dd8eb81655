//! The field checks every credential type uses (required text, URLs, the Entra app, the
//! audience, the certificate file, header names and values), each recording its problem
//! under the credential's key path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use rustls::pki_types::CertificateDer;

use super::read_client_certificate;
use crate::config::error::{Problems, join};
use crate::config::raw::RawCredential;
use crate::config::{Audience, EntraApp};
use crate::secret::Secret;

/// Per-credential checks that record problems under the credential's path.
pub(super) struct Check<'a> {
    pub(super) path: &'a str,
    pub(super) problems: &'a mut Problems,
    /// The audience a route preset gives when the credential names none.
    pub(super) default_audience: Option<&'a Audience>,
}

impl Check<'_> {
    pub(super) fn required(&mut self, key: &str, value: Option<String>) -> Option<String> {
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

    pub(super) fn optional_text(&mut self, key: &str, value: Option<String>) -> Option<String> {
        match value {
            Some(v) if v.trim().is_empty() => {
                self.problems
                    .push(join(self.path, key), "is empty; omit the key instead");
                None
            }
            other => other,
        }
    }

    pub(super) fn secret(&mut self, key: &str, value: Option<String>) -> Option<Secret> {
        self.required(key, value).map(Secret::new)
    }

    pub(super) fn url(&mut self, key: &str, text: &str) -> Option<String> {
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

    pub(super) fn entra_app(&mut self, raw: &RawCredential) -> Option<EntraApp> {
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
    pub(super) fn audience(&mut self, raw: &RawCredential) -> Option<Audience> {
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
    pub(super) fn certificate(
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
}

pub(super) fn header_name(
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
pub(super) fn secret_header_value(
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
