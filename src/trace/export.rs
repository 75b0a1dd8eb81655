//! The OTLP export pipeline behind `Tracing`: a batch span processor on its own thread,
//! an OTLP/HTTP exporter on a blocking reqwest client (the processor's thread has no Tokio
//! runtime, so the async client cannot run there), and a wrapper that counts failed
//! exports. A slow or dead collector only ever holds up that thread: the request path
//! hands finished spans to a bounded queue and never waits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use opentelemetry::InstrumentationScope;
use opentelemetry::KeyValue;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};

use super::settings::{Protocol, Settings};
use crate::logging::LogLimiter;
use crate::telemetry::Telemetry;

/// One export may take this long before it counts as failed; the processor's thread is
/// the only one that waits for it.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// A failing collector is reported at most this often (each failure is counted).
const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Builds the provider (its batch thread starts now) and the tracer requests use.
pub fn pipeline(
    settings: &Settings,
    telemetry: Arc<Telemetry>,
) -> Result<(SdkTracerProvider, SdkTracer), String> {
    let client = CollectorClient::new(settings)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(settings.endpoint.to_string())
        .with_protocol(match settings.protocol {
            Protocol::HttpProtobuf => opentelemetry_otlp::Protocol::HttpBinary,
            Protocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
        })
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|err| format!("cannot set up the OTLP exporter: {err}"))?;
    let exporter = CountedExporter {
        inner: exporter,
        endpoint: settings.endpoint.to_string(),
        telemetry,
        warnings: LogLimiter::new(WARN_INTERVAL),
    };
    let resource = Resource::builder_empty()
        .with_service_name(settings.service_name.clone())
        .with_attributes(
            settings
                .resource
                .iter()
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
        )
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).build())
        .with_sampler(settings.sampling.sampler())
        .with_resource(resource)
        .build();
    let scope = InstrumentationScope::builder("azgate")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let tracer = opentelemetry::trace::TracerProvider::tracer_with_scope(&provider, scope);
    Ok((provider, tracer))
}

/// The OTLP exporter, with its failures counted in `azgate_otlp_export_failures_total`
/// and warned about once a minute.
#[derive(Debug)]
struct CountedExporter {
    inner: opentelemetry_otlp::SpanExporter,
    endpoint: String,
    telemetry: Arc<Telemetry>,
    warnings: LogLimiter,
}

impl SpanExporter for CountedExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(err) = &result {
            self.telemetry.record_otlp_export_failure();
            if let Some(held_back) = self.warnings.allow() {
                tracing::warn!(
                    endpoint = %self.endpoint,
                    spans,
                    held_back,
                    "spans could not be exported to the OTLP collector and were dropped: {err} \
                     (held_back: failed exports since the last line)"
                );
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A blocking reqwest client (rustls, the process's one crypto provider) that sets the
/// configured headers on every export, over any the exporter read from the environment:
/// `[telemetry] otlp_headers` win.
struct CollectorClient {
    inner: reqwest::blocking::Client,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for CollectorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may be API keys.
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        write!(f, "CollectorClient(headers: {names:?})")
    }
}

impl CollectorClient {
    fn new(settings: &Settings) -> Result<Self, String> {
        let headers = settings
            .headers
            .iter()
            .filter_map(|(name, value)| {
                let mut value = HeaderValue::try_from(value.expose()).ok()?;
                value.set_sensitive(true);
                Some((name.clone(), value))
            })
            .collect();
        // reqwest's blocking client starts (and on drop stops) a runtime of its own, which
        // it cannot do on a Tokio worker thread: build it on a plain one.
        let inner = std::thread::Builder::new()
            .name("azgate-otlp-client".into())
            .spawn(|| {
                reqwest::blocking::Client::builder()
                    .timeout(EXPORT_TIMEOUT)
                    .build()
            })
            .map_err(|err| format!("cannot start a thread for the OTLP client: {err}"))?
            .join()
            .map_err(|_| "the thread building the OTLP client panicked".to_string())?
            .map_err(|err| format!("cannot build the OTLP client: {err}"))?;
        Ok(Self { inner, headers })
    }
}

impl HttpClient for CollectorClient {
    fn send_bytes<'client, 'call>(
        &'client self,
        mut request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'call>>
    where
        'client: 'call,
        Self: 'call,
    {
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        self.inner.send_bytes(request)
    }
}
