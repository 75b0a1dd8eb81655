//! One credential out of a config file, for `azgate token NAME`: only the table of `NAME`
//! (and of the ARM credential a Video Indexer credential buys its token with) is
//! interpolated and validated, so a variable that is unset for an unrelated credential or
//! route does not stop a script that needs one token. Routes only lend the token audience
//! their presets give the credential, as they do for the whole file.

use std::collections::BTreeMap;
use std::path::Path;

use super::error::{Problems, join};
use super::load::toml_document;
use super::{ConfigError, CredentialConfig, credentials, interpolate, presets};

/// The credentials `azgate token NAME` needs, validated.
#[derive(Debug)]
pub struct CredentialSubset {
    /// `NAME` and what it depends on; empty when the file has no credential `NAME`.
    pub credentials: BTreeMap<String, CredentialConfig>,
    /// Every credential name the file declares, for "known: …" messages.
    pub known: Vec<String>,
}

/// Parses `text` as `parse` does, but validates only the credential `name` and its
/// dependency. A problem in those (or a file that is not TOML) is an error; problems
/// anywhere else are not looked at.
pub fn parse_credential(
    text: &str,
    file: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    name: &str,
) -> Result<CredentialSubset, ConfigError> {
    let root = toml_document(text, file)?;
    let mut problems = Problems::default();
    let declared = root
        .get("credentials")
        .and_then(toml::Value::as_table)
        .cloned()
        .unwrap_or_default();
    let known: Vec<String> = declared.keys().cloned().collect();
    if !declared.contains_key(name) {
        return Ok(CredentialSubset {
            credentials: BTreeMap::new(),
            known,
        });
    }
    let needed = closure(&declared, name, env);
    let mut tables = toml::Table::new();
    for needed_name in &needed {
        if let Some(value) = declared.get(needed_name) {
            let mut value = value.clone();
            let path = join("credentials", needed_name);
            interpolate::interpolate_tree(&mut value, &path, env, &mut problems);
            tables.insert(needed_name.clone(), value);
        }
    }
    let routes = preset_routes(&root, &needed, env);
    let audiences = presets::credential_audiences(&routes, &mut problems);
    let validated = credentials::validate_all(tables, &audiences, base_dir, &mut problems);
    if !problems.is_empty() {
        return Err(problems.into_error(file));
    }
    Ok(CredentialSubset {
        credentials: validated.into_iter().collect(),
        known,
    })
}

/// `name`, and the `arm` credential when `name` is a Video Indexer credential that names one.
fn closure(
    declared: &toml::Table,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut out = vec![name.to_string()];
    let table = declared.get(name).and_then(toml::Value::as_table);
    let is_video_indexer = table
        .and_then(|t| t.get("type"))
        .and_then(toml::Value::as_str)
        == Some("video_indexer");
    let arm = table
        .and_then(|t| t.get("arm"))
        .and_then(toml::Value::as_str)
        .and_then(|arm| interpolate::interpolate(arm, env).ok());
    if is_video_indexer
        && let Some(arm) = arm
        && arm != name
        && declared.contains_key(&arm)
    {
        out.push(arm);
    }
    out
}

/// The routes reduced to their `preset` and `credential` keys, for the routes that use a
/// needed credential (the others become empty tables, so indexes in messages stay right).
fn preset_routes(
    root: &toml::Value,
    needed: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<toml::Value> {
    let Some(routes) = root.get("routes").and_then(toml::Value::as_array) else {
        return Vec::new();
    };
    let expand = |route: &toml::Value, key: &str| {
        route
            .get(key)
            .and_then(toml::Value::as_str)
            .and_then(|text| interpolate::interpolate(text, env).ok())
    };
    routes
        .iter()
        .map(|route| {
            let mut reduced = toml::Table::new();
            if let (Some(credential), Some(preset)) =
                (expand(route, "credential"), expand(route, "preset"))
                && needed.contains(&credential)
            {
                reduced.insert("credential".into(), toml::Value::String(credential));
                reduced.insert("preset".into(), toml::Value::String(preset));
            }
            toml::Value::Table(reduced)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [server]
        listen = "${LISTEN_ADDR}"
        [credentials.arm]
        type = "default"
        [credentials.vi]
        type = "video_indexer"
        location = "trial"
        account_id = "acc"
        arm = "arm"
        subscription_id = "sub"
        resource_group = "rg"
        account_name = "vi1"
        [credentials.other]
        type = "client_secret"
        tenant = "t"
        client_id = "c"
        client_secret = "${OTHER_SECRET}"
        scope = "https://x/.default"
        [credentials.broken]
        type = "subscription_key"
        key = "${BROKEN_KEY}"
        [[routes]]
        prefix = "/arm"
        preset = "arm"
        credential = "arm"
        api_keys = ["${ROUTE_KEY}"]
    "#;

    fn parse(name: &str) -> Result<CredentialSubset, ConfigError> {
        parse_credential(FILE, "f.toml", Path::new("."), &|_| None, name)
    }

    #[test]
    fn only_the_named_credential_and_its_arm_are_validated() {
        let subset = parse("vi").unwrap();
        let names: Vec<&str> = subset.credentials.keys().map(String::as_str).collect();
        assert_eq!(names, ["arm", "vi"]);
        assert_eq!(subset.known, ["arm", "broken", "other", "vi"]);
        // The route's preset still gives the `default` credential its ARM scope.
        let audience = subset.credentials["arm"].audience().unwrap();
        assert_eq!(audience.scope(), "https://management.azure.com/.default");
    }

    #[test]
    fn a_problem_in_the_named_credential_is_still_an_error() {
        let err = parse("broken").unwrap_err().to_string();
        assert!(
            err.contains("credentials.broken.key: environment variable BROKEN_KEY is not set"),
            "{err}"
        );
        assert!(
            !err.contains("OTHER_SECRET") && !err.contains("LISTEN_ADDR"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_name_yields_no_credential_and_the_known_ones() {
        let subset = parse("nope").unwrap();
        assert!(subset.credentials.is_empty());
        assert_eq!(subset.known.len(), 4);
        assert!(parse_credential("not = [toml", "f.toml", Path::new("."), &|_| None, "x").is_err());
    }
}
