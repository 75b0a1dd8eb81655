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

/// `[telemetry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTelemetry {
    pub otlp_endpoint: Option<String>,
    pub otlp_headers: Option<BTreeMap<String, String>>,
    pub service_name: Option<String>,
    pub sample_ratio: Option<f64>,
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
    pub forwarded_headers: Option<bool>,
    pub scoped_tokens: Option<bool>,
    pub vend: Option<String>,
    pub max_entries: Option<u64>,
    pub max_concurrent_fetches: Option<usize>,
    pub embed_url: Option<String>,
    pub cors: Option<RawCors>,
    pub throttle: Option<RawThrottle>,
}

/// `[routes.throttle]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawThrottle {
    pub hold: Option<bool>,
    pub max_queue: Option<usize>,
    pub rate: Option<String>,
    pub burst: Option<u32>,
    pub min_remaining: Option<u64>,
    pub learn: Option<bool>,
}

/// `[routes.cors]` of a vending route.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCors {
    pub allow_origins: Option<Vec<String>>,
}

/// Deserialises one section, recording unknown keys (with the valid keys of their table,
/// read from the serde model itself) and type errors under `path`.
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
    for segments in unknown {
        let Some((key, parents)) = segments.split_last() else {
            continue;
        };
        let parent = parents.iter().fold(path.to_string(), |p, s| join(&p, s));
        let valid = fields_at::<T>(parents).unwrap_or(&[]);
        problems.unknown_key(&parent, key, valid);
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

/// A serde_ignored path as key segments (`tls`, `cert`; `methods`, `[0]`), skipping the
/// `Option` layers serde inserts.
fn ignored_path(path: &serde_ignored::Path<'_>) -> Vec<String> {
    use serde_ignored::Path;
    match path {
        Path::Root => Vec::new(),
        Path::Seq { parent, index } => {
            let mut out = ignored_path(parent);
            out.push(format!("[{index}]"));
            out
        }
        Path::Map { parent, key } => {
            let mut out = ignored_path(parent);
            out.push(key.clone());
            out
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

/// The field names of the struct that `T` deserialises at `path` (`[]` for `T` itself,
/// `["retry"]` for a route's `[routes.retry]`), asked of the derived `Deserialize` impls:
/// the valid keys come from the model, not from a second list kept by hand.
pub fn fields_at<T: DeserializeOwned>(path: &[String]) -> Option<&'static [&'static str]> {
    let mut found = None;
    let _ = T::deserialize(FieldProbe {
        path,
        found: &mut found,
    });
    found
}

/// A deserializer that walks `path` down through structs and options and records the
/// field list of the struct it ends at; every other request fails, ending the walk.
struct FieldProbe<'a> {
    path: &'a [String],
    found: &'a mut Option<&'static [&'static str]>,
}

fn stop() -> serde::de::value::Error {
    serde::de::Error::custom("field probe")
}

impl<'de> serde::Deserializer<'de> for FieldProbe<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(stop())
    }

    fn deserialize_option<V: serde::de::Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.path.split_first() {
            None => {
                *self.found = Some(fields);
                Err(stop())
            }
            Some((key, rest)) => visitor.visit_map(OneEntry {
                key: Some(key),
                value: Some(FieldProbe {
                    path: rest,
                    found: self.found,
                }),
            }),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// The map a `FieldProbe` shows a struct: one entry, the next key of the path.
struct OneEntry<'a> {
    key: Option<&'a String>,
    value: Option<FieldProbe<'a>>,
}

impl<'de> serde::de::MapAccess<'de> for OneEntry<'_> {
    type Error = serde::de::value::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        use serde::de::IntoDeserializer;
        match self.key.take() {
            Some(key) => seed.deserialize(key.as_str().into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        match self.value.take() {
            Some(probe) => seed.deserialize(probe),
            None => Err(stop()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_keys_come_from_the_model() {
        let route = fields_at::<RawRoute>(&[]).unwrap();
        assert!(route.contains(&"upstream") && route.contains(&"rewrite_body_links"));
        let retry = fields_at::<RawRoute>(&["retry".to_string()]).unwrap();
        assert!(retry.contains(&"max_attempts") && !retry.contains(&"upstream"));
        assert!(fields_at::<RawRoute>(&["set_headers".to_string()]).is_none());
        assert!(fields_at::<RawRoute>(&["nope".to_string()]).is_none());
        let credential = fields_at::<RawCredential>(&[]).unwrap();
        assert!(
            credential.contains(&"type"),
            "renamed fields by their TOML name"
        );
    }

    #[test]
    fn unknown_keys_get_a_suggestion_or_the_valid_keys() {
        let value: toml::Value = toml::from_str(
            "prefix = \"/a\"\nstrip_prefx = true\nzzz = 1\n[retry]\nmax_attemps = 3\n",
        )
        .unwrap();
        let mut problems = Problems::default();
        let route = section::<RawRoute>(value, "routes[0]", &mut problems);
        assert!(route.is_some());
        let text = problems.into_error("f").to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines
                .contains(&"f: routes[0].strip_prefx: unknown key; did you mean \"strip_prefix\"?"),
            "{text}"
        );
        assert!(
            lines.contains(
                &"f: routes[0].retry.max_attemps: unknown key; did you mean \"max_attempts\"?"
            ),
            "{text}"
        );
        assert!(
            lines.iter().any(|l| l
                .starts_with("f: routes[0].zzz: unknown key; valid keys here: prefix, upstream,")),
            "{text}"
        );
    }
}
