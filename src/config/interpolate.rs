//! `${NAME}` and `${NAME:-fallback}` in string values, replaced from the environment before
//! the file is validated. `$${` writes a literal `${`. Values taken from the environment are
//! not expanded again, and never appear in error messages (they are often secrets); a
//! problem found later in such a value names the variable instead (`is empty: environment
//! variable AZGATE_API_KEY is set but empty`).

use super::error::{Problems, join};

/// Replaces `${…}` in every string value of `value`, recording a problem for each
/// variable that is missing or malformed.
pub fn interpolate_tree(
    value: &mut toml::Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) {
    match value {
        toml::Value::String(s) => {
            let mut used = Vec::new();
            match expand(s, env, &mut used) {
                Ok(expanded) => {
                    if let Some(note) = origin_note(&used, expanded.trim().is_empty()) {
                        problems.note_origin(path, note);
                    }
                    *s = expanded;
                }
                Err(message) => problems.unset_variable(path, with_hint(message, s, path)),
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &format!("{path}[{i}]"), env, problems);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                interpolate_tree(item, &join(path, key), env, problems);
            }
        }
        _ => {}
    }
}

/// Keys that hold secrets: a default written into the file would be a secret in the file.
const SECRET_KEYS: &[&str] = &[
    "api_keys",
    "client_secret",
    "subscription_key",
    "secondary_key",
    "key",
    "value",
];

/// What to do about an unset variable: a default for ordinary values; for a secret, set
/// the variable (a default there would be a fixed secret written in the file).
fn with_hint(message: String, text: &str, path: &str) -> String {
    let Some(name) = message
        .strip_prefix("environment variable ")
        .and_then(|rest| rest.strip_suffix(" is not set"))
    else {
        return message;
    };
    let key = path.rsplit('.').next().unwrap_or(path);
    let key = key.split('[').next().unwrap_or(key);
    if SECRET_KEYS.contains(&key) {
        format!("{message} (it holds a secret: set it in azgate's environment)")
    } else if text.contains("${") {
        format!("{message} (write ${{{name}:-default}} to allow a default)")
    } else {
        message
    }
}

/// A variable a value was built from, and whether it was set but empty.
struct Used {
    name: String,
    empty: bool,
}

/// What a problem about a value built from `used` adds to its message: the variable that
/// is set but empty when the value came out empty, else where the value came from.
fn origin_note(used: &[Used], value_is_empty: bool) -> Option<String> {
    let variables = |names: Vec<&str>| match names.as_slice() {
        [one] => format!("environment variable {one}"),
        _ => format!("environment variables {}", names.join(", ")),
    };
    let empty: Vec<&str> = used
        .iter()
        .filter(|u| u.empty)
        .map(|u| u.name.as_str())
        .collect();
    if value_is_empty && !empty.is_empty() {
        let verb = if empty.len() == 1 { "is" } else { "are" };
        return Some(format!(": {} {verb} set but empty", variables(empty)));
    }
    let all: Vec<&str> = used.iter().map(|u| u.name.as_str()).collect();
    (!all.is_empty()).then(|| format!(" (the value comes from {})", variables(all)))
}

/// Expands one string, noting the variables it used in `used`.
/// One string with its `${…}` replaced (for reading a single key ahead of validation).
pub fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    expand(text, env, &mut Vec::new())
}

fn expand(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    used: &mut Vec<Used>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(literal) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = literal;
        } else if let Some(inner) = after.strip_prefix("${") {
            let end = inner.find('}').ok_or_else(|| {
                "unterminated \"${\"; write ${NAME} (or $${ for a literal)".to_string()
            })?;
            let expr = &inner[..end];
            let (name, fallback) = match expr.split_once(":-") {
                Some((name, fallback)) => (name, Some(fallback)),
                None => (expr, None),
            };
            if !is_variable_name(name) {
                return Err(format!(
                    "\"${{{expr}}}\" is not a valid variable reference; names use letters, digits and _"
                ));
            }
            match (env(name), fallback) {
                (Some(value), _) => {
                    used.push(Used {
                        name: name.to_string(),
                        empty: value.is_empty(),
                    });
                    out.push_str(&value);
                }
                (None, Some(fallback)) => out.push_str(fallback),
                (None, None) => {
                    return Err(format!("environment variable {name} is not set"));
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
        expand(text, env, &mut Vec::new())
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "TENANT" => Some("contoso".into()),
            "EMPTY" => Some(String::new()),
            "SELF" => Some("${TENANT}".into()),
            _ => None,
        }
    }

    #[test]
    fn table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("plain", Ok("plain")),
            ("${TENANT}", Ok("contoso")),
            ("a-${TENANT}-b", Ok("a-contoso-b")),
            ("${TENANT}${TENANT}", Ok("contosocontoso")),
            ("${MISSING:-dflt}", Ok("dflt")),
            ("${MISSING:-}", Ok("")),
            ("${TENANT:-dflt}", Ok("contoso")),
            ("${EMPTY:-dflt}", Ok("")),
            ("${SELF}", Ok("${TENANT}")),
            ("$${TENANT}", Ok("${TENANT}")),
            ("cost $5", Ok("cost $5")),
            ("$", Ok("$")),
            ("${MISSING}", Err("environment variable MISSING is not set")),
            ("${TENANT", Err("unterminated")),
            ("${1BAD}", Err("not a valid variable reference")),
            ("${}", Err("not a valid variable reference")),
        ];
        for (text, want) in cases {
            let got = interpolate(text, &env);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "{text}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{text}: {g}"),
                _ => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn tree_reports_every_missing_variable_with_its_path() {
        let mut value: toml::Value = toml::from_str(
            r#"
            [credentials.arm]
            client_secret = "${NOPE_1}"
            [[routes]]
            prefix = "${NOPE_2}"
            methods = ["${TENANT}"]
            "#,
        )
        .unwrap();
        let mut problems = Problems::default();
        interpolate_tree(&mut value, "", &env, &mut problems);
        let err = problems.into_error("f.toml").to_string();
        assert!(
            err.contains("credentials.arm.client_secret: environment variable NOPE_1"),
            "{err}"
        );
        assert!(
            err.contains("routes[0].prefix: environment variable NOPE_2"),
            "{err}"
        );
        assert_eq!(value["routes"][0]["methods"][0].as_str(), Some("contoso"));
    }

    #[test]
    fn problems_about_a_value_name_its_variable() {
        let mut value: toml::Value = toml::from_str(
            r#"
            key = "${EMPTY}"
            both = "${EMPTY}${TENANT}"
            fallback = "${MISSING:-x}"
            plain = ""
            url = "https://${TENANT}"
            "#,
        )
        .unwrap();
        let mut problems = Problems::default();
        interpolate_tree(&mut value, "", &env, &mut problems);
        for key in ["key", "both", "fallback", "plain", "url"] {
            problems.push(key, "is wrong");
        }
        let err = problems.into_error("f.toml").to_string();
        assert_eq!(
            err.lines().collect::<Vec<_>>(),
            [
                "f.toml: key: is wrong: environment variable EMPTY is set but empty",
                "f.toml: both: is wrong (the value comes from environment variables EMPTY, TENANT)",
                "f.toml: fallback: is wrong",
                "f.toml: plain: is wrong",
                "f.toml: url: is wrong (the value comes from environment variable TENANT)",
            ]
        );
        assert!(!err.contains("contoso"), "a value was shown: {err}");
    }
}
