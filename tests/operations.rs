//! Operations: admin endpoints and status codes, metrics with exact counts after a known
//! sequence, /status.json, readiness from credential health, hot reload (in-process, by
//! SIGHUP and by file rename), and the drain.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::entra::MockEntra;
use support::metrics::{get, samples};
use support::scripted::{Scripted, reply};
use support::{Azgate, MockUpstream, body_text, client, status};

fn client_secret(name: &str, entra: &MockEntra, client_id: &str) -> String {
    format!(
        r#"
        [credentials.{name}]
        type = "client_secret"
        tenant = "contoso"
        client_id = "{client_id}"
        client_secret = "s3cret-value"
        scope = "https://management.azure.com/.default"
        token_url = "{}/contoso/oauth2/v2.0/token"
        "#,
        entra.url
    )
}

/// The `Accept` header Prometheus scrapes with.
const PROMETHEUS_ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[tokio::test]
async fn metrics_are_negotiated_and_every_family_is_there_from_the_start() {
    let upstream = MockUpstream::echo().await;
    let gw = Azgate::start(&format!(
        "[credentials.apim]\ntype = \"subscription_key\"\nkey = \"primary-key-1\"\nsecondary_key = \"secondary-key-2\"\n\
         [[routes]]\nprefix = \"/r\"\nupstream = \"{u}\"\ncredential = \"apim\"\nrewrite_body_links = true\n\
         [routes.retry]\non = [429, 503]\n",
        u = upstream.url
    ))
    .await;
    let admin = gw.admin_url.clone().unwrap();
    let c = client();
    let scrape = |accept: Option<&'static str>| {
        let mut request = c.get(format!("{admin}/metrics"));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        async move {
            let response = request.send().await.unwrap();
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_string();
            assert_eq!(response.headers()["vary"], "accept");
            (content_type, response.text().await.unwrap())
        }
    };

    // Classic scrapers (text/plain), curl (*/*) and clients that send no Accept: 0.0.4.
    for accept in [Some("text/plain"), Some("*/*"), None] {
        let (content_type, text) = scrape(accept).await;
        assert_eq!(
            content_type, "text/plain; version=0.0.4; charset=utf-8",
            "{accept:?}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        // Families with no sample yet still have their HELP and TYPE.
        for line in [
            "# TYPE azgate_requests_total counter",
            "# TYPE azgate_request_duration_seconds histogram",
            "# TYPE azgate_inflight_requests gauge",
            "# HELP azgate_retries_total ",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        // A classic parser types the counters as counters, and the label sets known from
        // the config are there at 0 before their first event.
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        let counter = |name: &str, labels: &[(&str, &str)]| {
            let sample = scrape
                .samples
                .iter()
                .find(|s| {
                    s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
                })
                .unwrap_or_else(|| panic!("no {name}{labels:?} in:\n{text}"));
            match sample.value {
                prometheus_parse::Value::Counter(v) => v,
                ref other => panic!("{name} is typed {other:?}, not a counter"),
            }
        };
        for reason in ["429", "status", "connection"] {
            assert_eq!(
                counter(
                    "azgate_retries_total",
                    &[("route", "/r"), ("reason", reason)]
                ),
                0.0
            );
        }
        for reason in ["too_large", "compressed", "not_json"] {
            assert_eq!(
                counter(
                    "azgate_link_rewrite_skipped_total",
                    &[("route", "/r"), ("reason", reason)]
                ),
                0.0
            );
        }
        assert_eq!(
            counter("azgate_key_failovers_total", &[("credential", "apim")]),
            0.0
        );
        for outcome in ["success", "failure"] {
            assert_eq!(
                counter("azgate_config_reloads_total", &[("outcome", outcome)]),
                0.0
            );
        }
    }

    // Prometheus asks for OpenMetrics first, and gets it.
    let (content_type, text) = scrape(Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE azgate_requests counter\n"), "{text}");
    assert!(
        text.contains("azgate_retries_total{route=\"/r\",reason=\"429\"} 0\n"),
        "{text}"
    );
}

#[tokio::test]
async fn admin_endpoints_answer_and_never_proxy() {
    let upstream = MockUpstream::echo().await;
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\n",
        upstream.url
    ))
    .await;
    let admin = gw.admin_url.clone().unwrap();
    let c = client();
    assert_eq!(status(c.get(format!("{admin}/healthz"))).await, 200);
    let ready = c.get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(support::json(ready).await["status"], "ready");
    let metrics = c
        .get(format!("{admin}/metrics"))
        .header("accept", PROMETHEUS_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics-text")
    );
    assert_eq!(status(c.get(format!("{admin}/status.json"))).await, 200);
    let page = c.get(format!("{admin}/status")).send().await.unwrap();
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let post = c.post(format!("{admin}/healthz")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    // A proxied path on the admin listener is just unknown.
    assert_eq!(status(c.get(format!("{admin}/anything/x"))).await, 404);
}

#[tokio::test]
async fn metrics_count_exactly_what_happened() {
    let entra = MockEntra::start().await;
    let echo = MockUpstream::echo().await;
    let flaky = Scripted::start(vec![
        reply(429).header("retry-after", "0"),
        reply(429).header("retry-after", "0"),
        reply(200),
    ])
    .await;
    let gw = Azgate::start(&format!(
        r#"
        {cred}
        [[routes]]
        prefix = "/a"
        upstream = "{echo}"
        methods = ["GET"]
        credential = "arm"
        [[routes]]
        prefix = "/r"
        upstream = "{flaky}"
        "#,
        cred = client_secret("arm", &entra, "app-1"),
        echo = echo.url,
        flaky = flaky.url,
    ))
    .await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(
            status(c.get(format!("{}/a/x?accessToken=SECRET-Q", gw.url))).await,
            200
        );
    }
    assert_eq!(status(c.post(format!("{}/a/x", gw.url))).await, 405);
    assert_eq!(status(c.get(format!("{}/nowhere", gw.url))).await, 404);
    assert_eq!(status(c.get(format!("{}/r/x", gw.url))).await, 200);
    // The access log (and so the metrics) is written when each response body ends.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let text = body_text(c.get(format!("{}/metrics", gw.admin_url.clone().unwrap()))).await;
    let s = samples(&text);
    assert_eq!(
        get(
            &s,
            "azgate_requests_total",
            &[("route", "/a"), ("method", "GET"), ("status", "200")]
        ),
        3.0
    );
    assert_eq!(
        get(
            &s,
            "azgate_requests_total",
            &[("route", "/a"), ("method", "POST"), ("status", "405")]
        ),
        1.0
    );
    assert_eq!(
        get(
            &s,
            "azgate_requests_total",
            &[("route", "none"), ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        get(
            &s,
            "azgate_requests_total",
            &[("route", "/r"), ("method", "GET"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        get(
            &s,
            "azgate_retries_total",
            &[("route", "/r"), ("reason", "429")]
        ),
        2.0
    );
    assert_eq!(
        get(
            &s,
            "azgate_token_fetches_total",
            &[("credential", "arm"), ("outcome", "success")]
        ),
        1.0
    );
    assert_eq!(
        get(
            &s,
            "azgate_token_fetches_total",
            &[("credential", "arm"), ("outcome", "failure")]
        ),
        0.0
    );
    let expiry = get(
        &s,
        "azgate_token_expiry_timestamp_seconds",
        &[("credential", "arm")],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((expiry - (now + 3599.0)).abs() < 10.0, "{expiry} vs {now}");
    assert_eq!(get(&s, "azgate_inflight_requests", &[]), 0.0);
    assert!(
        text.contains("azgate_request_duration_seconds_bucket{le=\"0.005\",route=\"/a\"}")
            || text.contains("route=\"/a\",le=\"0.005\""),
        "{text}"
    );
    assert!(
        text.contains("azgate_request_duration_seconds_count{route=\"/a\"} 4"),
        "{text}"
    );
    assert!(
        text.contains("azgate_upstream_duration_seconds_count{route=\"/r\"} 1"),
        "{text}"
    );
    assert!(text.contains("azgate_connections_open"));
    assert!(
        !text.contains("SECRET-Q") && !text.contains("/a/x"),
        "raw paths never become labels"
    );
}

#[tokio::test]
async fn status_json_shows_routes_credentials_and_recent_requests() {
    let entra = MockEntra::start().await;
    let echo = MockUpstream::echo().await;
    let gw = Azgate::start(&format!(
        "{}\n[[routes]]\nprefix = \"/a\"\nupstream = \"{}\"\ncredential = \"arm\"\n",
        client_secret("arm", &entra, "app-1"),
        echo.url
    ))
    .await;
    let c = client();
    for i in 0..3 {
        c.get(format!("{}/a/item{i}?accessToken=SECRET-Q&x=1", gw.url))
            .header("x-ms-client-request-id", format!("rid-{i}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let response = c
        .get(format!("{}/status.json", gw.admin_url.clone().unwrap()))
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("SECRET-Q") && !text.contains("token-1") && !text.contains("s3cret"),
        "{text}"
    );
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["uptime_seconds"].as_f64().unwrap() >= 0.0);
    let route = &status["routes"][0];
    assert_eq!(route["prefix"], "/a");
    assert_eq!(route["requests"], 3);
    assert_eq!(route["errors"], 0);
    assert!(route["p50_ms"].as_f64().is_some() && route["p99_ms"].as_f64().is_some());
    let credential = &status["credentials"][0];
    assert_eq!(credential["name"], "arm");
    assert_eq!(credential["type"], "client_secret");
    assert_eq!(credential["has_token"], true);
    assert_eq!(credential["fetches"]["success"], 1);
    assert!(credential["expires_at_ms"].as_u64().unwrap() > status["now_ms"].as_u64().unwrap());
    let requests = status["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0]["request_id"], "rid-2", "newest first");
    assert_eq!(requests[0]["path"], "/a/item2?accessToken=REDACTED&x=1");
    assert_eq!(requests[0]["status"], 200);
    assert_eq!(requests[0]["attempts"], 1);
}

#[tokio::test]
async fn readiness_follows_the_credentials_routes_use() {
    let entra = MockEntra::start().await;
    entra.refuse_client_secret();
    let echo = MockUpstream::echo().await;
    let gw = Azgate::start(&format!(
        "{}\n{}\n[[routes]]\nprefix = \"/a\"\nupstream = \"{}\"\ncredential = \"arm\"\n",
        client_secret("arm", &entra, "app-1"),
        client_secret("unused", &entra, "app-2"),
        echo.url
    ))
    .await;
    let admin = gw.admin_url.clone().unwrap();
    let c = client();
    // The first probe starts the first fetch of the credential routes use (not of the
    // unused one), and says so.
    let first = c.get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(first.status(), 503);
    let body = support::json(first).await;
    assert_eq!(body["status"], "starting");
    assert_eq!(body["credentials"], serde_json::json!(["arm"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while entra.call_count() < 1 {
        assert!(std::time::Instant::now() < deadline, "no first fetch");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status(c.get(format!("{}/a/x", gw.url))).await, 502);
    let ready = c.get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = support::json(ready).await;
    assert_eq!(body["credentials"][0]["credential"], "arm");
    assert!(
        body["credentials"][0]["error"]
            .as_str()
            .unwrap()
            .contains("AADSTS7000215")
    );
    assert_eq!(
        status(c.get(format!("{admin}/healthz"))).await,
        200,
        "alive though not ready"
    );
}

#[tokio::test]
async fn reload_swaps_routes_and_keeps_unchanged_credentials() {
    let entra = MockEntra::start().await;
    let echo = MockUpstream::echo().await;
    let config = |client_id: &str, extra_route: bool| {
        let mut text = support::config_text(&format!(
            "{}\n[[routes]]\nprefix = \"/a\"\nupstream = \"{}\"\ncredential = \"arm\"\n",
            client_secret("arm", &entra, client_id),
            echo.url
        ));
        if extra_route {
            text.push_str(&format!(
                "[[routes]]\nprefix = \"/b\"\nupstream = \"{}\"\ncredential = \"arm\"\n",
                echo.url
            ));
        }
        azgate::config::parse(&text, "t.toml", std::path::Path::new("."), &|_| None).unwrap()
    };
    let gw = Azgate::start_with(
        &support::config_text(&format!(
            "{}\n[[routes]]\nprefix = \"/a\"\nupstream = \"{}\"\ncredential = \"arm\"\n",
            client_secret("arm", &entra, "app-1"),
            echo.url
        )),
        std::path::Path::new("."),
        &HashMap::new(),
    )
    .await;
    let c = client();
    let url = gw.url.clone();
    let admin = gw.admin_url.clone().unwrap();
    let server = gw.into_server();
    assert_eq!(status(c.get(format!("{url}/a/x"))).await, 200);
    assert_eq!(status(c.get(format!("{url}/b/x"))).await, 404);
    assert_eq!(entra.call_count(), 1);

    // Same credential, one more route: the new route works, no token is fetched again.
    let warnings = server.apply(config("app-1", true)).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let echoed = support::json(c.get(format!("{url}/b/x")).send().await.unwrap()).await;
    assert_eq!(
        support::seen(&echoed, "authorization"),
        vec!["Bearer token-1"]
    );
    assert_eq!(
        entra.call_count(),
        1,
        "an unchanged credential kept its token"
    );

    // A changed credential is rebuilt and fetches its own token.
    server.apply(config("app-2", true)).unwrap();
    let echoed = support::json(c.get(format!("{url}/a/x")).send().await.unwrap()).await;
    assert_eq!(
        support::seen(&echoed, "authorization"),
        vec!["Bearer token-2"]
    );
    assert_eq!(entra.calls()[1].form["client_id"], "app-2");

    // Listener changes are reported, not applied.
    let mut moved = config("app-2", true);
    moved.server.listen = "127.0.0.1:1".parse().unwrap();
    moved.server.shutdown_grace = Duration::from_secs(99);
    moved.server.drain_delay = Duration::from_secs(3);
    let warnings = server.apply(moved).unwrap();
    for key in [
        "server.listen",
        "server.shutdown_grace",
        "server.drain_delay",
    ] {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(&format!("{key} changed; restart"))),
            "{key}: {warnings:?}"
        );
    }
    assert_eq!(status(c.get(format!("{url}/a/x"))).await, 200);

    let text = body_text(c.get(format!("{admin}/metrics"))).await;
    let s = samples(&text);
    assert_eq!(
        get(&s, "azgate_config_reloads_total", &[("outcome", "success")]),
        3.0
    );
    server.shutdown();
    server.wait().await;
}

#[tokio::test]
async fn drain_turns_readiness_off_first_then_stops_accepting() {
    let upstream = {
        let release = std::sync::Arc::new(tokio::sync::Notify::new());
        let r = release.clone();
        let server = MockUpstream::start(move |request| {
            let r = r.clone();
            async move {
                if request.uri().path() == "/slow" {
                    r.notified().await;
                }
                http::Response::new(support::full("done"))
            }
        })
        .await;
        (server, release)
    };
    let text = support::config_text(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\n",
        upstream.0.url
    ))
    .replace("[server]\n", "[server]\ndrain_delay = \"700ms\"\n");
    let gw = Azgate::start_with(&text, std::path::Path::new("."), &HashMap::new()).await;
    let admin = gw.admin_url.clone().unwrap();
    let c = client();
    let slow = tokio::spawn(c.get(format!("{}/slow", gw.url)).send());
    tokio::time::sleep(Duration::from_millis(100)).await;

    let addr = gw.addr;
    let url = gw.url.clone();
    let server = gw.into_server();
    server.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(status(c.get(format!("{admin}/readyz"))).await, 503);
    // Within drain_delay new requests are still served (the balancer is catching up).
    let fresh = client().get(format!("{url}/fast")).send().await.unwrap();
    assert_eq!(fresh.status(), 200);
    // After it, new connections are refused.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after drain_delay"
    );
    upstream.1.notify_one();
    let response = slow.await.unwrap().unwrap();
    assert_eq!(response.text().await.unwrap(), "done");
    tokio::time::timeout(Duration::from_secs(5), server.wait())
        .await
        .expect("drained");
}

#[tokio::test]
async fn the_admin_listener_has_its_own_inbound_controls() {
    let upstream = MockUpstream::echo().await;
    let text = support::config_text(&format!("[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\n", upstream.url))
        .replace(
            "[admin]\nlisten = \"127.0.0.1:0\"\n",
            "[admin]\nlisten = \"127.0.0.1:0\"\n[admin.inbound]\napi_keys = [\"admin-key-0123456789abcdef\"]\n",
        );
    let gw = Azgate::start_with(&text, std::path::Path::new("."), &HashMap::new()).await;
    let admin = gw.admin_url.clone().unwrap();
    let c = client();
    let refused = c.get(format!("{admin}/status.json")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(
        refused.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("x-azgate-key")
    );
    let ok = c
        .get(format!("{admin}/status.json"))
        .header("x-azgate-key", "admin-key-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // The proxy listener is not affected by the admin keys.
    assert_eq!(status(c.get(format!("{}/x", gw.url))).await, 200);

    let err = azgate::config::parse(
        "[admin]\nlisten = \"0.0.0.0:9090\"\n",
        "t.toml",
        std::path::Path::new("."),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("admin.listen") && err.contains("[admin.inbound]"),
        "{err}"
    );
}
