//! Hot reload of the real binary: a config file replaced by rename is picked up, an
//! invalid one is refused (the running config stays, the failure is counted), and SIGHUP
//! reloads on demand.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{MockUpstream, body_text, client};

struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// The log lines up to the listener lines.
    startup: Vec<String>,
    proxy: String,
    admin: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

fn serve(path: &std::path::Path) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_azgate"))
        .args(["serve", "-c"])
        .arg(path)
        .env_remove("AZGATE_CONFIG")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut proxy, mut admin) = (None, None);
    let mut startup = Vec::new();
    while proxy.is_none() || admin.is_none() {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("listener lines");
        startup.push(line.clone());
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        let addr = event["addr"].as_str().map(|a| format!("http://{a}"));
        let message = event["message"].as_str().unwrap_or_default();
        if message.starts_with("proxy listening") {
            proxy = addr;
        } else if message.starts_with("admin listening") {
            admin = addr;
        }
    }
    Serve {
        child,
        lines,
        startup,
        proxy: proxy.unwrap(),
        admin: admin.unwrap(),
    }
}

async fn status_of(url: String) -> u16 {
    client()
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Sends SIGHUP to the process `pid`.
fn sighup(pid: &str) {
    assert!(
        Command::new("kill")
            .args(["-HUP", pid])
            .status()
            .unwrap()
            .success()
    );
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
    let serve = serve(&path);
    let (proxy, admin) = (serve.proxy.clone(), serve.admin.clone());
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
    let refused = std::iter::from_fn(|| serve.lines.try_recv().ok())
        .any(|l| l.contains("config reload refused") && l.contains("prefx"));
    assert!(refused, "the refusal and its reason are logged");

    // SIGHUP reloads on demand (the file is valid again, unchanged since).
    std::fs::write(&path, config(&upstream.url, &["/a", "/c"])).unwrap();
    let pid = serve.child.id().to_string();
    sighup(&pid);
    assert!(
        eventually(&format!("{proxy}/c/x"), 200).await,
        "SIGHUP did not reload"
    );
    assert_eq!(status_of(format!("{proxy}/b/x")).await, 404);
    // Let the file watcher settle, then a SIGHUP with an unchanged file still reloads.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = reloads(&admin, "success").await;
    sighup(&pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(&admin, "success").await < before + 1 {
        assert!(
            Instant::now() < deadline,
            "a SIGHUP with an unchanged file still reloads"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let serve = serve(&path);
    let at_start = config_warnings(&serve.startup);
    assert_eq!(at_start.len(), 1, "{:#?}", serve.startup);
    assert_eq!(at_start[0].0, "server.inbound.trusted_proxies[0]");
    assert!(
        at_start[0].1.contains("trusts every IPv4 peer"),
        "{at_start:?}"
    );

    // A reload with another doubtful setting logs that one. (SIGHUP: the file watcher may
    // not be set up yet this early.)
    std::fs::write(
        &path,
        format!("{base}[admin.inbound]\nallow = [\"::/0\"]\n"),
    )
    .unwrap();
    sighup(&serve.child.id().to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("config reloaded")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match serve.lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no reload within 10 s: {seen:#?}"),
        }
    }
    let on_reload = config_warnings(&seen);
    assert_eq!(on_reload.len(), 1, "{seen:#?}");
    assert_eq!(on_reload[0].0, "admin.inbound.allow[0]");
    assert!(
        on_reload[0].1.contains("admits every IPv6 address"),
        "{on_reload:?}"
    );
}
