//! The "log + metrics" phase's memory: Prometheus metrics (an explicit registry), the last
//! requests for the status page, and per-route latency samples. One `Telemetry` lives for
//! the whole process, across config reloads, so counters never restart on a reload.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

mod collectors;
mod labels;
mod seeding;
pub use collectors::{Scraped, TokenSample};
use collectors::{Source, ThrottleCollector, TokenCollector, VendCollector};
use labels::*;

/// Requests kept for the status page's history.
const HISTORY: usize = 50;
/// Latency samples kept per route for the status page's p50/p99.
const SAMPLES: usize = 1024;
/// Request duration buckets, in seconds: 5 ms to 2 min, covering ARM's long calls.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// One finished request, as the status page lists it. The path is already redacted.
#[derive(Clone, Debug, Serialize)]
pub struct RequestRecord {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// The method, or `other` for a non-standard one.
    pub method: &'static str,
    pub route: Option<Arc<str>>,
    pub path: String,
    pub status: u16,
    pub attempts: u32,
    pub duration_ms: f64,
    pub request_id: String,
}

/// Per-route counts and latency for the status page.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RouteSummary {
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// A route's figures for the status page, and its metric handles: found in the families
/// once, not looked up (a lock and a SipHash of the labels each) three times per request.
/// A handle shares its value with the family's entry, so `/metrics` shows the same series.
struct RouteSamples {
    requests: u64,
    errors: u64,
    durations_ms: VecDeque<f64>,
    request_duration: Histogram,
    upstream_duration: Histogram,
    /// `azgate_requests_total` by method and status, in the order first seen; a route
    /// sees a handful of pairs.
    counters: Vec<(&'static str, u16, Counter)>,
}

pub struct Telemetry {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    upstream_duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    inflight: Gauge,
    retries: Family<RetryLabels, Counter>,
    reloads: Family<OutcomeLabel, Counter>,
    failovers: Family<CredentialLabel, Counter>,
    /// Same labels as retries: route and reason.
    rewrite_skipped: Family<RetryLabels, Counter>,
    vend_requests: Family<VendLabels, Counter>,
    throttle_holds: Family<RouteLabel, Counter>,
    throttled: Family<RouteOutcome, Counter>,
    ratelimit_remaining: Family<HeaderLabels, Gauge>,
    otlp_export_failures: Counter,
    connections: Gauge,
    /// Open connections waiting for a request with no HTTP state held.
    idle_connections: Gauge,
    handshake_failures: Family<HandshakeLabels, Counter>,
    certificate_expiry: Family<ListenerLabel, Gauge<f64, AtomicU64>>,
    scraped: Source,
    history: Mutex<VecDeque<RequestRecord>>,
    routes: Mutex<HashMap<Arc<str>, RouteSamples>>,
    /// The `route` label of requests that matched no route.
    no_route: Arc<str>,
    started: SystemTime,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

impl Telemetry {
    pub fn new() -> Arc<Self> {
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration =
            Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        let upstream_duration =
            Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        let inflight = Gauge::default();
        let retries = Family::<RetryLabels, Counter>::default();
        let reloads = Family::<OutcomeLabel, Counter>::default();
        let connections = Gauge::default();
        let idle_connections = Gauge::default();
        let failovers = Family::<CredentialLabel, Counter>::default();
        let handshake_failures = Family::<HandshakeLabels, Counter>::default();
        let certificate_expiry = Family::<ListenerLabel, Gauge<f64, AtomicU64>>::default();
        let rewrite_skipped = Family::<RetryLabels, Counter>::default();
        let scraped: Source = Arc::new(OnceLock::new());

        let mut registry = Registry::with_prefix("azgate");
        registry.register(
            "requests",
            "Requests answered, by route prefix, method and status",
            Listed(requests.clone()),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of the response body",
            Listed(request_duration.clone()),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time from the first upstream attempt to the final response headers",
            Listed(upstream_duration.clone()),
        );
        registry.register(
            "inflight_requests",
            "Requests being served",
            Listed(inflight.clone()),
        );
        registry.register(
            "retries",
            "Upstream retries, by route and reason",
            Listed(retries.clone()),
        );
        registry.register(
            "config_reloads",
            "Config reloads, by outcome",
            Listed(reloads.clone()),
        );
        registry.register(
            "connections_open",
            "Client connections open",
            Listed(connections.clone()),
        );
        registry.register(
            "connections_idle",
            "Client connections waiting for a request, holding no HTTP buffers",
            Listed(idle_connections.clone()),
        );
        registry.register(
            "key_failovers",
            "Switches from a refused primary subscription key to the secondary",
            Listed(failovers.clone()),
        );
        registry.register(
            "link_rewrite_skipped",
            "Response bodies of routes with rewrite_body_links passed on without rewriting, by route and reason (too_large, compressed, not_json)",
            Listed(rewrite_skipped.clone()),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed, by listener and reason",
            Listed(handshake_failures.clone()),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the certificate chain each listener serves expires (Unix time)",
            Listed(certificate_expiry.clone()),
        );
        let vend_requests = Family::<VendLabels, Counter>::default();
        registry.register(
            "vend_requests",
            "Token requests on vending routes, by route, scope (account, project, video) and outcome (hit, miss, refused, error)",
            Listed(vend_requests.clone()),
        );
        let throttle_holds = Family::<RouteLabel, Counter>::default();
        registry.register(
            "throttle_holds",
            "Hold windows opened on a route by the upstream's 429 (or 503 with Retry-After)",
            Listed(throttle_holds.clone()),
        );
        let throttled = Family::<RouteOutcome, Counter>::default();
        registry.register(
            "throttled",
            "Requests that met a hold, by route and outcome (queued: waited it out; rejected: answered 429 throttled)",
            Listed(throttled.clone()),
        );
        let ratelimit_remaining = Family::<HeaderLabels, Gauge>::default();
        registry.register(
            "upstream_ratelimit_remaining",
            "Requests left in the upstream's quota, from the last response that carried each x-ms-ratelimit-remaining-* header",
            Listed(ratelimit_remaining.clone()),
        );
        let otlp_export_failures = Counter::default();
        registry.register(
            "otlp_export_failures",
            "Batches of spans the OTLP collector did not take (refused, unreachable or too slow); their spans are dropped",
            Listed(otlp_export_failures.clone()),
        );
        registry.register_collector(Box::new(TokenCollector(scraped.clone())));
        registry.register_collector(Box::new(VendCollector(scraped.clone())));
        registry.register_collector(Box::new(ThrottleCollector(scraped.clone())));
        Arc::new(Self {
            registry,
            requests,
            request_duration,
            upstream_duration,
            inflight,
            retries,
            reloads,
            failovers,
            rewrite_skipped,
            vend_requests,
            throttle_holds,
            throttled,
            ratelimit_remaining,
            otlp_export_failures,
            connections,
            idle_connections,
            handshake_failures,
            certificate_expiry,
            scraped,
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            routes: Mutex::new(HashMap::new()),
            no_route: Arc::from("none"),
            started: SystemTime::now(),
        })
    }

    /// Lets the scrape-time metrics read the state in service (set once, at start).
    pub fn attach(&self, scraped: Arc<dyn Scraped>) {
        let _ = self.scraped.set(scraped);
    }

    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Counts a request in flight until the guard drops.
    pub fn inflight(self: &Arc<Self>) -> InflightGuard {
        self.inflight.inc();
        InflightGuard(self.clone())
    }

    /// Requests in flight now (those whose access-log line is not written yet).
    pub fn inflight_requests(&self) -> i64 {
        self.inflight.get()
    }

    /// Counts an open client connection until the guard drops.
    pub fn connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.inc();
        ConnectionGuard(self.clone())
    }

    /// Counts a client connection as idle (parked, or not yet sent a byte) until the guard
    /// drops.
    pub fn idle_connection(self: &Arc<Self>) -> IdleGuard {
        self.idle_connections.inc();
        IdleGuard(self.clone())
    }

    /// Records a finished request (from the access log).
    pub fn record_request(&self, record: RequestRecord, upstream: Option<Duration>) {
        let route = record.route.as_ref().unwrap_or(&self.no_route);
        {
            let mut routes = lock(&self.routes);
            let samples = match routes.get_mut(route) {
                Some(samples) => samples,
                None => routes
                    .entry(route.clone())
                    .or_insert_with(|| self.route_samples(route)),
            };
            let (method, status) = (record.method, record.status);
            match samples
                .counters
                .iter()
                .find(|(m, s, _)| *s == status && *m == method)
            {
                Some((_, _, counter)) => {
                    counter.inc();
                }
                None => {
                    let labels = RequestLabels {
                        route: route.clone(),
                        method,
                        status,
                    };
                    let counter = self.requests.get_or_create_owned(&labels);
                    counter.inc();
                    samples.counters.push((method, status, counter));
                }
            }
            samples
                .request_duration
                .observe(record.duration_ms / 1000.0);
            if let Some(upstream) = upstream {
                samples.upstream_duration.observe(upstream.as_secs_f64());
            }
            samples.requests += 1;
            if record.status >= 400 {
                samples.errors += 1;
            }
            if samples.durations_ms.len() == SAMPLES {
                samples.durations_ms.pop_front();
            }
            samples.durations_ms.push_back(record.duration_ms);
        }
        let mut history = lock(&self.history);
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(record);
    }

    fn route_samples(&self, route: &Arc<str>) -> RouteSamples {
        let label = RouteLabel {
            route: route.clone(),
        };
        RouteSamples {
            requests: 0,
            errors: 0,
            durations_ms: VecDeque::new(),
            request_duration: self.request_duration.get_or_create_owned(&label),
            upstream_duration: self.upstream_duration.get_or_create_owned(&label),
            counters: Vec::new(),
        }
    }

    pub fn record_retry(&self, route: &Arc<str>, reason: &'static str) {
        self.retries
            .get_or_create(&RetryLabels {
                route: route.clone(),
                reason,
            })
            .inc();
    }

    pub fn record_link_rewrite_skipped(&self, route: &Arc<str>, reason: &'static str) {
        self.rewrite_skipped
            .get_or_create(&RetryLabels {
                route: route.clone(),
                reason,
            })
            .inc();
    }

    pub fn record_failover(&self, credential: &str) {
        self.failovers
            .get_or_create(&CredentialLabel {
                credential: credential.to_string(),
            })
            .inc();
    }

    /// Counts a failed TLS handshake; `reason` is one of a small fixed set.
    pub fn record_handshake_failure(&self, listener: &'static str, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&HandshakeLabels { listener, reason })
            .inc();
    }

    /// Sets when the certificate chain served on `listener` expires.
    pub fn set_certificate_expiry(&self, listener: &'static str, not_after: SystemTime) {
        let at = not_after.duration_since(UNIX_EPOCH).unwrap_or_default();
        self.certificate_expiry
            .get_or_create(&ListenerLabel { listener })
            .set(at.as_secs_f64());
    }

    /// Counts a request that hyper's parser refused before azgate saw it (its head was
    /// over the parser's limit): `azgate_requests_total{route="none",method="other"}`,
    /// since neither is known.
    pub fn record_refused_head(&self, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: self.no_route.clone(),
                method: "other",
                status,
            })
            .inc();
    }

    /// A batch of spans the collector did not take.
    pub fn record_otlp_export_failure(&self) {
        self.otlp_export_failures.inc();
    }

    pub fn record_reload(&self, ok: bool) {
        let outcome = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The most recent requests, newest first.
    pub fn history(&self) -> Vec<RequestRecord> {
        lock(&self.history).iter().rev().cloned().collect()
    }

    /// Counts and latency percentiles per route prefix.
    pub fn route_summaries(&self) -> BTreeMap<String, RouteSummary> {
        lock(&self.routes)
            .iter()
            .map(|(route, s)| {
                let route = route.to_string();
                let mut sorted: Vec<f64> = s.durations_ms.iter().copied().collect();
                sorted.sort_by(f64::total_cmp);
                let summary = RouteSummary {
                    requests: s.requests,
                    errors: s.errors,
                    p50_ms: percentile(&sorted, 0.50),
                    p99_ms: percentile(&sorted, 0.99),
                };
                (route, summary)
            })
            .collect()
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("cannot encode metrics: {err}");
        }
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bounded label values: the standard methods by name, anything else as `other`.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "other",
    }
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[derive(Debug)]
pub struct InflightGuard(Arc<Telemetry>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.dec();
    }
}

#[derive(Debug)]
pub struct ConnectionGuard(Arc<Telemetry>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

#[derive(Debug)]
pub struct IdleGuard(Arc<Telemetry>);

impl Drop for IdleGuard {
    fn drop(&mut self) {
        self.0.idle_connections.dec();
    }
}

/// A registered metric whose HELP and TYPE lines are shown before its first sample (the
/// registry leaves empty families out), so scrapers and dashboards see every family azgate
/// has from the start.
#[derive(Debug)]
struct Listed<M>(M);

impl<M: EncodeMetric> EncodeMetric for Listed<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(route: Option<&str>, method: &'static str, status: u16, ms: f64) -> RequestRecord {
        RequestRecord {
            at_ms: 0,
            method,
            route: route.map(Arc::from),
            path: "/x".into(),
            status,
            attempts: 1,
            duration_ms: ms,
            request_id: "id".into(),
        }
    }

    fn line<'a>(text: &'a str, start: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(start))
    }

    /// The handles a route keeps are the families' own series: what they count is what
    /// `/metrics` shows, per route, method and status, whichever pair came first.
    #[test]
    fn cached_route_handles_count_into_the_exported_series() {
        let telemetry = Telemetry::new();
        let a = Some("/a");
        telemetry.record_request(record(a, "GET", 200, 5.0), Some(Duration::from_millis(4)));
        telemetry.record_request(record(a, "POST", 405, 1.0), None);
        telemetry.record_request(record(a, "GET", 200, 7.0), Some(Duration::from_millis(6)));
        telemetry.record_request(record(a, "GET", 503, 9.0), Some(Duration::from_millis(8)));
        telemetry.record_request(record(None, "GET", 404, 1.0), None);
        telemetry.record_request(record(Some("/b"), "GET", 200, 2.0), None);
        let text = telemetry.encode();
        for (series, value) in [
            (
                r#"azgate_requests_total{route="/a",method="GET",status="200"}"#,
                "2",
            ),
            (
                r#"azgate_requests_total{route="/a",method="POST",status="405"}"#,
                "1",
            ),
            (
                r#"azgate_requests_total{route="/a",method="GET",status="503"}"#,
                "1",
            ),
            (
                r#"azgate_requests_total{route="none",method="GET",status="404"}"#,
                "1",
            ),
            (
                r#"azgate_requests_total{route="/b",method="GET",status="200"}"#,
                "1",
            ),
            (r#"azgate_request_duration_seconds_count{route="/a"}"#, "4"),
            (
                r#"azgate_request_duration_seconds_sum{route="/a"}"#,
                "0.022",
            ),
            (r#"azgate_upstream_duration_seconds_count{route="/a"}"#, "3"),
            (r#"azgate_request_duration_seconds_count{route="/b"}"#, "1"),
        ] {
            let found = line(&text, &format!("{series} "))
                .unwrap_or_else(|| panic!("no {series} in\n{text}"));
            assert_eq!(found, format!("{series} {value}"), "{text}");
        }
        assert!(
            line(
                &text,
                r#"azgate_upstream_duration_seconds_count{route="/b"}"#
            )
            .is_none_or(|l| l.ends_with(" 0"))
        );
        let summaries = telemetry.route_summaries();
        assert_eq!((summaries["/a"].requests, summaries["/a"].errors), (4, 2));
    }
}
