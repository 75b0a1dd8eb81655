//! Route presets: one line (`preset = "arm"`) that fills the defaults of a known Azure
//! service. Every key the route sets explicitly wins over the preset's.

use std::collections::{BTreeMap, HashMap};

use super::Audience;
use super::error::{Problems, join};
use super::raw::RawRoute;
use super::retry::RawRetry;

/// The services azgate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    VideoIndexer,
    Arm,
    MediaServicesV2,
    DevCenter,
}

pub const NAMES: &str = "video_indexer, arm, media_services_v2, devcenter";

impl Preset {
    pub const ALL: [Preset; 4] = [
        Preset::VideoIndexer,
        Preset::Arm,
        Preset::MediaServicesV2,
        Preset::DevCenter,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "video_indexer" => Some(Preset::VideoIndexer),
            "arm" => Some(Preset::Arm),
            "media_services_v2" => Some(Preset::MediaServicesV2),
            "devcenter" => Some(Preset::DevCenter),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::VideoIndexer => "video_indexer",
            Preset::Arm => "arm",
            Preset::MediaServicesV2 => "media_services_v2",
            Preset::DevCenter => "devcenter",
        }
    }

    /// The token audience a credential used by this preset gets when it names none.
    pub fn audience(self) -> Option<Audience> {
        match self {
            Preset::Arm => Some(Audience::Scope(
                "https://management.azure.com/.default".into(),
            )),
            Preset::MediaServicesV2 => {
                Some(Audience::Resource("https://rest.media.azure.net".into()))
            }
            Preset::DevCenter => Some(Audience::Scope(
                "https://devcenter.azure.com/.default".into(),
            )),
            Preset::VideoIndexer => None,
        }
    }

    /// Fills the route's unset keys. `path` names the route in problems. Returns the key
    /// the user wrote that the upstream URL was built from (`endpoint`, `account`), so a
    /// problem with that URL names it, and not `upstream`, which the user never wrote.
    pub fn apply(
        self,
        raw: &mut RawRoute,
        path: &str,
        problems: &mut Problems,
    ) -> Option<&'static str> {
        let mut upstream_from = None;
        let only = |key: &str, allowed: &[Preset], value_set: bool, problems: &mut Problems| {
            if value_set && !allowed.contains(&self) {
                problems.push(
                    join(path, key),
                    format!("does not apply to preset \"{}\"", self.name()),
                );
            }
        };
        only(
            "account",
            &[Preset::MediaServicesV2],
            raw.account.is_some(),
            problems,
        );
        only(
            "region",
            &[Preset::MediaServicesV2],
            raw.region.is_some(),
            problems,
        );
        only(
            "endpoint",
            &[Preset::DevCenter],
            raw.endpoint.is_some(),
            problems,
        );
        // Their lists page by absolute links in the body (`nextLink`, `@odata.nextLink`)
        // and their long-running operations answer with status URLs in it: rewritten, so a
        // client's SDK keeps paging through azgate instead of walking out to the upstream.
        if matches!(self, Preset::Arm | Preset::DevCenter | Preset::VideoIndexer) {
            raw.rewrite_body_links.get_or_insert(true);
        }
        match self {
            Preset::VideoIndexer => {
                raw.upstream
                    .get_or_insert_with(|| "https://api.videoindexer.ai".into());
                // Uploads are limited per minute: Video Indexer's 429s ask for waits of
                // tens of seconds, which the default 30 s cap would hand back to the client.
                let retry = raw.retry.get_or_insert_with(RawRetry::default);
                retry.max_delay.get_or_insert_with(|| "70s".into());
                retry.max_attempts.get_or_insert(4);
                raw.max_body.get_or_insert_with(|| "4GiB".into());
                raw.timeout.get_or_insert_with(|| "300s".into());
            }
            Preset::Arm => {
                raw.upstream
                    .get_or_insert_with(|| "https://management.azure.com".into());
            }
            Preset::MediaServicesV2 => {
                match (&raw.account, &raw.region) {
                    (Some(account), Some(region)) => {
                        if raw.upstream.is_none() {
                            raw.upstream = Some(format!(
                                "https://{account}.restv2.{region}.media.azure.net/api"
                            ));
                            upstream_from = Some("account");
                        }
                    }
                    _ => problems.push(
                        path,
                        "preset \"media_services_v2\" needs `account` and `region` (as in https://{account}.restv2.{region}.media.azure.net/api)",
                    ),
                }
                let headers = raw.set_headers.get_or_insert_with(BTreeMap::new);
                for (name, value) in [
                    ("x-ms-version", "2.19"),
                    ("DataServiceVersion", "3.0"),
                    ("MaxDataServiceVersion", "3.0"),
                    ("Accept", "application/json"),
                ] {
                    if !headers.keys().any(|k| k.eq_ignore_ascii_case(name)) {
                        headers.insert(name.to_string(), value.to_string());
                    }
                }
            }
            Preset::DevCenter => {
                match &raw.endpoint {
                    Some(endpoint) => {
                        if raw.upstream.is_none() {
                            // With or without its scheme: a variable holding the host
                            // name and one holding the whole URL both work.
                            raw.upstream = Some(if endpoint.contains("://") {
                                endpoint.clone()
                            } else {
                                format!("https://{endpoint}")
                            });
                            upstream_from = Some("endpoint");
                        }
                    }
                    None => problems.push(
                        path,
                        "preset \"devcenter\" needs `endpoint` (https://{tenantId}-{devCenterName}.{region}.devcenter.azure.com)",
                    ),
                }
                let query = raw.set_query.get_or_insert_with(BTreeMap::new);
                query
                    .entry("api-version".into())
                    .or_insert_with(|| "2024-02-01".into());
            }
        }
        upstream_from
    }
}

/// Audiences that presets give to the credentials their routes use, read from the raw
/// route tables before credentials are validated. A credential used by presets that want
/// different audiences is a problem.
pub fn credential_audiences(
    routes: &[toml::Value],
    problems: &mut Problems,
) -> HashMap<String, Audience> {
    let mut out: HashMap<String, Audience> = HashMap::new();
    for (i, route) in routes.iter().enumerate() {
        let (Some(preset), Some(credential)) = (
            route
                .get("preset")
                .and_then(|v| v.as_str())
                .and_then(Preset::parse),
            route.get("credential").and_then(|v| v.as_str()),
        ) else {
            continue;
        };
        let Some(audience) = preset.audience() else {
            continue;
        };
        match out.get(credential) {
            Some(existing) if *existing != audience => problems.push(
                format!("routes[{i}].credential"),
                format!(
                    "credential \"{credential}\" is used by presets that need different token audiences; give it an explicit scope or use two credentials"
                ),
            ),
            _ => {
                out.insert(credential.to_string(), audience);
            }
        }
    }
    out
}
