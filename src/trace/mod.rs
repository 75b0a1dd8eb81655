//! Distributed tracing: W3C trace context in and out, and azgate's own spans, exported
//! over OTLP when an endpoint is set.
//!
//! Where the spans open, on the request path of `proxy`:
//!
//! ```text
//! accept -> inbound check [server span opens, parent from traceparent]
//!        -> route [span named "{method} {prefix}"] -> prepare [token wait]
//!        -> send with retry [throttle hold, one client span per attempt; its traceparent
//!           goes upstream] -> rewrite -> log [server span ends with the access-log line]
//! ```
//!
//! A token fetch runs on a task of its own (a client that goes away cannot cancel it);
//! it takes the request's context along and opens its span under the wait that started
//! it. Each server has its own tracer provider (no global one), so two servers in one
//! process, as in the tests, export their own spans. With no endpoint there is no
//! `Tracing`: requests make no spans and pay for none.

pub mod context;
mod export;
pub mod settings;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, TraceId, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};

pub use settings::Settings;

use crate::telemetry::Telemetry;

/// How long shutdown waits for the last spans to reach the collector.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The export pipeline of one server: started with it, flushed and stopped at its end.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

/// The server's tracer, carried in each traced request's context so that code away from
/// the request path (a token fetch, a throttle hold) can open a child span.
#[derive(Clone)]
struct CurrentTracer(SdkTracer);

impl Tracing {
    /// Starts the pipeline (its batch thread) for `settings`.
    pub fn start(settings: &Settings, telemetry: Arc<Telemetry>) -> Result<Self, String> {
        let (provider, tracer) = export::pipeline(settings, telemetry)?;
        Ok(Self {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        })
    }

    /// Exports what is queued and stops the batch thread, waiting at most a few seconds
    /// (a dead collector cannot hold up the exit).
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        let stopped =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .await;
        if let Ok(Err(err)) = stopped {
            tracing::warn!("the OTLP exporter did not shut down cleanly: {err}");
        }
    }

    /// Opens the server span of a request: a child of the client's `traceparent` (with its
    /// `tracestate`) when it sent one, else the root of a new trace, sampled as configured.
    pub fn server_span(&self, headers: &HeaderMap, inbound: &Inbound<'_>) -> RequestTrace {
        let parent = self
            .propagator
            .extract_with_context(&Context::new(), &HeaderExtractor(headers));
        // The access log's redacted path and query, split where the query starts.
        let (path, query) = match inbound.path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (inbound.path, None),
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", method_name(inbound.method)),
            KeyValue::new("url.path", path.to_string()),
            KeyValue::new("url.scheme", if inbound.tls { "https" } else { "http" }),
        ];
        if let Some(query) = query {
            attributes.push(KeyValue::new("url.query", query.to_string()));
        }
        let span = self
            .tracer
            .span_builder(method_name(inbound.method))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        RequestTrace {
            cx: parent
                .with_span(span)
                .with_value(CurrentTracer(self.tracer.clone())),
        }
    }
}

/// What the inbound edge knows when the server span opens.
pub struct Inbound<'a> {
    pub method: &'a Method,
    /// Path and query, redacted as in the access log.
    pub path: &'a str,
    pub tls: bool,
}

/// The span of one request (or of a wait inside it), with the tracer to open children.
/// Cloning is cheap.
#[derive(Clone)]
pub struct RequestTrace {
    cx: Context,
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestTrace({})", self.trace_id())
    }
}

impl RequestTrace {
    /// The context to run the request's phases in (`FutureExt::with_context`).
    pub fn context(&self) -> &Context {
        &self.cx
    }

    pub fn trace_id(&self) -> TraceId {
        self.cx.span().span_context().trace_id()
    }

    /// The route is known: the span is named `{method} {prefix}`.
    pub fn routed(&self, method: &Method, prefix: &str, credential: Option<&str>) {
        let span = self.cx.span();
        span.update_name(format!("{} {prefix}", method_name(method)));
        span.set_attribute(KeyValue::new("http.route", prefix.to_string()));
        span.set_attribute(KeyValue::new("azgate.route", prefix.to_string()));
        if let Some(credential) = credential {
            span.set_attribute(KeyValue::new("azgate.credential", credential.to_string()));
        }
    }

    /// Ends the server span with the request's outcome, as the access log has it.
    pub fn finish(&self, outcome: &Outcome) {
        let span = self.cx.span();
        if outcome.status > 0 {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(outcome.status),
            ));
        }
        span.set_attribute(KeyValue::new(
            "azgate.attempts",
            i64::from(outcome.attempts),
        ));
        if let Some(client) = outcome.client {
            span.set_attribute(KeyValue::new("client.address", client.to_string()));
        }
        let error_type = match (outcome.error, outcome.status) {
            (Some(code), _) => Some(code.to_string()),
            (None, 0) => Some("incomplete".to_string()),
            (None, status) if status >= 500 => Some(status.to_string()),
            _ => None,
        };
        // A server span is an error for 5xx only: a 4xx is the client's problem.
        if outcome.status >= 500 || outcome.status == 0 {
            span.set_status(Status::error(error_type.clone().unwrap_or_default()));
        }
        if let Some(error_type) = error_type {
            span.set_attribute(KeyValue::new("error.type", error_type));
        }
        span.end();
    }

    /// An internal span under this one (the wait for a token); run the waiting future
    /// in the returned trace's context, then `end` it.
    pub fn child(&self, name: &'static str, attributes: Vec<KeyValue>) -> RequestTrace {
        let Some(CurrentTracer(tracer)) = self.cx.get::<CurrentTracer>() else {
            return self.clone();
        };
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_attributes(attributes)
            .start_with_context(tracer, &self.cx);
        RequestTrace {
            cx: self.cx.with_span(span),
        }
    }

    pub fn end(&self) {
        self.cx.span().end();
    }

    /// The client span of one upstream attempt. `resend` is 0 for the first attempt.
    pub fn attempt(&self, method: &Method, target: &Target<'_>, resend: u32) -> Attempt {
        let Some(CurrentTracer(tracer)) = self.cx.get::<CurrentTracer>() else {
            return Attempt(None);
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", method_name(method)),
            KeyValue::new("url.full", target.url.to_string()),
            KeyValue::new("server.address", target.host.to_string()),
            KeyValue::new("server.port", i64::from(target.port)),
        ];
        if resend > 0 {
            attributes.push(KeyValue::new(
                "http.request.resend_count",
                i64::from(resend),
            ));
        }
        let span = tracer
            .span_builder(method_name(method))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(tracer, &self.cx);
        Attempt(Some(span))
    }
}

/// Where an attempt goes: the URL redacted as in the access log.
pub struct Target<'a> {
    pub url: &'a str,
    pub host: &'a str,
    pub port: u16,
}

/// A request's outcome, for its server span.
pub struct Outcome {
    /// 0 when the request ended without a response.
    pub status: u16,
    pub attempts: u32,
    /// azgate's error code when azgate answered itself.
    pub error: Option<&'static str>,
    pub client: Option<IpAddr>,
}

/// The client span of one upstream attempt; ends when dropped.
pub struct Attempt(Option<Span>);

impl Attempt {
    /// The `traceparent` for this attempt's request: the upstream's parent is this span.
    pub fn traceparent(&self) -> Option<HeaderValue> {
        use opentelemetry::trace::Span as _;
        self.0
            .as_ref()
            .map(|span| context::traceparent(span.span_context()))
    }

    /// The upstream answered with `status`.
    pub fn answered(&mut self, status: u16) {
        use opentelemetry::trace::Span as _;
        if let Some(span) = &mut self.0 {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 400 {
                span.set_attribute(KeyValue::new("error.type", status.to_string()));
                span.set_status(Status::error(status.to_string()));
            }
        }
    }

    /// The attempt got no response; `code` is azgate's error code for it.
    pub fn failed(&mut self, code: &'static str) {
        use opentelemetry::trace::Span as _;
        if let Some(span) = &mut self.0 {
            span.set_attribute(KeyValue::new("error.type", code));
            span.set_status(Status::error(code));
        }
    }
}

/// The traced request the current task works for, if any: the parent of spans opened
/// away from the request path. `None` (and nothing cloned) for untraced work.
pub struct Parent(Context);

impl Parent {
    pub fn current() -> Option<Self> {
        Context::map_current(|cx| {
            cx.get::<CurrentTracer>()
                .is_some()
                .then(|| Self(cx.clone()))
        })
    }

    /// An internal span under this parent; it ends when dropped.
    pub fn span(&self, name: &'static str, attributes: Vec<KeyValue>) -> Option<Span> {
        let CurrentTracer(tracer) = self.0.get::<CurrentTracer>()?;
        Some(
            tracer
                .span_builder(name)
                .with_kind(SpanKind::Internal)
                .with_attributes(attributes)
                .start_with_context(tracer, &self.0),
        )
    }
}

/// An internal span under the current task's traced request, if it has one.
pub fn span_in_current(name: &'static str, attributes: Vec<KeyValue>) -> Option<Span> {
    Parent::current()?.span(name, attributes)
}

/// The method as semantic conventions name it; `_OTHER` for non-standard ones.
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}
