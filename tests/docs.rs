//! The reference in `docs/` kept true by the code it describes. Each list is read from the
//! code, never kept by hand a second time:
//!
//! - config keys: the parser is asked, table by table, for the keys it accepts (an unknown
//!   key gets "valid keys here: …", read from the serde model and the credential types'
//!   key lists), and nested tables are found by feeding each key a table;
//! - TOML examples: every ```toml block of `docs/` and the README goes through
//!   `azgate check`;
//! - error codes: every `ProxyError` variant (the `match` below stops compiling when one is
//!   added) through `error::respond`, the one place errors become responses;
//! - metrics: the registry's own output after a run that gives every family a sample, and
//!   `/status.json` from the same run;
//! - the CLI: `azgate --help` and each sub-command's help.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use http::{Response, StatusCode};

use azgate::credentials::CredentialError;
use azgate::proxy::error::{ProxyError, respond};
use support::entra::MockEntra;
use support::tls::TlsFiles;
use support::{Azgate, MockUpstream, full};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn azgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_azgate"));
    cmd.env_remove("AZGATE_CONFIG").env_remove("RUST_LOG");
    cmd
}

// ---------------------------------------------------------------------------------------
// Markdown, as these docs write it
// ---------------------------------------------------------------------------------------

/// The contents of the `code spans` of a line.
fn code_spans(line: &str) -> Vec<String> {
    line.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// A heading's level and text, if `line` is one.
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.chars().take_while(|c| *c == '#').count();
    (level > 0 && line[level..].starts_with(' ')).then(|| (level, line[level..].trim()))
}

/// The cells of a table row.
fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_start_matches('|')
        .trim_end_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

/// Every markdown table of `text` whose first header cell is `first`: its rows (after the
/// separator), each with the section it sits in (the nearest heading above).
fn tables<'a>(text: &'a str, first: &str) -> Vec<(String, Vec<Vec<String>>)> {
    let lines: Vec<&'a str> = text.lines().collect();
    let mut out = Vec::new();
    let mut section = String::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some((_, title)) = heading(lines[i]) {
            section = title.to_string();
        }
        let is_header = lines[i].starts_with('|')
            && cells(lines[i])
                .first()
                .is_some_and(|c| c.eq_ignore_ascii_case(first));
        if is_header && lines.get(i + 1).is_some_and(|l| l.starts_with("|")) {
            let mut rows = Vec::new();
            i += 2;
            while i < lines.len() && lines[i].starts_with('|') {
                rows.push(cells(lines[i]));
                i += 1;
            }
            out.push((section.clone(), rows));
            continue;
        }
        i += 1;
    }
    out
}

/// The text of each `## ` section whose heading is `## \`{name}\``, by name.
fn sections_by_code(text: &str, level: usize) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some((l, title)) = heading(line)
            && l <= level
        {
            current = (l == level)
                .then(|| code_spans(title).into_iter().next())
                .flatten();
            if let Some(name) = &current {
                out.insert(name.clone(), String::new());
            }
            continue;
        }
        if let Some(name) = &current {
            let body = out.get_mut(name).unwrap();
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Config keys: docs/configuration.md against the parser
// ---------------------------------------------------------------------------------------

/// A key no table has, close to no key: the parser lists the valid keys instead of
/// suggesting one.
const PROBE: &str = "zz_docs_probe_zz";

fn config_problems(text: &str) -> Vec<String> {
    match azgate::config::parse(text, "probe.toml", Path::new("."), &|_| None) {
        Ok(_) => Vec::new(),
        Err(err) => err.problems.iter().map(|p| p.to_string()).collect(),
    }
}

/// The keys the parser says are valid at `at` (a key path) when `text` puts `PROBE` there.
fn valid_keys(text: &str, at: &str) -> Option<BTreeSet<String>> {
    let path = if at.is_empty() {
        PROBE.to_string()
    } else {
        format!("{at}.{PROBE}")
    };
    let prefix = format!("{path}: unknown key; valid keys here: ");
    config_problems(text).iter().find_map(|p| {
        p.strip_prefix(&prefix)
            .map(|list| list.split(", ").map(str::to_string).collect())
    })
}

/// One table of the file, as the parser is asked about it.
struct Place {
    /// Its name in the docs' headings: `server.tls`, `routes`, `credentials.NAME …`.
    name: String,
    /// TOML that opens it: `[server]`, `[[routes]]`, `[credentials.c]\ntype = "static"`.
    header: String,
    /// Its dotted name inside TOML headers: `server`, `routes`, `credentials.c`.
    toml: String,
    /// Its key path in the parser's messages: `server`, `routes[0]`, `credentials.c`.
    path: String,
}

/// The keys of `place`, and of every table nested in it (a key that takes a table is one
/// whose value, given `{ PROBE = 1 }`, gets "unknown key" one level down).
fn walk(place: &Place, out: &mut BTreeMap<String, BTreeSet<String>>) {
    let keys = valid_keys(&format!("{}\n{PROBE} = 1\n", place.header), &place.path)
        .unwrap_or_else(|| panic!("the parser lists no keys for {}", place.name));
    for key in &keys {
        let text = format!("{}\n{key} = {{ {PROBE} = 1 }}\n", place.header);
        let path = format!("{}.{key}", place.path);
        if valid_keys(&text, &path).is_some() {
            let toml = format!("{}.{key}", place.toml);
            walk(
                &Place {
                    name: format!("{}.{key}", place.name),
                    header: format!("{}\n[{toml}]", place.header),
                    toml,
                    path,
                },
                out,
            );
        }
    }
    out.insert(place.name.clone(), keys);
}

/// Every table the parser accepts, with its keys. A credential's keys depend on its
/// `type`: each type is its own table, `credentials.NAME type = "…"`.
fn accepted_keys() -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    let top = valid_keys(&format!("{PROBE} = 1\n"), "").expect("top-level keys");
    for key in top {
        if valid_keys(&format!("[{key}]\n{PROBE} = 1\n"), &key).is_some() {
            let place = Place {
                name: key.clone(),
                header: format!("[{key}]"),
                toml: key.clone(),
                path: key.clone(),
            };
            walk(&place, &mut out);
        } else if valid_keys(&format!("[[{key}]]\n{PROBE} = 1\n"), &format!("{key}[0]")).is_some() {
            let place = Place {
                name: key.clone(),
                header: format!("[[{key}]]"),
                toml: key.clone(),
                path: format!("{key}[0]"),
            };
            walk(&place, &mut out);
        } else {
            // A table of named tables, each with a `type`: `[credentials.NAME]`.
            let at = format!("{key}.c");
            let asked = format!("[{at}]\ntype = \"{PROBE}\"\n");
            let prefix = format!("{at}.type: unknown type \"{PROBE}\"; expected one of: ");
            let types: Vec<String> = config_problems(&asked)
                .iter()
                .find_map(|p| p.strip_prefix(&prefix).map(str::to_string))
                .unwrap_or_else(|| {
                    panic!("{key}: neither a table, an array of tables nor typed tables")
                })
                .split(", ")
                .map(str::to_string)
                .collect();
            out.insert(format!("{key}.NAME"), BTreeSet::from(["type".to_string()]));
            for kind in types {
                let place = Place {
                    name: format!("{key}.NAME type = \"{kind}\""),
                    header: format!("[{at}]\ntype = \"{kind}\""),
                    toml: at.clone(),
                    path: at.clone(),
                };
                walk(&place, &mut out);
                out.get_mut(&place.name).unwrap().remove("type");
            }
        }
    }
    out
}

/// The tables a heading names: `[server]`, `[[routes]]`, and under `[credentials.NAME]`
/// the per-type headings `type = "client_secret"`.
fn heading_tables(title: &str) -> Vec<String> {
    code_spans(title)
        .into_iter()
        .filter_map(|span| {
            if let Some(name) = span.strip_prefix("[[").and_then(|s| s.strip_suffix("]]")) {
                Some(name.to_string())
            } else if let Some(name) = span.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                Some(name.to_string())
            } else if span.starts_with("type = \"") {
                Some(format!("credentials.NAME {span}"))
            } else {
                None
            }
        })
        .collect()
}

/// The keys docs/configuration.md documents, by table: the first column of every table
/// whose header starts with `key`, under the headings that name tables. A heading without
/// a table name ends the tables of its level and above; deeper ones stay inside them.
fn documented_keys(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Vec<String> = Vec::new();
    let mut current_level = 0;
    let mut in_key_table = false;
    for line in text.lines() {
        if let Some((level, title)) = heading(line) {
            let named = heading_tables(title);
            if !named.is_empty() {
                for name in &named {
                    out.entry(name.clone()).or_default();
                }
                current = named;
                current_level = level;
            } else if level <= current_level {
                current.clear();
                current_level = 0;
            }
            in_key_table = false;
            continue;
        }
        if !line.starts_with('|') {
            in_key_table = false;
            continue;
        }
        let row = cells(line);
        if row.first().is_some_and(|c| c == "key") {
            in_key_table = true;
            continue;
        }
        if in_key_table && !row[0].starts_with("---") {
            for key in code_spans(&row[0]) {
                for table in &current {
                    out.entry(table.clone()).or_default().insert(key.clone());
                }
            }
        }
    }
    out
}

#[test]
fn every_config_key_is_documented_and_every_documented_key_is_accepted() {
    let accepted = accepted_keys();
    let documented = documented_keys(&read("docs/configuration.md"));
    assert!(accepted.contains_key("server.tls") && accepted.contains_key("routes.retry"));
    let mut wrong = Vec::new();
    for (table, keys) in &accepted {
        let Some(doc) = documented.get(table) else {
            wrong.push(format!("table {table} is not documented (keys: {keys:?})"));
            continue;
        };
        for key in keys.difference(doc) {
            wrong.push(format!(
                "{table}: key `{key}` is accepted but not documented"
            ));
        }
        for key in doc.difference(keys) {
            wrong.push(format!(
                "{table}: key `{key}` is documented but not accepted"
            ));
        }
    }
    for table in documented.keys() {
        if !accepted.contains_key(table) {
            wrong.push(format!(
                "table {table} is documented but the parser has none"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/configuration.md and the parser disagree:\n{}",
        wrong.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// TOML examples: through `azgate check`
// ---------------------------------------------------------------------------------------

/// Every ```toml block of `file`, with the line its fence is on.
fn toml_blocks(file: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut block: Option<(usize, String)> = None;
    for (i, line) in read(file).lines().enumerate() {
        let fence = line.trim_start();
        match &mut block {
            None if fence == "```toml" => block = Some((i + 1, String::new())),
            Some(_) if fence.starts_with("```") => out.extend(block.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    out
}

/// The files an example names, made for the run: one self-signed CA certificate and its
/// key serve as every certificate, chain, CA file and client certificate.
struct ExampleFiles {
    dir: tempfile::TempDir,
    n: usize,
    cert_pem: String,
    key_pem: String,
}

impl ExampleFiles {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Self {
            dir: tempfile::tempdir().unwrap(),
            n: 0,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn write(&mut self, contents: &str) -> String {
        self.n += 1;
        let path = self.dir.path().join(format!("file-{}.pem", self.n));
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }

    /// Points every file key of `value` at a file made for it.
    fn materialise(&mut self, value: &mut toml::Value) {
        match value {
            toml::Value::Table(table) => {
                let tls = table.contains_key("cert");
                for (key, item) in table.iter_mut() {
                    let contents = match key.as_str() {
                        "cert" | "client_ca" | "ca_file" => Some(self.cert_pem.clone()),
                        "key" if tls => Some(self.key_pem.clone()),
                        "certificate" => Some(format!("{}{}", self.cert_pem, self.key_pem)),
                        _ => None,
                    };
                    match contents {
                        Some(contents) if item.is_str() => {
                            *item = toml::Value::String(self.write(&contents));
                        }
                        _ => self.materialise(item),
                    }
                }
            }
            toml::Value::Array(items) => items.iter_mut().for_each(|i| self.materialise(i)),
            _ => {}
        }
    }
}

/// The credentials an example names without defining them (a route shown on its own),
/// added as the simplest credential of the kind the reference needs.
fn define_missing_credentials(doc: &mut toml::Table) {
    let mut needed: BTreeMap<String, bool> = BTreeMap::new(); // name -> needs video_indexer
    for route in doc
        .get("routes")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(name) = route.get("vend").and_then(|v| v.as_str()) {
            needed.insert(name.to_string(), true);
        }
        if let Some(name) = route.get("credential").and_then(|v| v.as_str()) {
            let vi = route.get("preset").and_then(|p| p.as_str()) == Some("video_indexer")
                || route.get("scoped_tokens").and_then(|s| s.as_bool()) == Some(true);
            *needed.entry(name.to_string()).or_default() |= vi;
        }
    }
    let credentials = doc
        .entry("credentials")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(credentials) = credentials.as_table_mut() else {
        return;
    };
    let arms: Vec<String> = credentials
        .values()
        .filter_map(|c| c.get("arm").and_then(|a| a.as_str()).map(str::to_string))
        .collect();
    for name in arms {
        needed.entry(name).or_default();
    }
    for (name, video_indexer) in needed {
        if credentials.contains_key(&name) {
            continue;
        }
        let text = if video_indexer {
            "type = \"video_indexer\"\nlocation = \"trial\"\n\
             account_id = \"00000000-0000-0000-0000-000000000000\"\n\
             subscription_key = \"placeholder-subscription-key\"\n"
        } else {
            "type = \"default\"\nscope = \"https://management.azure.com/.default\"\n"
        };
        credentials.insert(name, toml::Value::Table(toml::from_str(text).unwrap()));
    }
}

/// A route's sub-table shown on its own (`[routes.throttle]` without `[[routes]]`) is
/// checked inside the smallest route.
fn wrap_route_fragment(doc: &mut toml::Table) {
    if let Some(toml::Value::Table(parts)) = doc.get("routes") {
        let mut route = parts.clone();
        route
            .entry("prefix")
            .or_insert_with(|| toml::Value::String("/example".into()));
        route
            .entry("upstream")
            .or_insert_with(|| toml::Value::String("https://example.com".into()));
        doc.insert(
            "routes".into(),
            toml::Value::Array(vec![toml::Value::Table(route)]),
        );
    }
}

/// Checks one example: `<word>` placeholders become a word, the variables it names
/// without a default are set to placeholders, the files it names are made, and the
/// credentials it names without defining them are defined. `Err` is what `check` said.
fn check_example(text: &str, files: &mut ExampleFiles) -> Result<(), String> {
    let mut filled = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('<') {
        let (before, after) = rest.split_at(at);
        filled.push_str(before);
        match after[1..].find('>') {
            Some(end)
                if after[1..=end]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
            {
                filled.push_str("placeholder");
                rest = &after[end + 2..];
            }
            _ => {
                filled.push('<');
                rest = &after[1..];
            }
        }
    }
    filled.push_str(rest);
    let mut variables = BTreeMap::new();
    for part in filled.split("${").skip(1) {
        let name = part.split('}').next().unwrap_or_default();
        if !name.contains(":-") {
            let value = format!(
                "placeholder-{}",
                name.to_ascii_lowercase().replace('_', "-")
            );
            variables.insert(name.to_string(), value);
        }
    }
    let mut doc: toml::Value =
        toml::from_str(&filled).map_err(|e| format!("not valid TOML: {e}"))?;
    files.materialise(&mut doc);
    if let Some(table) = doc.as_table_mut() {
        wrap_route_fragment(table);
        define_missing_credentials(table);
    }
    let path = files.dir.path().join("example.toml");
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    let out = azgate()
        .env_clear()
        .envs(&variables)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn every_toml_example_passes_check() {
    let mut files = ExampleFiles::new();
    let mut sources = vec!["README.md".to_string()];
    for entry in std::fs::read_dir(repo("docs")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            sources.push(format!("docs/{name}"));
        }
    }
    let mut checked = 0;
    let mut failed = Vec::new();
    for source in &sources {
        for (line, text) in toml_blocks(source) {
            checked += 1;
            if let Err(why) = check_example(&text, &mut files) {
                failed.push(format!("{source}:{line}:\n{text}=> {why}"));
            }
        }
    }
    assert!(checked >= 20, "only {checked} examples found");
    assert!(
        failed.is_empty(),
        "{} of {checked} TOML examples fail `azgate check`:\n\n{}",
        failed.len(),
        failed.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Error codes: docs/errors.md against `ProxyError` and `respond`
// ---------------------------------------------------------------------------------------

/// Variants of `ProxyError`: the arms of `variant` below.
const VARIANTS: usize = 13;

/// Which variant `err` is. No wildcard arm: a new variant stops this compiling, until it is
/// given an arm here, an example in `every_error` and a row in docs/errors.md.
fn variant(err: &ProxyError) -> usize {
    match err {
        ProxyError::RouteNotFound { .. } => 0,
        ProxyError::MethodNotAllowed { .. } => 1,
        ProxyError::BadRequest(_) => 2,
        ProxyError::Unauthorized(_) => 3,
        ProxyError::Forbidden(_) => 4,
        ProxyError::PayloadTooLarge { .. } => 5,
        ProxyError::HeadersTooLarge { .. } => 6,
        ProxyError::RequestTimeout(_) => 7,
        ProxyError::CredentialUnavailable(_) => 8,
        ProxyError::TokenRefused { .. } => 9,
        ProxyError::Throttled { .. } => 10,
        ProxyError::UpstreamUnreachable { .. } => 11,
        ProxyError::UpstreamTimeout { .. } => 12,
    }
}

/// One error of each variant, with the status docs/errors.md gives it: the number, or
/// `4xx` where the status is the token service's own.
fn every_error() -> Vec<(ProxyError, String)> {
    let text = |s: &str| s.to_string();
    let errors = vec![
        ProxyError::RouteNotFound { path: text("/x") },
        ProxyError::MethodNotAllowed {
            method: text("POST"),
            route: text("/vi"),
            allowed: text("GET"),
        },
        ProxyError::BadRequest(text("bad")),
        ProxyError::Unauthorized(text("no key")),
        ProxyError::Forbidden(text("not here")),
        ProxyError::PayloadTooLarge { limit: 1 },
        ProxyError::HeadersTooLarge { size: 2, limit: 1 },
        ProxyError::RequestTimeout(text("stalled")),
        ProxyError::CredentialUnavailable(CredentialError {
            credential: text("arm"),
            reason: text("AADSTS7000215"),
        }),
        ProxyError::TokenRefused {
            status: StatusCode::NOT_FOUND,
            retry_after: None,
            message: text("not found"),
        },
        ProxyError::Throttled {
            route: text("/arm"),
            retry_after: Duration::from_secs(3),
            queue_full: false,
        },
        ProxyError::UpstreamUnreachable {
            upstream: text("u"),
            reason: text("refused"),
        },
        ProxyError::UpstreamTimeout {
            upstream: text("u"),
            after: Duration::from_secs(1),
        },
    ];
    let covered: BTreeSet<usize> = errors.iter().map(variant).collect();
    assert_eq!(
        covered,
        (0..VARIANTS).collect(),
        "every_error needs one example of each variant"
    );
    errors
        .into_iter()
        .map(|err| {
            let status = match err {
                ProxyError::TokenRefused { .. } => "4xx".to_string(),
                _ => err.status().as_u16().to_string(),
            };
            (err, status)
        })
        .collect()
}

#[test]
fn every_error_code_is_documented_with_its_status() {
    let doc = read("docs/errors.md");
    let rows: BTreeMap<String, String> = tables(&doc, "code")
        .into_iter()
        .flat_map(|(_, rows)| rows)
        .filter_map(|row| Some((code_spans(&row[0]).into_iter().next()?, row.get(1)?.clone())))
        .collect();
    let mut wrong = Vec::new();
    let mut codes = BTreeSet::new();
    for (err, status) in every_error() {
        let response = respond(&err, "request-1", None);
        let code = err.code();
        assert_eq!(response.headers()["x-azgate-error"], code);
        if status != "4xx" {
            assert_eq!(response.status().as_str(), status);
        }
        codes.insert(code.to_string());
        match rows.get(code) {
            None => wrong.push(format!("`{code}` ({status}) is not documented")),
            Some(documented) if documented != &status => wrong.push(format!(
                "`{code}`: documented as {documented}, the code answers {status}"
            )),
            Some(_) => {}
        }
    }
    for code in rows.keys() {
        if !codes.contains(code) {
            wrong.push(format!(
                "`{code}` is documented but azgate has no such error"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/errors.md and ProxyError disagree:\n{}",
        wrong.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Metrics and /status.json: docs/metrics.md against a running azgate
// ---------------------------------------------------------------------------------------

/// The label names of each metric family in OpenMetrics text, by the name users query
/// (`azgate_requests_total` for a counter), with its type. `None` labels: no sample.
fn families(text: &str) -> BTreeMap<String, (String, Option<BTreeSet<String>>)> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some((name, kind)) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.split_once(' '))
        {
            types.insert(name.to_string(), kind.to_string());
        }
    }
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let sample = &line[..name_end];
        let family = types
            .keys()
            .filter(|family| {
                sample.strip_prefix(family.as_str()).is_some_and(|suffix| {
                    ["", "_total", "_bucket", "_sum", "_count", "_created"].contains(&suffix)
                })
            })
            .max_by_key(|family| family.len())
            .unwrap_or_else(|| panic!("a sample of no family: {line}"));
        let names = labels.entry(family.clone()).or_default();
        if line[name_end..].starts_with('{') {
            names.extend(
                label_names(&line[name_end + 1..])
                    .into_iter()
                    .filter(|l| l != "le"),
            );
        }
    }
    types
        .into_iter()
        .map(|(family, kind)| {
            let shown = if kind == "counter" {
                format!("{family}_total")
            } else {
                family.clone()
            };
            (shown, (kind, labels.get(&family).cloned()))
        })
        .collect()
}

/// The label names of `a="x",b="y\"z"}…`.
fn label_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        names.push(name.trim_start_matches(',').to_string());
        let mut escaped = false;
        let end = after
            .char_indices()
            .find(|(_, c)| {
                let close = *c == '"' && !escaped;
                escaped = *c == '\\' && !escaped;
                close
            })
            .map_or(after.len(), |(i, _)| i);
        rest = &after[end + 1..];
        if rest.starts_with('}') {
            break;
        }
    }
    names
}

/// The field paths of a JSON value (`routes[].prefix`), and the arrays seen empty.
fn json_paths(
    value: &serde_json::Value,
    at: &str,
    paths: &mut BTreeSet<String>,
    empty: &mut BTreeSet<String>,
) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                paths.insert(path.clone());
                json_paths(item, &path, paths, empty);
            }
        }
        serde_json::Value::Array(items) => {
            let path = format!("{at}[]");
            if items.is_empty() {
                empty.insert(path.clone());
            }
            for item in items {
                json_paths(item, &path, paths, empty);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_and_status_field_is_documented() {
    let entra = MockEntra::start().await;
    let upstream = MockUpstream::start(|_| async {
        Response::builder()
            .header("content-type", "application/json")
            .header("x-ms-ratelimit-remaining-subscription-reads", "249")
            .body(full("{}"))
            .unwrap()
    })
    .await;
    // Every label set the config makes known is listed at 0; one request, one token, a
    // failed TLS handshake and a TLS listener give the rest their samples.
    let files = TlsFiles::new("localhost", None);
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "2s"
[admin]
listen = "127.0.0.1:0"
[admin.tls]
cert = "server.pem"
key = "server.key"
[credentials.arm]
type = "client_secret"
tenant = "contoso"
client_id = "app"
client_secret = "secret"
scope = "https://management.azure.com/.default"
token_url = "{entra}/token"
[credentials.apim]
type = "subscription_key"
key = "primary-key"
secondary_key = "secondary-key"
[credentials.vi]
type = "video_indexer"
location = "trial"
account_id = "00000000-0000-0000-0000-000000000000"
subscription_key = "vi-key"
api_url = "http://127.0.0.1:9"
[[routes]]
prefix = "/up"
upstream = "{upstream}"
credential = "arm"
rewrite_body_links = true
[[routes]]
prefix = "/keyed"
upstream = "{upstream}"
credential = "apim"
[[routes]]
prefix = "/vi-tokens"
vend = "vi"
"#,
        entra = entra.url,
        upstream = upstream.url
    );
    let gw = Azgate::start_with(&text, files.dir.path(), &Default::default()).await;
    let status = support::client()
        .get(format!("{}/up/things", gw.url))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let admin: std::net::SocketAddr = gw.admin_url.as_deref().unwrap()["http://".len()..]
        .parse()
        .unwrap();
    let server = gw.into_server();
    support::tls::send_hello(admin, &support::tls::client_hello_with_bad_sni()).await;
    // The failure is counted when the server's side of the connection ends, which may be
    // after the client saw it closed.
    let counted = "azgate_tls_handshake_failures_total{";
    for _ in 0..250 {
        if server.telemetry.encode().contains(counted) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut session = files.client().open(admin).await.unwrap();
    let (_, _, body) = session.get("/status.json").await.unwrap();
    drop(session);
    let metrics = server.telemetry.encode();
    server.shutdown();
    server.wait().await;

    let doc = read("docs/metrics.md");
    let mut wrong = Vec::new();
    let rows: BTreeMap<String, Vec<String>> = tables(&doc, "metric")
        .into_iter()
        .flat_map(|(_, rows)| rows)
        .filter_map(|row| Some((code_spans(&row[0]).into_iter().next()?, row)))
        .collect();
    let found = families(&metrics);
    for (name, (kind, labels)) in &found {
        let Some(labels) = labels else {
            wrong.push(format!(
                "{name} has no sample in this test's run: give it one above, so its labels \
                 can be read"
            ));
            continue;
        };
        let Some(row) = rows.get(name) else {
            wrong.push(format!(
                "{name} ({kind}, labels {labels:?}) is not documented"
            ));
            continue;
        };
        if !row.get(1).is_some_and(|t| t.contains(kind.as_str())) {
            wrong.push(format!("{name}: the type is {kind}"));
        }
        let documented: BTreeSet<String> = row
            .get(2)
            .map(|cell| code_spans(cell).into_iter().collect())
            .unwrap_or_default();
        if &documented != labels {
            wrong.push(format!(
                "{name}: documented labels {documented:?}, registered {labels:?}"
            ));
        }
    }
    for name in rows.keys() {
        if !found.contains_key(name) {
            wrong.push(format!("{name} is documented but not registered"));
        }
    }

    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (mut seen, mut empty) = (BTreeSet::new(), BTreeSet::new());
    json_paths(&status, "", &mut seen, &mut empty);
    let fields: BTreeSet<String> = tables(&doc, "field")
        .into_iter()
        .flat_map(|(_, rows)| rows)
        .filter_map(|row| code_spans(&row[0]).into_iter().next())
        .collect();
    for path in seen.difference(&fields) {
        wrong.push(format!("/status.json field {path} is not documented"));
    }
    for path in fields.difference(&seen) {
        // Fields of array entries this run had none of (a `default` chain's sources).
        if !empty.iter().any(|array| path.starts_with(array.as_str())) {
            wrong.push(format!("/status.json has no field {path}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/metrics.md and the running azgate disagree:\n{}",
        wrong.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// The CLI: docs/cli.md against `--help`
// ---------------------------------------------------------------------------------------

/// One option as `--help` lists it: `-c, --config <FILE>  … [default: …]`.
#[derive(Debug, PartialEq, Eq)]
struct Flag {
    short: Option<String>,
    value: Option<String>,
    default: Option<String>,
}

/// What one `--help` lists.
#[derive(Debug, Default)]
struct Help {
    usage: String,
    commands: Vec<String>,
    /// Options by their long name (`--config`).
    options: BTreeMap<String, Flag>,
    arguments: BTreeSet<String>,
}

fn help(args: &[&str]) -> Help {
    let out = azgate().args(args).output().unwrap();
    assert!(out.status.success(), "azgate {args:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut help = Help::default();
    let mut section = "";
    for line in text.lines() {
        if let Some(usage) = line.strip_prefix("Usage: ") {
            help.usage = usage.to_string();
        } else if line.ends_with(':') && !line.starts_with(' ') {
            section = line;
        } else if let Some(entry) = line.strip_prefix("  ") {
            let entry = entry.trim_start();
            let (head, about) = entry.split_once("  ").unwrap_or((entry, ""));
            match section {
                "Commands:" => help.commands.push(head.to_string()),
                "Arguments:" => {
                    help.arguments
                        .insert(head.trim_matches(['<', '>', '[', ']', '.']).to_string());
                }
                "Options:" => {
                    let mut short = None;
                    let mut long = String::new();
                    let mut value = None;
                    for word in head.split([',', ' ']).filter(|w| !w.is_empty()) {
                        if word.starts_with("--") {
                            long = word.to_string();
                        } else if word.starts_with('-') {
                            short = Some(word.to_string());
                        } else {
                            value = Some(word.trim_matches(['<', '>']).to_string());
                        }
                    }
                    let default = about
                        .rsplit_once("[default: ")
                        .map(|(_, d)| d.trim_end_matches(']').to_string());
                    help.options.insert(
                        long,
                        Flag {
                            short,
                            value,
                            default,
                        },
                    );
                }
                _ => {}
            }
        }
    }
    help
}

#[test]
fn cli_md_matches_every_help() {
    let doc = read("docs/cli.md");
    let sections = sections_by_code(&doc, 2);
    let top = help(&["--help"]);
    let mut wanted = vec![("azgate".to_string(), top.usage.clone(), help(&["--help"]))];
    for command in &top.commands {
        let asked = if command == "help" {
            help(&["help", "help"])
        } else {
            help(&[command, "--help"])
        };
        wanted.push((format!("azgate {command}"), asked.usage.clone(), asked));
    }
    let mut wrong = Vec::new();
    for (name, usage, asked) in &wanted {
        let Some(section) = sections.get(name) else {
            wrong.push(format!("no section `{name}`"));
            continue;
        };
        if !section.contains(usage.as_str()) {
            wrong.push(format!("`{name}`: the usage line `{usage}` is missing"));
        }
        let mut documented = BTreeMap::new();
        for (_, rows) in tables(section, "option") {
            for row in rows {
                let spans = code_spans(&row[0]);
                let long = spans.iter().find(|s| s.starts_with("--")).cloned();
                let short = spans.iter().find(|s| !s.starts_with("--")).cloned();
                let value = row.get(1).and_then(|c| code_spans(c).into_iter().next());
                if let Some(long) = long {
                    let default = row.get(2).map(|c| c.replace('`', ""));
                    documented.insert(
                        long,
                        Flag {
                            short,
                            value,
                            default,
                        },
                    );
                }
            }
        }
        for (long, flag) in &asked.options {
            let Some(doc) = documented.get(long) else {
                wrong.push(format!("`{name}`: option {long} is not documented"));
                continue;
            };
            if (&doc.short, &doc.value) != (&flag.short, &flag.value) {
                wrong.push(format!(
                    "`{name}` {long}: documented {:?} {:?}, help says {:?} {:?}",
                    doc.short, doc.value, flag.short, flag.value
                ));
            }
            if let Some(default) = &flag.default
                && !doc
                    .default
                    .as_deref()
                    .unwrap_or_default()
                    .contains(default.as_str())
            {
                wrong.push(format!("`{name}` {long}: the default is {default}"));
            }
        }
        for long in documented.keys() {
            if !asked.options.contains_key(long) {
                wrong.push(format!(
                    "`{name}`: option {long} is documented but does not exist"
                ));
            }
        }
        let arguments: BTreeSet<String> = tables(section, "argument")
            .into_iter()
            .flat_map(|(_, rows)| rows)
            .filter_map(|row| code_spans(&row[0]).into_iter().next())
            .map(|a| a.trim_matches(['<', '>', '[', ']', '.']).to_string())
            .collect();
        if arguments != asked.arguments {
            wrong.push(format!(
                "`{name}`: documented arguments {arguments:?}, help says {:?}",
                asked.arguments
            ));
        }
    }
    for name in sections.keys() {
        if name.starts_with("azgate") && !wanted.iter().any(|(n, _, _)| n == name) {
            wrong.push(format!("`{name}` is documented but is no command"));
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/cli.md and azgate --help disagree:\n{}",
        wrong.join("\n")
    );
}
