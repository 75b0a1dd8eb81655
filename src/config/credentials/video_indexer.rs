//! `video_indexer` credentials: their own keys (classic or ARM-based account), and the
//! check that an `arm` reference names an Entra token credential.

use super::check::Check;
use super::{ENTRA_TYPES, TYPES};
use crate::config::error::{Problems, join};
use crate::config::raw::RawCredential;
use crate::config::{CredentialConfig, VideoIndexerAuth, VideoIndexerConfig, VideoIndexerInject};

const DEFAULT_VI_API_URL: &str = "https://api.videoindexer.ai";
const DEFAULT_MANAGEMENT_URL: &str = "https://management.azure.com";

/// A Video Indexer credential's `arm` must name an Entra token credential.
pub(super) fn check_video_indexer_references(
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
                if let Some(near) = crate::config::error::did_you_mean(arm, known) {
                    message.push_str(&format!("; did you mean \"{near}\"?"));
                }
                problems.push(path, message);
            }
        }
    }
}

impl Check<'_> {
    pub(super) fn video_indexer(&mut self, raw: RawCredential) -> Option<VideoIndexerConfig> {
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
