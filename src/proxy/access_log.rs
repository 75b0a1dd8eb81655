//! The "log" phase: one access-log event per request, written when the response body is
//! finished or dropped, so it carries the real byte counts and total duration. A request
//! dropped before it had a response (the client went away, or shutdown cut it) still
//! writes its line, with `status=0` and `complete=false`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use tokio::time::Instant;

use crate::telemetry::{InflightGuard, RequestRecord, Telemetry, method_label};
use crate::trace::{Outcome, RequestTrace};
use opentelemetry::trace::TraceId;

/// What is known about a request as it goes through the path; emitted once.
#[derive(Debug)]
pub struct AccessLog {
    started: Instant,
    pub peer: SocketAddr,
    pub method: Method,
    /// Path and query with credential-like query values redacted.
    pub path: String,
    /// The matched route's prefix (bounded cardinality), if any.
    pub route: Option<Arc<str>>,
    pub status: u16,
    /// The `x-ms-client-request-id` sent upstream and returned to the client.
    pub request_id: String,
    /// The upstream's `x-ms-request-id`, for support tickets.
    pub upstream_request_id: Option<String>,
    /// Time from sending the request upstream to its response headers.
    pub upstream_duration: Option<Duration>,
    /// Request body bytes forwarded, counted as they stream.
    pub bytes_in: Arc<AtomicU64>,
    /// azgate's error code when azgate answered itself.
    pub error: Option<&'static str>,
    /// Upstream attempts made (0 when azgate answered without asking the upstream).
    pub attempts: u32,
    /// The client address (from `X-Forwarded-For` when the peer is a trusted proxy).
    pub client: Option<std::net::IpAddr>,
    /// Where the finished request is counted; holds the in-flight gauge until then.
    pub telemetry: Option<(Arc<Telemetry>, InflightGuard)>,
    /// The client certificate's subject, with mTLS.
    pub client_subject: Option<std::sync::Arc<str>>,
    /// The request's trace: azgate's server span's, else the client's `traceparent`'s.
    pub trace_id: Option<TraceId>,
    /// The server span, ended with this line (only while spans are exported).
    pub trace: Option<RequestTrace>,
    /// Set once the event is written, so `Drop` writes it only for abandoned requests.
    emitted: bool,
}

impl AccessLog {
    pub fn start(peer: SocketAddr, method: Method, path: String, request_id: String) -> Self {
        Self {
            started: Instant::now(),
            peer,
            method,
            path,
            route: None,
            status: 0,
            request_id,
            upstream_request_id: None,
            upstream_duration: None,
            bytes_in: Arc::new(AtomicU64::new(0)),
            error: None,
            attempts: 0,
            client_subject: None,
            client: None,
            trace_id: None,
            trace: None,
            telemetry: None,
            emitted: false,
        }
    }

    /// Writes the event. `complete` is false when the body was cut short (client gone,
    /// upstream error or idle timeout).
    pub fn emit(mut self, bytes_out: u64, complete: bool) {
        self.finish(bytes_out, complete);
    }

    fn finish(&mut self, bytes_out: u64, complete: bool) {
        self.emitted = true;
        self.end_trace();
        let duration_ms = millis(self.started.elapsed());
        if let Some((telemetry, _inflight)) = self.telemetry.take() {
            self.log_event(duration_ms, bytes_out, complete);
            // The record takes the strings: the log line above was the last to need them.
            let record = RequestRecord {
                at_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                method: method_label(&self.method),
                route: self.route.take(),
                path: std::mem::take(&mut self.path),
                status: self.status,
                attempts: self.attempts,
                duration_ms,
                request_id: std::mem::take(&mut self.request_id),
            };
            telemetry.record_request(record, self.upstream_duration);
            return;
        }
        self.log_event(duration_ms, bytes_out, complete);
    }

    /// A request that never had a response (its client went away, or shutdown cut it):
    /// logged and counted with status 0, as docs/metrics.md says.
    fn abandoned(&mut self) {
        self.finish(0, false);
    }

    fn end_trace(&mut self) {
        if let Some(trace) = self.trace.take() {
            trace.finish(&Outcome {
                status: self.status,
                attempts: self.attempts,
                error: self.error,
                client: self.client.or(Some(self.peer.ip())),
            });
        }
    }

    fn log_event(&self, duration_ms: f64, bytes_out: u64, complete: bool) {
        let upstream_ms = self.upstream_duration.map(millis);
        tracing::info!(
            target: "azgate::access",
            peer = %self.peer,
            client = self.client.map(tracing::field::display),
            client_cert = self.client_subject.as_deref(),
            method = %self.method,
            route = self.route.as_deref(),
            path = %self.path,
            status = self.status,
            duration_ms,
            upstream_ms,
            bytes_in = self.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            request_id = %self.request_id,
            trace_id = self.trace_id.map(tracing::field::display),
            upstream_request_id = self.upstream_request_id.as_deref(),
            error = self.error,
            attempts = self.attempts,
            complete,
            "request"
        );
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        if !self.emitted {
            self.abandoned();
        }
    }
}

/// Milliseconds with microsecond precision: `2439.108`, not the float noise of
/// `as_secs_f64() * 1000.0` (`2439.1080230000002`). Dividing a whole number of microseconds
/// gives the double nearest to the three-decimal value, which prints as exactly that.
pub fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_with_at_most_three_decimals() {
        // (duration, as the pretty log prints it, as the JSON log prints it)
        let cases = [
            (Duration::new(2, 439_108_023), "2439.108", "2439.108"),
            (Duration::from_nanos(1_999), "0.001", "0.001"),
            (Duration::from_nanos(999), "0", "0.0"),
            (Duration::from_millis(120), "120", "120.0"),
            (
                Duration::from_micros(100_000_001),
                "100000.001",
                "100000.001",
            ),
            (Duration::from_micros(7_654_321), "7654.321", "7654.321"),
        ];
        for (duration, pretty, json) in cases {
            assert_eq!(millis(duration).to_string(), pretty, "{duration:?}");
            assert_eq!(serde_json::json!(millis(duration)).to_string(), json);
        }
    }
}
