//! A real OTLP/HTTP collector for tests: decodes each `POST /v1/traces` body with the
//! opentelemetry-proto crate's generated `ExportTraceServiceRequest` (protobuf, or JSON
//! when the content type says so) and answers `ExportTraceServiceResponse`. Spans come
//! back flattened, with their resource, and with the headers of the export that carried
//! them. `Silent` accepts connections and never answers: a hung collector.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::Response;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{MockUpstream, full};

/// One span as the collector received it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    /// `SPAN_KIND_*` as its number: 1 internal, 2 server, 3 client.
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, String>,
    pub resource: BTreeMap<String, String>,
    /// Headers of the export request that carried the span.
    pub headers: BTreeMap<String, String>,
}

pub const INTERNAL: i32 = 1;
pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Every string in the span: name, attribute keys and values, resource.
    pub fn strings(&self) -> Vec<&str> {
        let mut out = vec![self.name.as_str()];
        for (k, v) in self.attributes.iter().chain(&self.resource) {
            out.push(k);
            out.push(v);
        }
        out
    }
}

pub struct Collector {
    /// Base URL (`http://127.0.0.1:PORT`), as `otlp_endpoint` takes it.
    pub url: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    exports: Arc<Mutex<usize>>,
    _server: MockUpstream,
}

impl Collector {
    pub async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let exports = Arc::new(Mutex::new(0));
        let server = {
            let (spans, exports) = (spans.clone(), exports.clone());
            MockUpstream::start(move |request| {
                let (spans, exports) = (spans.clone(), exports.clone());
                async move {
                    let (parts, body) = request.into_parts();
                    assert_eq!(parts.uri.path(), "/v1/traces");
                    let headers: BTreeMap<String, String> = parts
                        .headers
                        .iter()
                        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                        .collect();
                    let body = body.collect().await.unwrap().to_bytes();
                    let json = headers
                        .get("content-type")
                        .is_some_and(|c| c.contains("json"));
                    let decoded: ExportTraceServiceRequest = if json {
                        serde_json::from_slice(&body).expect("OTLP/JSON body")
                    } else {
                        ExportTraceServiceRequest::decode(body).expect("OTLP protobuf body")
                    };
                    *exports.lock().unwrap() += 1;
                    spans.lock().unwrap().extend(flatten(decoded, &headers));
                    let answer = ExportTraceServiceResponse {
                        partial_success: None,
                    };
                    Response::builder()
                        .header("content-type", "application/x-protobuf")
                        .body(full(answer.encode_to_vec()))
                        .unwrap()
                }
            })
            .await
        };
        Self {
            url: server.url.clone(),
            spans,
            exports,
            _server: server,
        }
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    pub fn exports(&self) -> usize {
        *self.exports.lock().unwrap()
    }

    /// The `[telemetry]` table that sends spans here.
    pub fn telemetry(&self, extra: &str) -> String {
        format!("[telemetry]\notlp_endpoint = \"{}\"\n{extra}\n", self.url)
    }
}

fn flatten(
    request: ExportTraceServiceRequest,
    headers: &BTreeMap<String, String>,
) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                out.push(ReceivedSpan {
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                    resource: resource.clone(),
                    headers: headers.clone(),
                });
            }
        }
    }
    out
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A collector that accepts connections, reads nothing and never answers.
pub struct Silent {
    pub url: String,
    task: JoinHandle<()>,
}

impl Silent {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Self { url, task }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}
