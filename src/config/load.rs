//! Where a config comes from (`-c`, `$AZGATE_CONFIG`, `./proxy.toml`, or the built-in
//! default) and `parse`: TOML text -> interpolation -> validation -> `Config`.

use std::path::{Path, PathBuf};

use super::{
    Config, ConfigError, CredentialSubset, EMBEDDED_DEFAULT, Problem, error, interpolate,
    parse_credential, validate,
};

/// Where `serve` and `check` read their config from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Embedded,
}

impl ConfigSource {
    /// `-c FILE`, else `$AZGATE_CONFIG`, else `./proxy.toml` when present, else the
    /// embedded default.
    pub fn resolve(cli: Option<PathBuf>) -> Self {
        if let Some(path) = cli {
            return ConfigSource::File(path);
        }
        if let Some(path) = std::env::var_os("AZGATE_CONFIG").filter(|p| !p.is_empty()) {
            return ConfigSource::File(PathBuf::from(path));
        }
        let local = PathBuf::from("proxy.toml");
        if local.is_file() {
            return ConfigSource::File(local);
        }
        ConfigSource::Embedded
    }

    /// The name used in messages.
    pub fn display_name(&self) -> String {
        match self {
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::Embedded => "<embedded default>".to_string(),
        }
    }

    /// Reads and validates the config, with variables from the process environment.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        let (text, base_dir) = self.read()?;
        parse(&text, &self.display_name(), &base_dir, &env)
    }

    /// Reads and validates only the credential `name` and what it depends on, for
    /// `azgate token NAME`: problems elsewhere in the file do not stop it.
    pub fn load_credential(&self, name: &str) -> Result<CredentialSubset, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        let (text, base_dir) = self.read()?;
        parse_credential(&text, &self.display_name(), &base_dir, &env, name)
    }

    /// The config text and the directory relative paths in it start from.
    fn read(&self) -> Result<(String, PathBuf), ConfigError> {
        match self {
            ConfigSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    file: self.display_name(),
                    problems: vec![Problem {
                        path: String::new(),
                        message: format!("cannot read the config file: {e}"),
                    }],
                })?;
                let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
                Ok((text, base_dir))
            }
            ConfigSource::Embedded => Ok((EMBEDDED_DEFAULT.to_string(), PathBuf::from("."))),
        }
    }
}

/// Parses and validates config text. `file` names it in messages; relative paths in it
/// (such as `ca_file`) are resolved against `base_dir`; `env` supplies `${VAR}` values.
pub fn parse(
    text: &str,
    file: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut problems = error::Problems::default();
    let mut root = toml_document(text, file)?;
    interpolate::interpolate_tree(&mut root, "", env, &mut problems);
    let config = validate::validate(root, file, base_dir, &mut problems);
    match config {
        Some(mut config) if problems.is_empty() => {
            config.warnings = problems.take_warnings();
            Ok(config)
        }
        _ => Err(problems.into_error(file)),
    }
}

/// The TOML document, or the syntax error with its line and column.
pub(super) fn toml_document(text: &str, file: &str) -> Result<toml::Value, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let mut problems = error::Problems::default();
        let at = e.span().map(|span| line_and_column(text, span.start));
        let message = e.message().trim_end();
        match at {
            Some((line, column)) => problems.push(
                "",
                format!("not valid TOML at line {line}, column {column}: {message}"),
            ),
            None => problems.push("", format!("not valid TOML: {message}")),
        }
        problems.into_error(file)
    })
}

/// 1-based line and column of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
