//! Hot reload of the real binary: a config file replaced by rename is picked up, an
//! invalid one is refused (the running config stays, the failure is counted), and SIGHUP
//! reloads on demand.

mod support;

use std::time::{Duration, Instant};

use support::binary::Serve;
use support::{MockUpstream, body_text, client};

fn config(upstream: &str, routes: &[&str]) -> String {
    let mut text = "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n".to_string();
    for prefix in routes {
        text.push_str(&format!(
            "[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}\"\n"
        ));
    }
    text
}

/// Replaces the file the way editors and ConfigMaps do: write aside, rename over.
fn replace(path: &std::path::Path, text: &str) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

async fn status_of(url: String) -> u16 {
    client()
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Polls until `url` answers `want`, for at most 10 s.
async fn eventually(url: &str, want: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if status_of(url.to_string()).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn reloads(admin: &str, outcome: &str) -> u64 {
    let text = body_text(client().get(format!("{admin}/metrics"))).await;
    text.lines()
        .find(|l| {
            l.starts_with(&format!(
                "azgate_config_reloads_total{{outcome=\"{outcome}\"}}"
            ))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_is_watched_and_sighup_reloads() {
    let upstream = MockUpstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config(&upstream.url, &["/a"])).unwrap();
    let mut serve = Serve::start(&path);
    let (proxy, admin) = (serve.proxy.clone(), serve.admin.clone().unwrap());
    assert_eq!(status_of(format!("{proxy}/a/x")).await, 200);
    assert_eq!(status_of(format!("{proxy}/b/x")).await, 404);

    // Replaced by rename: picked up without a signal.
    replace(&path, &config(&upstream.url, &["/a", "/b"]));
    assert!(
        eventually(&format!("{proxy}/b/x"), 200).await,
        "the renamed config was not loaded"
    );
    assert_eq!(reloads(&admin, "success").await, 1);

    // An invalid replacement is refused; the running config stays.
    replace(
        &path,
        &config(&upstream.url, &["/a", "/b"]).replace("prefix = \"/b\"", "prefx = \"/b\""),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(&admin, "failure").await < 1 {
        assert!(
            Instant::now() < deadline,
            "the invalid config was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status_of(format!("{proxy}/b/x")).await,
        200,
        "the running config must stay"
    );
    let refused = serve
        .drain_lines()
        .iter()
        .any(|l| l.contains("config reload refused") && l.contains("prefx"));
    assert!(refused, "the refusal and its reason are logged");

    // SIGHUP reloads on demand (the file is valid again, unchanged since).
    std::fs::write(&path, config(&upstream.url, &["/a", "/c"])).unwrap();
    serve.signal("HUP");
    assert!(
        eventually(&format!("{proxy}/c/x"), 200).await,
        "SIGHUP did not reload"
    );
    assert_eq!(status_of(format!("{proxy}/b/x")).await, 404);
    // Let the file watcher settle, then a SIGHUP with an unchanged file still reloads.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = reloads(&admin, "success").await;
    serve.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(&admin, "success").await < before + 1 {
        assert!(
            Instant::now() < deadline,
            "a SIGHUP with an unchanged file still reloads"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const KEY: &str = "team-key-0123456789abcdef";

fn public_config(upstream: &str, listen: &str, inbound: bool) -> String {
    let mut text = format!(
        "[server]\nlisten = \"{listen}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\n"
    );
    if inbound {
        text.push_str(&format!("[server.inbound]\napi_keys = [\"{KEY}\"]\n"));
    }
    text
}

/// The reproduction: a reload that moves `listen` to loopback (which needs a
/// restart) and drops `[server.inbound]` must not leave the still-bound 0.0.0.0 socket
/// open to anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_remove_inbound_auth_from_a_publicly_bound_listener() {
    let upstream = MockUpstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, public_config(&upstream.url, "0.0.0.0:0", true)).unwrap();
    let mut serve = Serve::start(&path);
    let proxy = serve.proxy.replace("0.0.0.0", "127.0.0.1");
    let admin = serve.admin.clone().unwrap();
    assert_eq!(status_of(format!("{proxy}/x")).await, 401);

    replace(&path, &public_config(&upstream.url, "127.0.0.1:0", false));
    let line = serve.wait_for_line("config reload refused", Duration::from_secs(10));
    assert!(
        line.contains("server.listen: the proxy listener is still bound to 0.0.0.0:"),
        "{line}"
    );
    assert_eq!(reloads(&admin, "failure").await, 1);
    assert_eq!(reloads(&admin, "success").await, 0);
    assert_eq!(
        status_of(format!("{proxy}/x")).await,
        401,
        "the running config (with its keys) stays"
    );
    let with_key = client()
        .get(format!("{proxy}/x"))
        .header("x-azgate-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(with_key.status(), 200);

    // The same config with its key is fine: the listen change is reported, not applied.
    replace(
        &path,
        &format!(
            "{}[server.inbound]\napi_keys = [\"{KEY}\"]\n",
            public_config(&upstream.url, "127.0.0.1:0", false)
        ),
    );
    serve.wait_for_line("server.listen changed; restart", Duration::from_secs(10));
    assert_eq!(reloads(&admin, "success").await, 1);
}

#[tokio::test]
async fn the_reload_check_uses_the_bound_addresses_and_the_tls_in_effect() {
    let upstream = MockUpstream::echo().await;
    let route = format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\n",
        upstream.url
    );
    let started = format!(
        "[server]\nlisten = \"0.0.0.0:0\"\n[server.inbound]\napi_keys = [\"{KEY}\"]\n\
         [admin]\nlisten = \"0.0.0.0:0\"\n[admin.inbound]\nallow = [\"127.0.0.0/8\"]\n{route}"
    );
    let gw =
        support::Azgate::start_with(&started, std::path::Path::new("."), &Default::default()).await;
    let admin = gw
        .admin_url
        .clone()
        .unwrap()
        .replace("0.0.0.0", "127.0.0.1");
    let server = gw.into_server();
    let parse = |text: &str| {
        azgate::config::parse(text, "t.toml", std::path::Path::new("."), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
    };

    // Both listeners moved to loopback in the file, both controls gone: refused, for each.
    let err = server
        .apply(parse(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{route}"
        )))
        .unwrap_err();
    assert_eq!(err.problems.len(), 2, "{err}");
    assert!(
        err.problems[0].starts_with("server.listen: the proxy listener is still bound to 0.0.0.0:"),
        "{err}"
    );
    assert!(
        err.problems[1].starts_with("admin.listen: the admin listener is still bound to 0.0.0.0:"),
        "{err}"
    );

    // As at start, allow_unauthenticated accepts an open proxy listener; the admin listener
    // keeps its allow-list, which now follows reloads.
    let warnings = server
        .apply(parse(&format!(
            "[server]\nlisten = \"0.0.0.0:0\"\nallow_unauthenticated = true\n\
             [admin]\nlisten = \"0.0.0.0:0\"\n[admin.inbound]\napi_keys = [\"{KEY}\"]\n{route}"
        )))
        .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        status_of(format!("{admin}/healthz")).await,
        401,
        "the reloaded [admin.inbound] is in effect"
    );

    let text = body_text(
        client()
            .get(format!("{admin}/metrics"))
            .header("x-azgate-key", KEY),
    )
    .await;
    assert!(
        text.contains("azgate_config_reloads_total{outcome=\"failure\"} 1"),
        "{text}"
    );
    server.shutdown();
    server.wait().await;
}

/// The config warnings among JSON log lines, as (key, message).
fn config_warnings(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            e["level"] == "WARN"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("config warning"))
        })
        .map(|e| {
            (
                e["key"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_warnings_are_logged_at_start_and_on_reload() {
    let upstream = MockUpstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let base = config(&upstream.url, &["/a"]);
    std::fs::write(
        &path,
        format!("{base}[server.inbound]\ntrusted_proxies = [\"0.0.0.0/0\"]\n"),
    )
    .unwrap();
    let mut serve = Serve::start(&path);
    // The lines up to the listener lines: what start logged.
    let at_start = config_warnings(&serve.seen);
    assert_eq!(at_start.len(), 1, "{:#?}", serve.seen);
    assert_eq!(at_start[0].0, "server.inbound.trusted_proxies[0]");
    assert!(
        at_start[0].1.contains("trusts every IPv4 peer"),
        "{at_start:?}"
    );

    // A reload with another doubtful setting logs that one. (SIGHUP: the file watcher may
    // not be set up yet this early.)
    let started = serve.seen.len();
    std::fs::write(
        &path,
        format!("{base}[admin.inbound]\nallow = [\"::/0\"]\n"),
    )
    .unwrap();
    serve.signal("HUP");
    serve.wait_for_line("config reloaded", Duration::from_secs(10));
    let on_reload = config_warnings(&serve.seen[started..]);
    assert_eq!(on_reload.len(), 1, "{:#?}", &serve.seen[started..]);
    assert_eq!(on_reload[0].0, "admin.inbound.allow[0]");
    assert!(
        on_reload[0].1.contains("admits every IPv6 address"),
        "{on_reload:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_log_file_next_to_the_config_does_not_hold_a_reload_back() {
    let upstream = MockUpstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config(&upstream.url, &["/a"])).unwrap();
    let serve = Serve::start(&path);
    let proxy = serve.proxy.clone();
    // `azgate serve -c proxy.toml > azgate.log` with traffic: the log is written every
    // few milliseconds, for the whole test.
    let log = dir.path().join("azgate.log");
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (log, writing) = (log.clone(), writing.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::File::create(&log).unwrap();
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = writeln!(file, "{{\"message\":\"a request\"}}");
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Renamed over, and then written in place: each in service well within the ceiling.
    for (routes, probe) in [
        (&["/a", "/b"][..], "/b/x"),
        (&["/a", "/b", "/c"][..], "/c/x"),
    ] {
        let started = Instant::now();
        if probe == "/b/x" {
            replace(&path, &config(&upstream.url, routes));
        } else {
            std::fs::write(&path, config(&upstream.url, routes)).unwrap();
        }
        let url = format!("{proxy}{probe}");
        while status_of(url.clone()).await != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{probe}: the change was not picked up while the log was being written"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(1500),
            "{probe}: in service after {took:?}"
        );
    }
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
}
