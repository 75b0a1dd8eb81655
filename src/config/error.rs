//! Config problems, collected rather than returned one at a time: a user fixing a file
//! wants to see every typo and dangling reference in one run. Warnings (a config that
//! works but probably not as meant) travel the same way and end up in `Config::warnings`.

use std::collections::{HashMap, HashSet};
use std::fmt;

/// One thing wrong (or doubtful) in the config, at one key path (`routes[2].credential`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one config file. Displayed as one line per problem:
/// `proxy.toml: routes[2].credential: unknown credential "vi2"; known: arm, vi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {p}", self.file)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Accumulates problems and warnings while the config is validated.
#[derive(Debug, Default)]
pub struct Problems {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    /// Values that came from `${VAR}`, by key path: a note naming the variable, added to
    /// any problem about that value (the value itself is never shown).
    origins: HashMap<String, String>,
    /// Key paths whose absence another problem already explains: a misspelt key stood in
    /// for them (`server.inbound.allow` for `alow`), or an unknown preset would have filled
    /// them. A "missing key" there has the same root cause and is not reported again.
    explained: HashSet<String>,
    /// Key paths whose `${VAR}` is not set: the unexpanded text that stays there is not a
    /// second problem (an "invalid address" after "variable not set").
    unset: HashSet<String>,
}

impl Problems {
    /// Records a problem. When the value at `path` came from an environment variable, the
    /// message names it.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if self.unset.contains(&path) {
            return;
        }
        let mut message = message.into();
        if let Some(origin) = self.origins.get(&path) {
            message.push_str(origin);
        }
        self.problems.push(Problem { path, message });
    }

    /// Records that the variable of the value at `path` is not set: the one problem there.
    pub(super) fn unset_variable(&mut self, path: &str, message: String) {
        self.push(path, message);
        self.unset.insert(path.to_string());
    }

    /// Records a required key that is absent — unless a misspelling of it was reported.
    pub fn missing(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if !self.explained.contains(&path) {
            self.push(path, message);
        }
    }

    /// Notes that a problem already reported explains a missing key at `path`.
    pub fn missing_is_explained(&mut self, path: String) {
        self.explained.insert(path);
    }

    /// Records an unknown key under `parent`, with the closest of `valid` as a "did you
    /// mean", or else the list of valid keys.
    pub fn unknown_key(&mut self, parent: &str, key: &str, valid: &[&str]) {
        let message = match did_you_mean(key, valid.iter().copied()) {
            Some(near) => {
                self.explained.insert(join(parent, near));
                format!("unknown key; did you mean \"{near}\"?")
            }
            None if valid.is_empty() => "unknown key".to_string(),
            None => format!("unknown key; valid keys here: {}", valid.join(", ")),
        };
        self.push(join(parent, key), message);
    }

    /// Records a warning: the config is valid, but something in it probably does not do
    /// what its author meant (`check` prints it, `serve` logs it at WARN).
    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Notes that the value at `path` came from environment variables (see `push`).
    pub(super) fn note_origin(&mut self, path: &str, note: String) {
        self.origins.insert(path.to_string(), note);
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// Problems recorded so far (to tell whether a step added any).
    pub fn len(&self) -> usize {
        self.problems.len()
    }

    pub fn take_warnings(&mut self) -> Vec<Problem> {
        std::mem::take(&mut self.warnings)
    }

    pub fn into_error(self, file: &str) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            problems: self.problems,
        }
    }
}

/// The candidate closest to `word` when it is close enough to be a likely typo
/// (case-insensitive Damerau–Levenshtein distance, allowing more edits for longer words).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let allowed = match lower.chars().count() {
        0..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// Joins a parent key path and a child key: `routes[0]` + `timeout` -> `routes[0].timeout`.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else if key.is_empty() {
        parent.to_string()
    } else if key.starts_with('[') {
        format!("{parent}{key}")
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses() {
        let keys = ["listen", "public_url", "allow", "api_keys", "type", "on"];
        let cases: &[(&str, Option<&str>)] = &[
            ("lisen", Some("listen")),
            ("Listen", Some("listen")),
            ("alow", Some("allow")),
            ("api_key", Some("api_keys")),
            ("typo", Some("type")),
            ("publicurl", Some("public_url")),
            ("tls", None),
            ("retries", None),
            ("o", Some("on")),
            ("", None),
        ];
        for (word, want) in cases {
            assert_eq!(did_you_mean(word, keys), *want, "{word}");
        }
    }

    #[test]
    fn a_misspelt_key_explains_the_missing_one() {
        let mut p = Problems::default();
        p.unknown_key(
            "credentials.arm",
            "client_secrt",
            &["client_secret", "tenant"],
        );
        p.missing("credentials.arm.client_secret", "missing key");
        p.missing("credentials.arm.tenant", "missing key");
        p.unknown_key("server", "zzz", &["listen", "tls"]);
        let text = p.into_error("f.toml").to_string();
        assert_eq!(
            text,
            "f.toml: credentials.arm.client_secrt: unknown key; did you mean \"client_secret\"?\n\
             f.toml: credentials.arm.tenant: missing key\n\
             f.toml: server.zzz: unknown key; valid keys here: listen, tls"
        );
    }
}
