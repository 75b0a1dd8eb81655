//! The value checks of one `[[routes]]` entry's fields: prefixes, upstream URLs, method
//! lists, extra headers and private CA files.

use std::path::Path;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method, Uri};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::CaRoots;
use crate::config::error::Problems;

/// Headers a route may not set: they describe the connection, not the request, or are
/// managed by azgate itself.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "x-azgate-key",
];

/// Normalises a prefix: it starts with `/`, has no empty segments, query or fragment, and
/// loses a trailing slash (`/vi/` is `/vi`), except the catch-all `/`.
pub(super) fn prefix(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("prefix \"{text}\" must start with '/'"));
    }
    if text.contains(['?', '#']) || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "prefix \"{text}\" must be a plain path (no query, fragment or spaces)"
        ));
    }
    let trimmed = text.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok("/".to_string());
    }
    if trimmed.contains("//") {
        return Err(format!("prefix \"{text}\" has an empty path segment"));
    }
    if trimmed.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(format!("prefix \"{text}\" has a dot segment"));
    }
    Ok(trimmed.to_string())
}

pub(super) fn upstream(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|e| format!("invalid URL \"{text}\": {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!(
                "upstream \"{text}\" must be an http:// or https:// URL"
            ));
        }
    }
    // `https://https://host` parses as host "https" with an empty port: a scheme written
    // twice, typically `https://${VAR}` with a variable that holds a whole URL.
    let after_scheme = text.split_once("://").map_or("", |(_, rest)| rest);
    let lower = after_scheme.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Err(format!(
            "\"{text}\" has its scheme twice; write it once, as in \"https://host\""
        ));
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(format!("upstream \"{text}\" has no host"));
    }
    if uri.authority().is_some_and(|a| a.as_str().ends_with(':')) {
        return Err(format!("\"{text}\" has an empty port"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "upstream \"{text}\" must not carry user information; use a credential"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("upstream \"{text}\" must not have a query string"));
    }
    Ok(uri)
}

pub(super) fn methods(list: &[String], path: &str, problems: &mut Problems) -> Vec<Method> {
    if list.is_empty() {
        problems.push(
            path,
            "an empty list would refuse every request; omit `methods` to allow all",
        );
    }
    let mut out = Vec::new();
    for (i, text) in list.iter().enumerate() {
        let upper = text.to_ascii_uppercase();
        match Method::from_bytes(upper.as_bytes()) {
            Ok(m) if !text.is_empty() => {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
            _ => problems.push(
                format!("{path}[{i}]"),
                format!("\"{text}\" is not an HTTP method"),
            ),
        }
    }
    out
}

pub(super) fn set_header(
    name: &str,
    value: &str,
    path: &str,
    problems: &mut Problems,
) -> Option<(HeaderName, HeaderValue)> {
    let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
        problems.push(path, format!("\"{name}\" is not a valid header name"));
        return None;
    };
    if RESERVED_HEADERS.contains(&header.as_str()) {
        problems.push(
            path,
            format!("\"{name}\" is managed by azgate and cannot be set"),
        );
        return None;
    }
    match HeaderValue::from_str(value) {
        Ok(v) => Some((header, v)),
        Err(_) => {
            problems.push(path, "value contains characters not allowed in a header");
            None
        }
    }
}

pub(super) fn ca_roots(file: &str, base_dir: &Path) -> Result<CaRoots, String> {
    let path = base_dir.join(file);
    let text =
        std::fs::read(&path).map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("\"{}\" is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("\"{}\" holds no PEM certificate", path.display()));
    }
    let mut store = rustls::RootCertStore::empty();
    for cert in &certs {
        store.add(cert.clone()).map_err(|e| {
            format!(
                "\"{}\" holds a certificate rustls cannot use as a root: {e}",
                path.display()
            )
        })?;
    }
    Ok(CaRoots {
        path,
        certs: Arc::new(certs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/vi", Some("/vi")),
            ("/vi/", Some("/vi")),
            ("/", Some("/")),
            ("//", Some("/")),
            ("/a/b", Some("/a/b")),
            ("vi", None),
            ("/a//b", None),
            ("/a?x=1", None),
            ("/a/../b", None),
            ("/a b", None),
        ];
        for (text, want) in cases {
            assert_eq!(prefix(text).ok().as_deref(), *want, "{text}");
        }
    }

    #[test]
    fn upstreams() {
        assert!(upstream("https://api.videoindexer.ai").is_ok());
        assert!(upstream("http://127.0.0.1:9000/base").is_ok());
        assert!(upstream("ftp://x").is_err());
        assert!(upstream("api.videoindexer.ai").is_err());
        assert!(upstream("https://u:p@host").is_err());
        assert!(upstream("https://host/?q=1").is_err());
        for doubled in [
            "https://https://host",
            "https://http://host",
            "http://HTTPS://h/x",
        ] {
            let err = upstream(doubled).unwrap_err();
            assert!(err.contains("scheme twice"), "{doubled}: {err}");
        }
        assert!(
            upstream("https://host:/x")
                .unwrap_err()
                .contains("empty port")
        );
    }
}
