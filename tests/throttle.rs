//! Throttling across requests (`[routes.throttle]`): the upstream's 429 holds the whole
//! route until the announced time; waiting requests are released after one probe; requests
//! that cannot wait get 429 `throttled` with `Retry-After`; the queue is bounded and a
//! client that goes away leaves it; quota headers become gauges. Paused clock where the
//! windows are long.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Response, StatusCode};
use support::{Azgate, MockUpstream, client, full};
use tokio::time::Instant;

/// What the upstream saw: each request's arrival and the time its answer left.
#[derive(Default)]
struct Log {
    arrivals: Vec<Instant>,
    done: Vec<Instant>,
}

/// An upstream whose `n`-th request (from 0) gets `script(n)`: (status, Retry-After),
/// each answer taking 100 ms.
async fn upstream(
    script: impl Fn(usize) -> (u16, Option<&'static str>) + Send + Sync + 'static,
) -> (MockUpstream, Arc<Mutex<Log>>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let (seen, script) = (log.clone(), Arc::new(script));
    let server = MockUpstream::start(move |_request| {
        let (seen, script) = (seen.clone(), script.clone());
        async move {
            let n = {
                let mut log = seen.lock().unwrap();
                log.arrivals.push(Instant::now());
                log.arrivals.len() - 1
            };
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (status, retry_after) = script(n);
            let mut response = Response::builder()
                .status(StatusCode::from_u16(status).unwrap())
                .header("x-ms-ratelimit-remaining-subscription-reads", "11999");
            if let Some(after) = retry_after {
                response = response.header("retry-after", after);
            }
            seen.lock().unwrap().done.push(Instant::now());
            response.body(full("answer")).unwrap()
        }
    })
    .await;
    (server, log)
}

/// A route `/r` to `url` injecting a static credential (so it holds by default).
async fn gateway(url: &str, extra: &str) -> Azgate {
    Azgate::start(&format!(
        r#"
        [credentials.apim]
        type = "subscription_key"
        key = "apim-key-0123456789"
        [[routes]]
        prefix = "/r"
        upstream = "{url}"
        credential = "apim"
        {extra}
        "#
    ))
    .await
}

async fn get(url: String) -> (u16, Option<String>, String) {
    let response = client().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let code = response
        .headers()
        .get("x-azgate-error")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, retry_after, code)
}

#[tokio::test(start_paused = true)]
async fn a_hold_keeps_the_route_from_the_upstream_and_releases_it_with_one_probe_first() {
    let (server, log) = upstream(|n| {
        if n == 0 {
            (429, Some("2"))
        } else {
            (200, None)
        }
    })
    .await;
    let gw = gateway(&server.url, "").await;
    let started = Instant::now();
    let first = tokio::spawn(get(format!("{}/r/a", gw.url)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let others: Vec<_> = (0..30)
        .map(|i| tokio::spawn(get(format!("{}/r/b{i}", gw.url))))
        .collect();
    for answer in others {
        assert_eq!(answer.await.unwrap().0, 200);
    }
    assert_eq!(
        first.await.unwrap().0,
        200,
        "the first request waited out its own 429"
    );

    let log = log.lock().unwrap();
    assert_eq!(
        log.arrivals.len(),
        32,
        "one 429, then the 31 requests once each"
    );
    let window_end = started + Duration::from_secs(2);
    assert!(
        log.arrivals[1..].iter().all(|at| *at >= window_end),
        "a request reached the upstream inside the window"
    );
    // One probe first: nothing else arrived before its answer.
    let probe_answered = log.done[1];
    assert!(
        log.arrivals[2..].iter().all(|at| *at >= probe_answered),
        "requests went along with the probe"
    );
    // Then a slow start, not the whole queue at once: two for the probe's success, then
    // two more for each success.
    let wave = |from: Instant| {
        log.arrivals
            .iter()
            .filter(|at| **at >= from && **at < from + Duration::from_millis(50))
            .count()
    };
    assert_eq!(wave(probe_answered), 2, "{:?}", log.arrivals);
    assert!(wave(probe_answered + Duration::from_millis(100)) <= 4);
}

#[tokio::test(start_paused = true)]
async fn a_request_held_by_its_own_429s_tries_until_its_deadline_and_counts_what_it_sent() {
    let (server, log) = upstream(|_| (429, Some("1"))).await;
    let gw = gateway(
        &server.url,
        "timeout = \"5s\"\n[routes.retry]\nmax_attempts = 2\nmax_delay = \"3s\"",
    )
    .await;
    let started = Instant::now();
    let response = client()
        .get(format!("{}/r/a", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["x-azgate-error"], "throttled");
    // Sent at 0, 1.1, 2.2, 3.3 and 4.4 s; the hold after the last ends past the deadline.
    let sent = log.lock().unwrap().arrivals.len();
    assert_eq!(sent, 5, "held attempts do not use up max_attempts");
    assert_eq!(response.headers()["x-azgate-attempts"], "5");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_hold_pushed_past_a_waiting_requests_deadline_answers_it_then() {
    let (server, log) = upstream(|_| (429, Some("2"))).await;
    let gw = gateway(&server.url, "timeout = \"3s\"").await;
    let started = Instant::now();
    let first = tokio::spawn(get(format!("{}/r/a", gw.url)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Joins the hold (until 2.1 s, within its deadline at 3.5 s); the probe's 429 at 2.2 s
    // pushes the hold to 4.2 s, past it.
    let second = tokio::spawn(async move {
        let answer = get(format!("{}/r/b", gw.url)).await;
        (answer, Instant::now())
    });
    let (answer, at) = second.await.unwrap();
    assert_eq!(
        (answer.0, answer.2.as_str()),
        (429, "throttled"),
        "{answer:?}"
    );
    assert!(
        at - started <= Duration::from_millis(3500),
        "answered after its deadline: {:?}",
        at - started
    );
    let first = first.await.unwrap();
    assert_eq!((first.0, first.2.as_str()), (429, "throttled"));
    assert_eq!(
        log.lock().unwrap().arrivals.len(),
        2,
        "the first 429 and one probe"
    );
}

#[tokio::test(start_paused = true)]
async fn a_long_window_answers_new_requests_at_once_with_429_throttled() {
    let (server, log) = upstream(|_| (429, Some("120"))).await;
    let gw = gateway(&server.url, "").await;
    // The upstream's own 429 goes back (120 s is past max_delay) and opens the hold.
    let (status, retry_after, _) = get(format!("{}/r/a", gw.url)).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("120")));
    tokio::time::sleep(Duration::from_secs(30)).await;
    let started = Instant::now();
    let (status, retry_after, code) = get(format!("{}/r/b", gw.url)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered at once"
    );
    assert_eq!((status, code.as_str()), (429, "throttled"));
    let secs: u64 = retry_after.unwrap().parse().unwrap();
    assert!((89..=91).contains(&secs), "Retry-After {secs}");
    assert_eq!(
        log.lock().unwrap().arrivals.len(),
        1,
        "nothing reached the upstream"
    );
    // After the window, requests go upstream again.
    tokio::time::sleep(Duration::from_secs(91)).await;
    get(format!("{}/r/c", gw.url)).await;
    assert_eq!(log.lock().unwrap().arrivals.len(), 2);
    // Upstream time only for the two that went upstream; the refused one has none.
    let metrics = support::metrics::scrape(&gw.admin_url.clone().unwrap()).await;
    let count = |name| support::metrics::get(&metrics, name, &[("route", "/r")]);
    assert_eq!(count("azgate_request_duration_seconds_count"), 3.0);
    assert_eq!(count("azgate_upstream_duration_seconds_count"), 2.0);
}

#[tokio::test(start_paused = true)]
async fn the_queue_is_bounded_and_a_client_that_goes_away_leaves_it() {
    let (server, log) = upstream(|n| {
        if n == 0 {
            (429, Some("5"))
        } else {
            (200, None)
        }
    })
    .await;
    let gw = gateway(&server.url, "[routes.throttle]\nmax_queue = 2").await;
    let admin = gw.admin_url.clone().unwrap();
    let queue = || {
        let admin = admin.clone();
        async move {
            let metrics = support::metrics::scrape(&admin).await;
            support::metrics::get(&metrics, "azgate_throttle_queue", &[("route", "/r")])
        }
    };
    // The first request's own 429 opens a 5 s hold; it waits in the queue itself.
    let first = tokio::spawn(get(format!("{}/r/a", gw.url)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(queue().await, 1.0);
    let leaving = tokio::spawn(get(format!("{}/r/leaving", gw.url)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(queue().await, 2.0);
    // Full: answered at once.
    let (status, _, code) = get(format!("{}/r/over", gw.url)).await;
    assert_eq!((status, code.as_str()), (429, "throttled"));
    // A client that goes away leaves the queue, and its place is free again.
    leaving.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(queue().await, 1.0);
    let later = tokio::spawn(get(format!("{}/r/later", gw.url)));
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(later.await.unwrap().0, 200);
    assert_eq!(queue().await, 0.0);
    assert_eq!(
        log.lock().unwrap().arrivals.len(),
        3,
        "429, then a and later"
    );
    let metrics = support::metrics::scrape(&admin).await;
    let get = |name, labels: &[(&str, &str)]| support::metrics::get(&metrics, name, labels);
    assert_eq!(get("azgate_throttle_holds_total", &[("route", "/r")]), 1.0);
    // Each wait counted once, by how it ended.
    for (outcome, count) in [("rejected", 1.0), ("queued", 2.0), ("abandoned", 1.0)] {
        assert_eq!(
            get(
                "azgate_throttled_total",
                &[("route", "/r"), ("outcome", outcome)]
            ),
            count,
            "{outcome}"
        );
    }
    assert_eq!(
        get(
            "azgate_upstream_ratelimit_remaining",
            &[
                ("route", "/r"),
                ("header", "x-ms-ratelimit-remaining-subscription-reads")
            ]
        ),
        11999.0
    );
}

#[tokio::test(start_paused = true)]
async fn routes_without_a_credential_do_not_hold_unless_asked() {
    let (server, log) = upstream(|n| {
        if n == 0 {
            (429, Some("60"))
        } else {
            (200, None)
        }
    })
    .await;
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/plain\"\nupstream = \"{u}\"\n\
         [[routes]]\nprefix = \"/held\"\nupstream = \"{u}\"\n[routes.throttle]\nhold = true\n",
        u = server.url
    ))
    .await;
    // The clients carry their own identities: one client's 429 holds no one else.
    assert_eq!(get(format!("{}/plain/a", gw.url)).await.0, 429);
    assert_eq!(get(format!("{}/plain/b", gw.url)).await.0, 200);
    assert_eq!(log.lock().unwrap().arrivals.len(), 2);
    // hold = true asks for it.
    let (server, log) = upstream(|n| {
        if n == 0 {
            (429, Some("60"))
        } else {
            (200, None)
        }
    })
    .await;
    drop(gw);
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/held\"\nupstream = \"{}\"\n[routes.throttle]\nhold = true\n",
        server.url
    ))
    .await;
    assert_eq!(get(format!("{}/held/a", gw.url)).await.0, 429);
    assert_eq!(get(format!("{}/held/b", gw.url)).await.2, "throttled");
    assert_eq!(log.lock().unwrap().arrivals.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn status_json_shows_the_hold_and_its_queue() {
    let (server, _log) = upstream(|n| {
        if n == 0 {
            (429, Some("10"))
        } else {
            (200, None)
        }
    })
    .await;
    let gw = gateway(&server.url, "").await;
    let waiting = tokio::spawn(get(format!("{}/r/a", gw.url)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let admin = gw.admin_url.clone().unwrap();
    let status = support::status_json(&admin).await;
    let throttle = &status["routes"][0]["throttle"];
    let left = throttle["hold_left_ms"].as_u64().unwrap();
    assert!((8_500..=9_500).contains(&left), "{throttle}");
    assert_eq!(throttle["queued"], 1);
    assert_eq!(waiting.await.unwrap().0, 200);
}

#[tokio::test(start_paused = true)]
async fn pacing_holds_a_steady_rate() {
    let (server, log) = upstream(|_| (200, None)).await;
    let gw = gateway(&server.url, "[routes.throttle]\nrate = \"10/s\"\nburst = 1").await;
    let requests: Vec<_> = (0..50)
        .map(|i| tokio::spawn(get(format!("{}/r/{i}", gw.url))))
        .collect();
    for answer in requests {
        assert_eq!(answer.await.unwrap().0, 200);
    }
    let arrivals = log.lock().unwrap().arrivals.clone();
    assert_eq!(arrivals.len(), 50);
    let span = arrivals[49].duration_since(arrivals[0]).as_secs_f64();
    let rate = 49.0 / span;
    assert!((9.5..=10.5).contains(&rate), "{rate:.2}/s over {span:.2}s");
    // Never more than the burst at once: each second holds 10 ± 1.
    for window in arrivals.windows(11) {
        let took = window[10].duration_since(window[0]).as_secs_f64();
        assert!(took >= 0.95, "11 requests within {took:.2}s");
    }
}

#[tokio::test(start_paused = true)]
async fn a_pace_wait_past_the_deadline_is_429_throttled() {
    let (server, log) = upstream(|_| (200, None)).await;
    let gw = gateway(
        &server.url,
        "timeout = \"2s\"\n[routes.throttle]\nrate = \"1/s\"\nburst = 1",
    )
    .await;
    let answers: Vec<_> = (0..5)
        .map(|i| tokio::spawn(get(format!("{}/r/{i}", gw.url))))
        .collect();
    let mut statuses = Vec::new();
    for answer in answers {
        let (status, _, code) = answer.await.unwrap();
        statuses.push((status, code));
    }
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    let throttled = statuses
        .iter()
        .filter(|(s, c)| *s == 429 && c == "throttled")
        .count();
    // Two fit the 2 s timeout at 1/s; a third waits ~2 s for its token and has no time
    // left for the upstream (504), or is refused at once; the rest are refused at once.
    assert_eq!(ok, 2, "{statuses:?}");
    assert!(throttled >= 2, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|(s, c)| *s == 200 || (*s == 429 && c == "throttled") || *s == 504),
        "{statuses:?}"
    );
    assert!(log.lock().unwrap().arrivals.len() <= 3);
}

#[tokio::test(start_paused = true)]
async fn reads_are_spread_out_when_the_read_quota_runs_low() {
    let arrivals = Arc::new(Mutex::new(Vec::<(Instant, String)>::new()));
    let seen = arrivals.clone();
    let server = MockUpstream::start(move |request| {
        let seen = seen.clone();
        async move {
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push((Instant::now(), request.method().to_string()));
                seen.len()
            };
            // 250 reads left at first, then 5: under 5% of the largest seen.
            let left = if n == 1 { "250" } else { "5" };
            Response::builder()
                .header("x-ms-ratelimit-remaining-subscription-reads", left)
                .header("x-ms-ratelimit-remaining-subscription-writes", "199")
                .body(full("ok"))
                .unwrap()
        }
    })
    .await;
    let gw = gateway(&server.url, "").await;
    assert_eq!(get(format!("{}/r/first", gw.url)).await.0, 200);
    assert_eq!(get(format!("{}/r/second", gw.url)).await.0, 200);
    // Now the read quota is low: 20 reads at once are spread out at ARM's 25/s refill,
    // while a write goes at once.
    let reads: Vec<_> = (0..20)
        .map(|i| tokio::spawn(get(format!("{}/r/{i}", gw.url))))
        .collect();
    let write = client()
        .put(format!("{}/r/w", gw.url))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 200);
    for answer in reads {
        assert_eq!(answer.await.unwrap().0, 200);
    }
    let arrivals = arrivals.lock().unwrap().clone();
    let gets: Vec<Instant> = arrivals
        .iter()
        .skip(2)
        .filter(|(_, m)| m == "GET")
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(gets.len(), 20);
    let span = gets[19].duration_since(gets[0]).as_secs_f64();
    assert!(
        (0.7..=0.85).contains(&span),
        "20 reads over {span:.3}s, not 19/25 s"
    );
    let put_at = arrivals.iter().find(|(_, m)| m == "PUT").unwrap().0;
    assert!(
        put_at.duration_since(gets[0]).as_secs_f64() < 0.1,
        "the write waited"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hold_survives_reloads_of_its_route() {
    let (server, log) = upstream(|n| {
        if n == 0 {
            (429, Some("60"))
        } else {
            (200, None)
        }
    })
    .await;
    let body = format!(
        r#"
        [credentials.apim]
        type = "subscription_key"
        key = "apim-key-0123456789"
        [[routes]]
        prefix = "/r"
        upstream = "{}"
        credential = "apim"
        "#,
        server.url
    );
    let gw = Azgate::start(&body).await;
    let url = gw.url.clone();
    assert_eq!(get(format!("{url}/r/a")).await.0, 429);
    let server_handle = gw.into_server();
    let parse = |text: &str| {
        azgate::config::parse(
            &support::config_text(text),
            "t.toml",
            std::path::Path::new("."),
            &|_| None,
        )
        .unwrap()
    };
    // Another route added: /r is unchanged and still held.
    let more = format!(
        "{body}\n[[routes]]\nprefix = \"/other\"\nupstream = \"{}\"\n",
        server.url
    );
    server_handle.apply(parse(&more)).unwrap();
    assert_eq!(get(format!("{url}/r/b")).await.2, "throttled");
    assert_eq!(log.lock().unwrap().arrivals.len(), 1);
    // Its throttle settings changed: the hold is the upstream's, so it goes on under the
    // new settings, and a request already waiting still counts in the queue.
    let reconfigured = body.replace(
        "credential = \"apim\"\n",
        "credential = \"apim\"\n        timeout = \"120s\"\n        [routes.retry]\n        max_delay = \"120s\"\n        [routes.throttle]\n        max_queue = 5\n",
    );
    server_handle.apply(parse(&reconfigured)).unwrap();
    let waiting = tokio::spawn(get(format!("{url}/r/c")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let admin = format!("http://{}", server_handle.admin_addr.unwrap());
    let queue = || async {
        let metrics = support::metrics::scrape(&admin).await;
        support::metrics::get(&metrics, "azgate_throttle_queue", &[("route", "/r")])
    };
    assert_eq!(queue().await, 1.0);
    // Changed again while it waits: still held, still counted.
    server_handle.apply(parse(&body)).unwrap();
    assert_eq!(queue().await, 1.0);
    assert_eq!(get(format!("{url}/r/d")).await.2, "throttled");
    assert_eq!(
        log.lock().unwrap().arrivals.len(),
        1,
        "nothing went upstream"
    );
    // When the hold ends the waiting request goes.
    assert_eq!(waiting.await.unwrap().0, 200);
    assert_eq!(log.lock().unwrap().arrivals.len(), 2);
    server_handle.shutdown();
}
