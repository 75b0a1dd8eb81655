//! The binary: `check`, `serve`, `--version`, exit statuses and listener log lines.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn azgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_azgate"));
    cmd.env_remove("AZGATE_CONFIG").env_remove("RUST_LOG");
    cmd
}

fn write_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn version_and_help() {
    let out = azgate().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("azgate {}", env!("CARGO_PKG_VERSION"))
    );
    let out = azgate().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("serve") && help.contains("check"), "{help}");
}

#[test]
fn check_accepts_the_example_and_prints_the_route_table() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml.example");
    let out = azgate()
        .args(["check", "-c", example])
        .env_remove("DEVCENTER_ENDPOINT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("PREFIX") && stdout.contains("UPSTREAM") && stdout.contains("CREDENTIAL"),
        "{stdout}"
    );
    for needle in [
        "/vi ",
        "https://api.videoindexer.ai",
        "/arm ",
        "https://management.azure.com",
        "/devcenter",
        "GET,HEAD",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?}:\n{stdout}");
    }
}

#[test]
fn check_reports_every_problem_and_exits_2() {
    let (_dir, path) = write_config(
        "[server]\nlisten = \"nowhere\"\n[[routes]]\nprefix = \"/a\"\nupstream = \"http://x\"\ncredential = \"ghost\"\ntypo = 1\n",
    );
    let out = azgate().args(["check", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    for want in [
        format!("{file}: server.listen: invalid address \"nowhere\""),
        format!("{file}: routes[0].credential: unknown credential \"ghost\"; known: none"),
        format!("{file}: routes[0].typo: unknown key"),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
    let out = azgate().args(["serve", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "serve refuses a bad config too");
}

#[test]
fn check_reports_a_missing_file() {
    let out = azgate()
        .args(["check", "-c", "/nonexistent/azgate.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the config file"));
}

#[test]
fn config_is_found_through_azgate_config() {
    let (_dir, path) =
        write_config("[[routes]]\nprefix = \"/from-env\"\nupstream = \"http://127.0.0.1:1\"\n");
    let out = azgate()
        .arg("check")
        .env("AZGATE_CONFIG", &path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("/from-env"));
}

#[test]
fn serve_logs_each_listener_and_exits_0_on_sigterm() {
    let (_dir, path) = write_config(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n",
    );
    let mut child = azgate()
        .args(["serve", "-c"])
        .arg(&path)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut listeners = Vec::new();
    while listeners.len() < 2 {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("listener log lines");
        if line.contains("listening on http://127.0.0.1:") {
            let event: serde_json::Value = serde_json::from_str(&line).expect("json log line");
            listeners.push(event["addr"].as_str().unwrap().to_string());
        }
    }
    for addr in &listeners {
        assert!(
            std::net::TcpStream::connect(addr).is_ok(),
            "{addr} is not listening"
        );
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "azgate did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
}

#[test]
fn check_prints_warnings_and_still_exits_0() {
    let (_dir, path) = write_config(
        "[server]\nlisten = \"0.0.0.0:8080\"\nallow_unauthenticated = true\n[server.inbound]\ntrusted_proxies = [\"::/0\"]\n",
    );
    let out = azgate().args(["check", "-c"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let file = path.display().to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[1].starts_with(&format!(
            "warning: {file}: server.allow_unauthenticated: 0.0.0.0:8080 has no inbound access control"
        )),
        "{stderr}"
    );
    assert!(
        lines[0].starts_with(&format!(
            "warning: {file}: server.inbound.trusted_proxies[0]: \"::/0\" trusts every IPv6 peer"
        )),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(valid)"),
        "the route table is still printed"
    );
}

#[test]
fn the_built_in_default_names_its_credential_default() {
    // README: after the built-in default, `azgate token default` (not `arm`).
    let dir = tempfile::tempdir().unwrap();
    let out = azgate()
        .args(["token", "arm"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no credential named \"arm\" in <embedded default>; known: default"),
        "{stderr}"
    );
}

#[test]
fn the_examples_devcenter_endpoint_takes_a_host_or_a_whole_url() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml.example");
    for value in ["x.devcenter.azure.com", "https://x.devcenter.azure.com"] {
        let out = azgate()
            .args(["check", "-c", example])
            .env("DEVCENTER_ENDPOINT", value)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{value}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with("/devcenter")
                    && l.contains(" https://x.devcenter.azure.com ")),
            "{value}:\n{stdout}"
        );
    }
}
