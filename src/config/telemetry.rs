//! `[telemetry]` -> `TelemetryConfig`: where azgate's spans go over OTLP, under which
//! service name, and how many new traces are kept. Every key is optional: unset keys fall
//! back to the standard `OTEL_*` variables when the server starts (`crate::trace::settings`),
//! so a key written here always wins over the environment.

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue, Uri};

use super::error::{Problems, join};
use super::raw::RawTelemetry;
use crate::secret::Secret;

/// `[telemetry]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL (`http://otel-collector:4318`); spans are posted
    /// to `/v1/traces` under it. `None`: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, then
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; with neither, no spans are exported.
    pub otlp_endpoint: Option<Uri>,
    /// Headers sent with every export (names in lower case) (an API key of a hosted collector); they replace
    /// same-named ones from `OTEL_EXPORTER_OTLP_HEADERS`. Values are secrets.
    pub otlp_headers: BTreeMap<String, Secret>,
    /// `service.name` of the spans. `None`: `OTEL_SERVICE_NAME`, then `azgate`.
    pub service_name: Option<String>,
    /// Share of new traces (requests without a sampled `traceparent`) recorded, 0 to 1.
    /// A sampled parent is always followed. `None`: `OTEL_TRACES_SAMPLER`/`_ARG`, else 1.
    pub sample_ratio: Option<f64>,
}

pub fn validate(raw: RawTelemetry, problems: &mut Problems) -> TelemetryConfig {
    let otlp_endpoint = raw.otlp_endpoint.and_then(|text| {
        endpoint(&text)
            .map_err(|why| problems.push("telemetry.otlp_endpoint", why))
            .ok()
    });
    let mut otlp_headers = BTreeMap::new();
    for (name, value) in raw.otlp_headers.unwrap_or_default() {
        let path = join("telemetry.otlp_headers", &name);
        let Ok(header) = HeaderName::try_from(name.to_ascii_lowercase()) else {
            problems.push(path, "not a valid HTTP header name");
            continue;
        };
        if HeaderValue::try_from(value.as_str()).is_err() {
            problems.push(path, "not a valid HTTP header value");
            continue;
        }
        otlp_headers.insert(header.as_str().to_string(), Secret::new(value));
    }
    let service_name = raw.service_name.filter(|name| {
        let empty = name.trim().is_empty();
        if empty {
            problems.push("telemetry.service_name", "must not be empty");
        }
        !empty
    });
    let sample_ratio = raw.sample_ratio.filter(|ratio| {
        let valid = (0.0..=1.0).contains(ratio);
        if !valid {
            problems.push(
                "telemetry.sample_ratio",
                format!("{ratio} is not between 0 and 1"),
            );
        }
        valid
    });
    TelemetryConfig {
        otlp_endpoint,
        otlp_headers,
        service_name,
        sample_ratio,
    }
}

/// An `http` or `https` URL with a host: where an OTLP/HTTP collector listens. No user
/// name or password (they would be printed where spans go, and OTLP/HTTP sends none of
/// them: credentials go in headers) and no query (the signal path is appended).
pub fn endpoint(text: &str) -> Result<Uri, String> {
    let shown = without_userinfo(text);
    let uri: Uri = text
        .parse()
        .map_err(|err| format!("\"{shown}\" is not a URL: {err}"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "\"{shown}\" carries a user name or password; put credentials in otlp_headers (or OTEL_EXPORTER_OTLP_HEADERS), never in the URL"
        ));
    }
    if uri.query().is_some() {
        return Err(format!(
            "\"{shown}\" has a query; an OTLP/HTTP endpoint is a plain URL (/v1/traces is added to it)"
        ));
    }
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(format!(
            "\"{shown}\" is not an http:// or https:// URL of a collector (OTLP/HTTP, port 4318 by default)"
        )),
    }
}

/// `text` with anything before an `@` in its authority replaced, for messages.
fn without_userinfo(text: &str) -> String {
    let start = text.find("://").map_or(0, |i| i + 3);
    let authority_end = text[start..]
        .find(['/', '?', '#'])
        .map_or(text.len(), |i| start + i);
    match text[start..authority_end].rfind('@') {
        Some(at) => format!("{}…{}", &text[..start], &text[start + at..]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: RawTelemetry) -> (TelemetryConfig, Vec<String>) {
        let mut problems = Problems::default();
        let config = validate(raw, &mut problems);
        let listed = problems
            .into_error("test.toml")
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        (config, listed)
    }

    #[test]
    fn bad_values_are_reported_at_their_key() {
        let (config, problems) = parse(RawTelemetry {
            otlp_endpoint: Some("collector:4318".into()),
            otlp_headers: Some(BTreeMap::from([("bad name".into(), "x".into())])),
            service_name: Some(" ".into()),
            sample_ratio: Some(1.5),
        });
        assert_eq!(config, TelemetryConfig::default());
        assert_eq!(problems.len(), 4, "{problems:?}");
        for key in [
            "telemetry.otlp_endpoint",
            "telemetry.otlp_headers",
            "telemetry.service_name",
            "telemetry.sample_ratio",
        ] {
            assert!(problems.iter().any(|p| p.starts_with(key)), "{problems:?}");
        }
    }

    #[test]
    fn endpoints_with_a_password_or_a_query_are_refused_without_printing_the_password() {
        for (text, says) in [
            (
                "http://user:S3cretPw@collector:4318",
                "user name or password",
            ),
            ("http://S3cretPw@collector:4318/", "user name or password"),
            ("http://collector:4318?x=1", "has a query"),
        ] {
            let why = endpoint(text).unwrap_err();
            assert!(why.contains(says), "{why}");
            assert!(!why.contains("S3cretPw"), "{why}");
        }
        assert!(endpoint("http://collector:4318").is_ok());
        assert!(endpoint("https://otel.example/base/").is_ok());
    }

    #[test]
    fn good_values_are_kept_and_header_values_stay_secret() {
        let (config, problems) = parse(RawTelemetry {
            otlp_endpoint: Some("https://otel.example:4318".into()),
            otlp_headers: Some(BTreeMap::from([("api-key".into(), "hunter2".into())])),
            service_name: Some("gateway".into()),
            sample_ratio: Some(0.25),
        });
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.sample_ratio, Some(0.25));
        assert_eq!(config.otlp_headers["api-key"].expose(), "hunter2");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
