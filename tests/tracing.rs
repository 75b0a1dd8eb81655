//! Distributed tracing (issue 18): W3C trace context through azgate and its spans over
//! OTLP/HTTP, received by a real collector (`support::otlp`) that decodes the protobuf.
//! Spans are read after azgate stops: its shutdown flushes the export pipeline.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use support::otlp::{CLIENT, Collector, INTERNAL, ReceivedSpan, SERVER, Silent};
use support::scripted::{Scripted, reply};
use support::{Azgate, MockUpstream, client, config_text};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one span {name:?} in {spans:#?}");
    found[0]
}

fn traceparent_of(span: &ReceivedSpan) -> String {
    format!("00-{}-{}-01", span.trace_id, span.span_id)
}

async fn start(collector: &Collector, routes: &str, telemetry_extra: &str) -> Azgate {
    let text = config_text(&format!(
        "{routes}\n{}",
        collector.telemetry(telemetry_extra)
    ));
    Azgate::start_with(&text, Path::new("."), &HashMap::new()).await
}

#[tokio::test]
async fn a_plain_request_is_a_server_span_with_one_client_span_named_upstream() {
    let collector = Collector::start().await;
    let upstream = Scripted::start(vec![reply(200)]).await;
    let routes = format!(
        "[[routes]]\nprefix = \"/echo\"\nupstream = \"{}\"\n",
        upstream.url
    );
    let gw = start(&collector, &routes, "").await;
    let response = client()
        .get(format!(
            "{}/echo/items?api-version=1&sig=s3cret-SIG",
            gw.url
        ))
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .header("tracestate", "vendor=opaque")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    gw.stop().await;

    let spans = collector.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = one(&spans, "GET /echo");
    assert_eq!(server.kind, SERVER);
    assert_eq!(
        (server.trace_id.as_str(), server.parent_span_id.as_str()),
        (TRACE, PARENT)
    );
    for (key, value) in [
        ("http.request.method", "GET"),
        ("url.path", "/echo/items"),
        ("url.query", "api-version=1&sig=REDACTED"),
        ("url.scheme", "http"),
        ("http.route", "/echo"),
        ("azgate.route", "/echo"),
        ("http.response.status_code", "200"),
        ("client.address", "127.0.0.1"),
        ("azgate.attempts", "1"),
    ] {
        assert_eq!(server.attr(key), Some(value), "{key} in {server:#?}");
    }
    assert_eq!(
        server.resource.get("service.name").map(String::as_str),
        Some("azgate")
    );

    let attempt = one(&spans, "GET");
    assert_eq!(attempt.kind, CLIENT);
    assert_eq!(attempt.trace_id, TRACE);
    assert_eq!(attempt.parent_span_id, server.span_id);
    let port = upstream.url.rsplit(':').next().unwrap();
    for (key, value) in [
        (
            "url.full",
            format!("{}/items?api-version=1&sig=REDACTED", upstream.url),
        ),
        ("server.address", "127.0.0.1".to_string()),
        ("server.port", port.to_string()),
        ("http.response.status_code", "200".to_string()),
    ] {
        assert_eq!(attempt.attr(key), Some(value.as_str()), "{key}");
    }
    assert_eq!(attempt.attr("http.request.resend_count"), None);

    // The upstream's parent is the attempt's client span; tracestate passes on.
    let seen = &upstream.seen()[0];
    assert_eq!(
        seen.headers["traceparent"],
        traceparent_of(attempt).as_str()
    );
    assert_eq!(seen.headers["tracestate"], "vendor=opaque");
}

#[tokio::test]
async fn a_retried_request_has_a_client_span_per_attempt_with_resend_counts() {
    let collector = Collector::start().await;
    let upstream =
        Scripted::start(vec![reply(504).header("retry-after-ms", "1"), reply(200)]).await;
    let routes = format!(
        "[[routes]]\nprefix = \"/r\"\nupstream = \"{}\"\n",
        upstream.url
    );
    let gw = start(&collector, &routes, "").await;
    let response = client()
        .get(format!("{}/r/x", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    gw.stop().await;

    let spans = collector.spans();
    let server = one(&spans, "GET /r");
    assert_eq!(
        server.parent_span_id, "",
        "a new trace: the server span is its root"
    );
    assert_eq!(server.attr("azgate.attempts"), Some("2"));
    let mut attempts: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.kind == CLIENT).collect();
    attempts.sort_by_key(|s| {
        s.attr("http.request.resend_count")
            .unwrap_or("0")
            .to_string()
    });
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    assert_eq!(attempts[0].attr("http.response.status_code"), Some("504"));
    assert_eq!(attempts[0].attr("error.type"), Some("504"));
    assert_eq!(attempts[0].attr("http.request.resend_count"), None);
    assert_eq!(attempts[1].attr("http.response.status_code"), Some("200"));
    assert_eq!(attempts[1].attr("http.request.resend_count"), Some("1"));
    for (attempt, seen) in attempts.iter().zip(upstream.seen()) {
        assert_eq!(attempt.parent_span_id, server.span_id);
        assert_eq!(
            seen.headers["traceparent"],
            traceparent_of(attempt).as_str()
        );
    }
}

/// A cold token fetch and a 401 replay: each wait for a token is a span, the fetch it
/// started is a span under it, and no token, secret or redacted value is in any span.
#[tokio::test]
async fn token_waits_and_fetches_are_spans_and_no_secret_reaches_any_span() {
    let collector = Collector::start().await;
    let entra = support::entra::MockEntra::start().await;
    // 401 to the first token: azgate drops it, fetches another and replays once.
    let upstream = Scripted::start(vec![reply(401), reply(200)]).await;
    let routes = support::entra::arm_route(&format!("{}/token", entra.url), &upstream.url, "");
    let gw = start(
        &collector,
        &routes,
        "[telemetry.otlp_headers]\napi-key = \"otlp-KEY-1\"",
    )
    .await;
    let response = client()
        .get(format!(
            "{}/arm/subscriptions?accessToken=client-TOKEN-9",
            gw.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    gw.stop().await;

    let spans = collector.spans();
    let server = one(&spans, "GET /arm");
    assert_eq!(server.attr("azgate.credential"), Some("arm"));
    assert_eq!(server.attr("azgate.attempts"), Some("2"));
    let waits: Vec<_> = spans.iter().filter(|s| s.name == "token wait").collect();
    let fetches: Vec<_> = spans.iter().filter(|s| s.name == "token fetch").collect();
    assert_eq!((waits.len(), fetches.len()), (2, 2), "{spans:#?}");
    for wait in &waits {
        assert_eq!(wait.kind, INTERNAL);
        assert_eq!(wait.parent_span_id, server.span_id);
        assert_eq!(wait.attr("azgate.credential"), Some("arm"));
    }
    // The cold fetch runs under the first wait; the second was started by the 401 that
    // dropped the token, under the request itself, and the replay's wait joined it.
    let under_wait = |f: &&&ReceivedSpan| waits.iter().any(|w| w.span_id == f.parent_span_id);
    assert_eq!(fetches.iter().filter(under_wait).count(), 1, "{spans:#?}");
    for fetch in &fetches {
        assert!(
            waits.iter().any(|w| w.span_id == fetch.parent_span_id)
                || fetch.parent_span_id == server.span_id,
            "{fetch:#?}"
        );
        assert_eq!(fetch.attr("azgate.credential"), Some("arm"));
        assert!(fetch.attr("azgate.token_source").is_some());
    }
    let attempts: Vec<_> = spans.iter().filter(|s| s.kind == CLIENT).collect();
    let statuses: Vec<_> = attempts
        .iter()
        .map(|a| a.attr("http.response.status_code").unwrap())
        .collect();
    assert_eq!(statuses.len(), 2);
    assert!(statuses.contains(&"401") && statuses.contains(&"200"));

    // The export carried the configured header to the collector.
    assert_eq!(
        server.headers.get("api-key").map(String::as_str),
        Some("otlp-KEY-1")
    );
    // Nothing secret anywhere: tokens issued, the client secret, the client's query
    // token, the collector's key.
    for span in &spans {
        for text in span.strings() {
            for secret in [
                "token-1",
                "token-2",
                "s3cret-SECRET",
                "client-TOKEN-9",
                "otlp-KEY-1",
            ] {
                assert!(
                    !text.contains(secret),
                    "{secret} in span {}: {text}",
                    span.name
                );
            }
        }
    }
}

#[tokio::test]
async fn a_failed_token_fetch_marks_its_span() {
    let collector = Collector::start().await;
    let upstream = Scripted::start(vec![reply(200)]).await;
    // Nothing answers the token endpoint.
    let (_held, port) = support::refused_port();
    let routes = support::entra::arm_route(
        &format!("http://127.0.0.1:{port}/token"),
        &upstream.url,
        "timeout = \"2s\"",
    );
    let gw = start(&collector, &routes, "").await;
    let response = client()
        .get(format!("{}/arm/subscriptions", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    gw.stop().await;

    let spans = collector.spans();
    let fetch = spans
        .iter()
        .find(|s| s.name == "token fetch")
        .unwrap_or_else(|| panic!("no token fetch span in {spans:#?}"));
    assert_eq!(fetch.attr("error.type"), Some("credential_unavailable"));
    assert_eq!(
        one(&spans, "GET /arm").attr("error.type"),
        Some("credential_unavailable")
    );
}

#[tokio::test]
async fn a_wait_in_a_throttle_hold_is_a_span() {
    let collector = Collector::start().await;
    let upstream =
        Scripted::start(vec![reply(429).header("retry-after-ms", "200"), reply(200)]).await;
    let routes = format!(
        "[[routes]]\nprefix = \"/held\"\nupstream = \"{}\"\n[routes.throttle]\nhold = true\n",
        upstream.url
    );
    let gw = start(&collector, &routes, "").await;
    let response = client()
        .get(format!("{}/held/x", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    gw.stop().await;

    let spans = collector.spans();
    let server = one(&spans, "GET /held");
    let hold = one(&spans, "throttle hold");
    assert_eq!(hold.parent_span_id, server.span_id);
    assert_eq!(hold.attr("azgate.route"), Some("/held"));
    assert_eq!(spans.iter().filter(|s| s.kind == CLIENT).count(), 2);
}

#[tokio::test]
async fn new_traces_follow_sample_ratio_and_a_sampled_parent_is_always_followed() {
    let collector = Collector::start().await;
    let upstream = Scripted::start(vec![reply(200)]).await;
    let routes = format!(
        "[[routes]]\nprefix = \"/s\"\nupstream = \"{}\"\n",
        upstream.url
    );
    let gw = start(&collector, &routes, "sample_ratio = 0.0").await;
    let get = |traceparent: Option<String>| {
        let mut request = client().get(format!("{}/s/x", gw.url));
        if let Some(value) = traceparent {
            request = request.header("traceparent", value);
        }
        request.send()
    };
    assert_eq!(get(None).await.unwrap().status(), 200);
    let unsampled = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let sampled = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    get(Some(format!("00-{unsampled}-{PARENT}-00")))
        .await
        .unwrap();
    get(Some(format!("00-{sampled}-{PARENT}-01")))
        .await
        .unwrap();
    gw.stop().await;

    let spans = collector.spans();
    assert!(!spans.is_empty());
    assert!(
        spans.iter().all(|s| s.trace_id == sampled),
        "only the sampled parent's trace is recorded: {spans:#?}"
    );
    // Unrecorded requests still pass a trace context on, marked not sampled.
    let seen = upstream.seen();
    let first = seen[0].headers["traceparent"].to_str().unwrap();
    assert!(
        first.starts_with("00-") && first.ends_with("-00"),
        "{first}"
    );
    let second = seen[1].headers["traceparent"].to_str().unwrap();
    assert!(second.starts_with(&format!("00-{unsampled}-")) && second.ends_with("-00"));
    assert!(
        !second.contains(PARENT),
        "azgate's span is the upstream's parent"
    );
}

/// The standard variables, in-process (the server's `Env`): endpoint, service name,
/// resource attributes, headers, sampler; and a `[telemetry]` key wins over its variable.
#[tokio::test]
async fn standard_variables_are_honoured_and_config_keys_win() {
    let collector = Collector::start().await;
    let upstream = Scripted::start(vec![reply(200)]).await;
    let routes = format!(
        "[[routes]]\nprefix = \"/v\"\nupstream = \"{}\"\n",
        upstream.url
    );
    let env = HashMap::from([
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()),
        ("OTEL_SERVICE_NAME", "from-env"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-team=platform,api-key=env-key",
        ),
        ("OTEL_TRACES_SAMPLER", "always_on"),
    ]);
    let text = config_text(&format!(
        "{routes}\n[telemetry]\n[telemetry.otlp_headers]\napi-key = \"config-key\"\n"
    ));
    let gw = Azgate::start_with(&text, Path::new("."), &env).await;
    client()
        .get(format!("{}/v/x", gw.url))
        .send()
        .await
        .unwrap();
    gw.stop().await;

    let spans = collector.spans();
    let server = one(&spans, "GET /v");
    assert_eq!(
        server.resource.get("service.name").map(String::as_str),
        Some("from-env")
    );
    assert_eq!(
        server
            .resource
            .get("deployment.environment")
            .map(String::as_str),
        Some("test")
    );
    assert_eq!(
        server.headers.get("x-team").map(String::as_str),
        Some("platform")
    );
    assert_eq!(
        server.headers.get("api-key").map(String::as_str),
        Some("config-key")
    );
}

/// The real binary, configured by nothing but the process environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exports_to_the_collector_the_environment_names() {
    let collector = Collector::start().await;
    let upstream = Scripted::start(vec![reply(200)]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("azgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"\"\n[log]\nformat = \"json\"\n\
             [[routes]]\nprefix = \"/b\"\nupstream = \"{}\"\n",
            upstream.url
        ),
    )
    .unwrap();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.clone()),
        ("OTEL_SERVICE_NAME", "binary-env".to_string()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".to_string()),
    ];
    let mut serve =
        tokio::task::spawn_blocking(move || support::binary::Serve::start_with_env(&config, &env))
            .await
            .unwrap();
    let response = client()
        .get(format!("{}/b/x", serve.proxy))
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    serve.signal("TERM");
    let exited = tokio::task::spawn_blocking(move || {
        let status = serve.exit_within(Duration::from_secs(20));
        (status, serve)
    })
    .await
    .unwrap();
    assert!(exited.0.is_some(), "azgate exits after SIGTERM");
    let spans = collector.spans();
    let server = one(&spans, "GET /b");
    assert_eq!(server.trace_id, TRACE);
    assert_eq!(
        server.resource.get("service.name").map(String::as_str),
        Some("binary-env")
    );
    assert!(
        server.headers["content-type"].contains("json"),
        "OTEL_EXPORTER_OTLP_PROTOCOL=http/json: {:?}",
        server.headers
    );
}

/// A collector that takes connections and never answers costs requests nothing, export
/// failures are counted, and shutdown stays bounded. (The latency figure is in
/// bench/README.md; the bound here only catches a request that waits for the export.)
#[tokio::test]
async fn a_hung_collector_never_delays_requests() {
    let silent = Silent::start().await;
    let upstream = MockUpstream::echo().await;
    let text = config_text(&format!(
        "[[routes]]\nprefix = \"/h\"\nupstream = \"{}\"\n[telemetry]\notlp_endpoint = \"{}\"\n",
        upstream.url, silent.url
    ));
    let gw = Azgate::start_with(&text, Path::new("."), &HashMap::new()).await;
    let http = client();
    let started = Instant::now();
    for _ in 0..200 {
        let response = http.get(format!("{}/h/x", gw.url)).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "200 requests took {:?}",
        started.elapsed()
    );
    let server = gw.into_server();
    server.shutdown();
    let stopping = Instant::now();
    server.wait().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(12),
        "{:?}",
        stopping.elapsed()
    );
}

/// A collector that refuses connections: each failed export is counted.
#[tokio::test]
async fn failed_exports_are_counted() {
    let (_bound, port) = support::refused_port();
    let upstream = MockUpstream::echo().await;
    let text = config_text(&format!(
        "[[routes]]\nprefix = \"/f\"\nupstream = \"{}\"\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\n",
        upstream.url
    ));
    let gw = Azgate::start_with(&text, Path::new("."), &HashMap::new()).await;
    client()
        .get(format!("{}/f/x", gw.url))
        .send()
        .await
        .unwrap();
    let server = gw.into_server();
    let telemetry = server.telemetry.clone();
    server.shutdown();
    server.wait().await;
    let metrics = telemetry.encode();
    assert!(
        metrics.contains("azgate_otlp_export_failures_total 1"),
        "{metrics}"
    );
}

/// Without an endpoint nothing is exported, the traceparent goes upstream as the client
/// sent it, and error bodies still name the client's trace.
#[tokio::test]
async fn without_an_endpoint_trace_context_passes_through_and_errors_name_the_trace() {
    let upstream = Scripted::start(vec![reply(200)]).await;
    let routes = format!(
        "[[routes]]\nprefix = \"/p\"\nupstream = \"{}\"\n",
        upstream.url
    );
    let gw = Azgate::start(&routes).await;
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    client()
        .get(format!("{}/p/x", gw.url))
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(
        upstream.seen()[0].headers["traceparent"],
        traceparent.as_str()
    );
    let missing = client()
        .get(format!("{}/nowhere", gw.url))
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body = support::json(missing).await;
    assert_eq!(body["error"]["trace_id"], TRACE);
    let plain = client()
        .get(format!("{}/nowhere", gw.url))
        .send()
        .await
        .unwrap();
    assert!(
        support::json(plain).await["error"]
            .get("trace_id")
            .is_none()
    );
    gw.stop().await;
}
