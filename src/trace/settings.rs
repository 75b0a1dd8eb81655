//! Where spans go, resolved once at start: `[telemetry]` keys first, then the standard
//! `OTEL_*` variables (read from an `Env`, so tests give their own). No endpoint in
//! either: `None`, and azgate makes no spans at all.

use std::fmt::Write as _;

use http::{HeaderName, HeaderValue, Uri};
use opentelemetry_sdk::trace::Sampler;

use crate::config::{TelemetryConfig, otlp_endpoint};
use crate::env::Env;
use crate::secret::Secret;

/// The path of the traces signal under an OTLP/HTTP base URL.
const TRACES_PATH: &str = "/v1/traces";

/// How spans are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    HttpProtobuf,
    HttpJson,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::HttpJson => "http/json",
        }
    }
}

/// Which requests without a sampled parent are recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// `parentbased_traceidratio` (`sample_ratio`, or the default of 1).
    ParentBasedRatio(f64),
    ParentBasedAlwaysOff,
    /// Ignores the parent's decision: `always_on`, `always_off`, `traceidratio`.
    Ratio(f64),
}

impl Sampling {
    pub fn sampler(self) -> Sampler {
        match self {
            Sampling::ParentBasedRatio(ratio) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
            }
            Sampling::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Sampling::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
        }
    }

    fn describe(self) -> String {
        match self {
            Sampling::ParentBasedRatio(ratio) => {
                format!("a sampled parent is followed, else {ratio} of new traces")
            }
            Sampling::ParentBasedAlwaysOff => "only requests with a sampled parent".into(),
            Sampling::Ratio(ratio) => format!("{ratio} of all requests, whatever the parent"),
        }
    }
}

/// The export pipeline's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The full URL spans are posted to (`…/v1/traces`).
    pub endpoint: Uri,
    /// Which key or variable named the endpoint.
    pub endpoint_from: &'static str,
    pub protocol: Protocol,
    /// Sent with every export; values never printed.
    pub headers: Vec<(HeaderName, Secret)>,
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, minus `service.name`.
    pub resource: Vec<(String, String)>,
    pub sampling: Sampling,
    /// Variables that were set but could not be honoured, for a WARN line at start.
    pub warnings: Vec<String>,
}

impl Settings {
    /// `[telemetry]` over the `OTEL_*` variables of `env`. `Ok(None)` when no endpoint is
    /// set; `Err` when a variable azgate needs is unusable (a bad endpoint URL).
    pub fn resolve(config: &TelemetryConfig, env: &Env) -> Result<Option<Self>, String> {
        let mut warnings = Vec::new();
        let (endpoint, endpoint_from) = match endpoint(config, env)? {
            Some(found) => found,
            None => return Ok(None),
        };
        let protocol = match env
            .get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| env.get("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            None | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("http/json") => Protocol::HttpJson,
            Some(other) => {
                warnings.push(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported (azgate exports \
                     OTLP over HTTP): using http/protobuf; the collector's OTLP/HTTP port is \
                     4318"
                ));
                Protocol::HttpProtobuf
            }
        };
        let mut headers = Vec::new();
        if let Some(text) = env
            .get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            .or_else(|| env.get("OTEL_EXPORTER_OTLP_HEADERS"))
        {
            for (name, value) in pairs(&text) {
                match (
                    HeaderName::try_from(name.to_ascii_lowercase()),
                    HeaderValue::try_from(value.as_str()),
                ) {
                    (Ok(name), Ok(_)) => headers.push((name, Secret::new(value))),
                    _ => warnings.push(format!(
                        "OTEL_EXPORTER_OTLP_HEADERS: \"{name}\" is not a usable header; skipped"
                    )),
                }
            }
        }
        for (name, value) in &config.otlp_headers {
            if let Ok(name) = HeaderName::try_from(name.as_str()) {
                headers.retain(|(n, _)| *n != name);
                headers.push((name, value.clone()));
            }
        }
        let mut resource = env
            .get("OTEL_RESOURCE_ATTRIBUTES")
            .map(|text| pairs(&text))
            .unwrap_or_default();
        let from_resource = resource
            .iter()
            .position(|(key, _)| key == "service.name")
            .map(|i| resource.remove(i).1);
        let service_name = config
            .service_name
            .clone()
            .or_else(|| env.get("OTEL_SERVICE_NAME"))
            .or(from_resource)
            .unwrap_or_else(|| "azgate".to_string());
        let sampling = match config.sample_ratio {
            Some(ratio) => Sampling::ParentBasedRatio(ratio),
            None => sampling_from_env(env, &mut warnings),
        };
        Ok(Some(Self {
            endpoint,
            endpoint_from,
            protocol,
            headers,
            service_name,
            resource,
            sampling,
            warnings,
        }))
    }

    /// One line for `azgate check` and the start log: where spans go. Header names only.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "spans go to {} ({}, from {}) as service.name \"{}\"; sampling: {}",
            self.endpoint,
            self.protocol.name(),
            self.endpoint_from,
            self.service_name,
            self.sampling.describe()
        );
        if !self.headers.is_empty() {
            let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
            let _ = write!(out, "; headers: {}", names.join(", "));
        }
        out
    }
}

/// The traces URL: `otlp_endpoint` (a base URL), else the traces variable (used as it is),
/// else the general one (a base URL).
fn endpoint(config: &TelemetryConfig, env: &Env) -> Result<Option<(Uri, &'static str)>, String> {
    if let Some(base) = &config.otlp_endpoint {
        return Ok(Some((traces_url(base)?, "telemetry.otlp_endpoint")));
    }
    const TRACES: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    const GENERAL: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    if let Some(text) = env.get(TRACES) {
        let url = otlp_endpoint(&text).map_err(|why| format!("{TRACES}: {why}"))?;
        return Ok(Some((url, TRACES)));
    }
    if let Some(text) = env.get(GENERAL) {
        let base = otlp_endpoint(&text).map_err(|why| format!("{GENERAL}: {why}"))?;
        return Ok(Some((traces_url(&base)?, GENERAL)));
    }
    Ok(None)
}

/// `/v1/traces` appended to a base URL's path, as the OTLP spec says for base endpoints;
/// a URL that already ends in it is kept.
fn traces_url(base: &Uri) -> Result<Uri, String> {
    let text = base.to_string();
    let trimmed = text.trim_end_matches('/');
    if trimmed.ends_with(TRACES_PATH) {
        return Ok(base.clone());
    }
    format!("{trimmed}{TRACES_PATH}")
        .parse()
        .map_err(|err| format!("{text}: {err}"))
}

/// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`; the default is
/// `parentbased_always_on`.
fn sampling_from_env(env: &Env, warnings: &mut Vec<String>) -> Sampling {
    let mut ratio = || match env.get("OTEL_TRACES_SAMPLER_ARG") {
        None => 1.0,
        Some(text) => match text.trim().parse::<f64>() {
            Ok(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
            _ => {
                warnings.push(format!(
                    "OTEL_TRACES_SAMPLER_ARG={text} is not a ratio between 0 and 1: using 1"
                ));
                1.0
            }
        },
    };
    match env.get("OTEL_TRACES_SAMPLER").as_deref() {
        None | Some("parentbased_always_on") => Sampling::ParentBasedRatio(1.0),
        Some("parentbased_always_off") => Sampling::ParentBasedAlwaysOff,
        Some("parentbased_traceidratio") => Sampling::ParentBasedRatio(ratio()),
        Some("always_on") => Sampling::Ratio(1.0),
        Some("always_off") => Sampling::Ratio(0.0),
        Some("traceidratio") => Sampling::Ratio(ratio()),
        Some(other) => {
            warnings.push(format!(
                "OTEL_TRACES_SAMPLER={other} is not supported: using parentbased_always_on"
            ));
            Sampling::ParentBasedRatio(1.0)
        }
    }
}

/// `key=value,key=value` with percent-encoded values (`OTEL_EXPORTER_OTLP_HEADERS`,
/// `OTEL_RESOURCE_ATTRIBUTES`); entries without `=` are skipped.
fn pairs(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|entry| entry.split_once('='))
        .map(|(key, value)| {
            let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8_lossy();
            (key.trim().to_string(), value.into_owned())
        })
        .filter(|(key, _)| !key.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        Env::from_pairs(vars)
    }

    fn resolve(config: &TelemetryConfig, vars: &[(&str, &str)]) -> Option<Settings> {
        Settings::resolve(config, &env(vars)).unwrap()
    }

    #[test]
    fn no_endpoint_means_no_export() {
        assert!(resolve(&TelemetryConfig::default(), &[("OTEL_SERVICE_NAME", "x")]).is_none());
    }

    #[test]
    fn standard_variables_are_honoured() {
        let settings = resolve(
            &TelemetryConfig::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s%3Dcret,x-team=a"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=prod,service.name=r",
                ),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ],
        )
        .unwrap();
        assert_eq!(settings.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(settings.endpoint_from, "OTEL_EXPORTER_OTLP_ENDPOINT");
        assert_eq!(settings.protocol, Protocol::HttpJson);
        assert_eq!(settings.headers[0].1.expose(), "s=cret");
        assert_eq!(settings.service_name, "r");
        assert_eq!(
            settings.resource,
            vec![("deployment.environment".into(), "prod".into())]
        );
        assert_eq!(settings.sampling, Sampling::ParentBasedRatio(0.1));
        assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
        let described = settings.describe();
        assert!(described.contains("api-key") && !described.contains("cret"));

        // The traces variable is used as it is, and wins over the general one.
        let settings = resolve(
            &TelemetryConfig::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://traces:4318/custom",
                ),
                ("OTEL_SERVICE_NAME", "svc"),
                ("OTEL_TRACES_SAMPLER", "always_off"),
            ],
        )
        .unwrap();
        assert_eq!(settings.endpoint, "http://traces:4318/custom");
        assert_eq!(settings.service_name, "svc");
        assert_eq!(settings.sampling, Sampling::Ratio(0.0));
    }

    #[test]
    fn config_keys_win_over_the_environment() {
        let config = TelemetryConfig {
            otlp_endpoint: Some("https://configured:4318".parse().unwrap()),
            otlp_headers: BTreeMap::from([("api-key".into(), Secret::new("from-config"))]),
            service_name: Some("configured".into()),
            sample_ratio: Some(0.5),
        };
        let settings = resolve(
            &config,
            &[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://env:4318/v1/traces",
                ),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=from-env,other=kept"),
                ("OTEL_SERVICE_NAME", "env"),
                ("OTEL_TRACES_SAMPLER", "always_off"),
            ],
        )
        .unwrap();
        assert_eq!(settings.endpoint, "https://configured:4318/v1/traces");
        assert_eq!(settings.endpoint_from, "telemetry.otlp_endpoint");
        let headers: Vec<(&str, &str)> = settings
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.expose()))
            .collect();
        assert_eq!(headers, [("other", "kept"), ("api-key", "from-config")]);
        assert_eq!(settings.service_name, "configured");
        assert_eq!(settings.sampling, Sampling::ParentBasedRatio(0.5));
    }

    #[test]
    fn unusable_variables_are_refused_or_warned_about() {
        let bad = Settings::resolve(
            &TelemetryConfig::default(),
            &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]),
        );
        assert!(bad.unwrap_err().starts_with("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let settings = resolve(
            &TelemetryConfig::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
            ],
        )
        .unwrap();
        assert_eq!(settings.protocol, Protocol::HttpProtobuf);
        assert_eq!(settings.sampling, Sampling::ParentBasedRatio(1.0));
        assert_eq!(settings.warnings.len(), 2, "{:?}", settings.warnings);
    }
}
