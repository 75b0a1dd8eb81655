//! The binary: `check`, `serve`, `--version`, exit statuses and listener log lines.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use support::tls::TlsFiles;
use support::video_indexer::{MockVideoIndexer, vi_error};

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
fn check_lists_vending_routes_with_their_options() {
    let (_dir, path) = write_config(
        r#"
        [server.inbound]
        api_keys = ["route-key-not-printed", "other-key-not-printed"]
        [credentials.arm]
        type = "default"
        scope = "https://management.azure.com/.default"
        [credentials.vi]
        type = "video_indexer"
        location = "trial"
        account_id = "acc-1"
        subscription_key = "k"
        [credentials.vi_arm]
        type = "video_indexer"
        location = "westeurope"
        account_id = "acc-2"
        arm = "arm"
        subscription_id = "sub"
        resource_group = "rg"
        account_name = "vi-arm"
        [[routes]]
        prefix = "/vi"
        upstream = "https://api.videoindexer.ai"
        credential = "vi"
        scoped_tokens = true
        [[routes]]
        prefix = "/vi-tokens"
        vend = "vi"
        [[routes]]
        prefix = "/tokens/arm"
        vend = "vi_arm"
        max_entries = 500
        max_concurrent_fetches = 2
        embed_url = "https://embed.contoso.com/"
        api_keys = ["route-key-not-printed"]
        [routes.cors]
        allow_origins = ["https://app.contoso.com", "http://localhost:3000"]
        "#,
    );
    let out = azgate().args(["check", "-c"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |prefix: &str| row_of(&stdout, prefix);
    assert_eq!(
        row("/vi"),
        "/vi https://api.videoindexer.ai vi (video_indexer, scoped_tokens) any"
    );
    assert_eq!(
        row("/vi-tokens"),
        "/vi-tokens vend vi vi (video_indexer) GET"
    );
    assert_eq!(
        row("/tokens/arm"),
        "/tokens/arm vend vi_arm vi_arm (video_indexer) GET,OPTIONS"
    );
    let section = stdout
        .split("\nvending routes:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no vending section:\n{stdout}"));
    // Where spans go is printed last; this config sets no endpoint.
    assert!(stdout.contains("\ntelemetry: no OTLP endpoint"), "{stdout}");
    // The section's lines are indented; `telemetry:` follows it.
    let lines: Vec<&str> = section
        .lines()
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert_eq!(
        lines,
        [
            "  /vi-tokens = vend vi: allowEdit=false tokens (classic account); \
             GET account, projects/{id}, videos/{id}; max_entries 10000; \
             max_concurrent_fetches 8; embed_url https://www.videoindexer.ai; CORS none",
            "  /tokens/arm = vend vi_arm: restricted viewer tokens (ARM account); \
             GET account, projects/{id}, videos/{id}; max_entries 500; \
             max_concurrent_fetches 2; embed_url https://embed.contoso.com; 1 route key(s); \
             CORS https://app.contoso.com, http://localhost:3000",
        ],
        "{stdout}"
    );
    assert!(!stdout.contains("route-key-not-printed"));

    // Only vending routes still make a route table; `vend` with `upstream` is refused.
    let (_dir, path) = write_config(
        "[credentials.vi]\ntype = \"video_indexer\"\nlocation = \"trial\"\n\
         account_id = \"a\"\nsubscription_key = \"k\"\n\
         [[routes]]\nprefix = \"/t\"\nvend = \"vi\"\n",
    );
    let out = azgate().args(["check", "-c"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("(none"), "{stdout}");
    assert_eq!(row_of(&stdout, "/t"), "/t vend vi vi (video_indexer) GET");
    let text = std::fs::read_to_string(&path).unwrap() + "upstream = \"http://x\"\n";
    std::fs::write(&path, text).unwrap();
    let out = azgate().args(["check", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("routes[0].upstream: `vend` and `upstream` exclude each other"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The route table row starting with `prefix`, its cells joined by single spaces.
fn row_of(stdout: &str, prefix: &str) -> String {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{prefix} ")))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| panic!("no row for {prefix}:\n{stdout}"))
}

#[test]
fn the_examples_commented_vending_route_and_scoped_tokens_are_valid() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml.example"))
            .unwrap();
    let lines: Vec<&str> = example.lines().collect();
    let start = lines
        .windows(2)
        .position(|w| w == ["# [[routes]]", "# prefix = \"/vi-tokens\""])
        .expect("a commented vending route in proxy.toml.example");
    let mut text = String::new();
    for (i, line) in lines.iter().enumerate() {
        let in_block = i >= start && lines[start..=i].iter().all(|l| l.starts_with("# "));
        let line = if in_block || line.starts_with("# scoped_tokens = true") {
            &line[2..]
        } else {
            line
        };
        text.push_str(line);
        text.push('\n');
    }
    let (_dir, path) = write_config(&text);
    let out = azgate()
        .args(["check", "-c"])
        .arg(&path)
        .env_remove("DEVCENTER_ENDPOINT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        row_of(&stdout, "/vi-tokens"),
        "/vi-tokens vend vi vi (video_indexer) GET,OPTIONS"
    );
    assert!(
        row_of(&stdout, "/vi").contains("(video_indexer, scoped_tokens)"),
        "{stdout}"
    );
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
fn check_refuses_listeners_that_would_collide() {
    for (server, admin) in [
        ("127.0.0.1:18080", "127.0.0.1:18080"),
        ("127.0.0.1:18080", "0.0.0.0:18080"),
    ] {
        let (_dir, path) = write_config(&format!(
            "[server]\nlisten = \"{server}\"\n[admin]\nlisten = \"{admin}\"\n\
             [admin.inbound]\nallow = [\"10.0.0.0/8\"]\n"
        ));
        let out = azgate().args(["check", "-c"]).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{server} vs {admin}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "admin.listen: {admin} collides with server.listen = {server}"
            )),
            "{stderr}"
        );
    }
    // Port 0 asks for a fresh port each time: never a collision.
    let (_dir, path) =
        write_config("[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    let out = azgate().args(["check", "-c"]).arg(&path).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_and_serve_refuse_tls_files_serve_could_not_use_and_exit_2() {
    let files = TlsFiles::new("server", None);
    let dir = files.dir.path();
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let expired = files
        .ca
        .server_valid("old-admin", now - 30 * day, now - day);
    std::fs::write(dir.join("admin.pem"), &expired.cert_pem).unwrap();
    std::fs::write(dir.join("admin.key"), &expired.key_pem).unwrap();
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [server.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [admin.tls]\ncert = \"admin.pem\"\nkey = \"admin.key\"\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\ntypo = 1\n",
    )
    .unwrap();
    // A key that belongs to another certificate: `serve` used to be the first to notice.
    let stray = files.ca.server("other");
    std::fs::write(&files.key, &stray.key_pem).unwrap();
    let file = config.display().to_string();
    for command in ["check", "serve"] {
        let out = azgate()
            .args([command, "-c"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        for want in [
            format!("{file}: server.tls: cannot use the certificate"),
            format!("{file}: admin.tls.cert: the certificate \"CN=old-admin\""),
            format!("{file}: routes[0].typo: unknown key"),
            "azgate: the config has 3 problem(s)".to_string(),
        ] {
            assert!(
                stderr.contains(&want),
                "{command}: no {want:?} in:\n{stderr}"
            );
        }
        assert!(stderr.contains("expired at"), "{stderr}");
        let key_body = stray.key_pem.lines().nth(1).unwrap();
        assert!(!stderr.contains(key_body), "{stderr}");
    }

    // Not valid yet is refused the same way; valid files pass.
    files.write(&files.ca.server_valid("future", now + day, now + 90 * day));
    let fine = files.ca.server("admin");
    std::fs::write(dir.join("admin.pem"), &fine.cert_pem).unwrap();
    std::fs::write(dir.join("admin.key"), &fine.key_pem).unwrap();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("typo = 1\n", "");
    std::fs::write(&config, text).unwrap();
    let out = azgate()
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("server.tls.cert: the certificate \"CN=future\"")
            && stderr.contains("is not valid before"),
        "{stderr}"
    );
    files.write(&files.ca.server("server"));
    let out = azgate()
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn token_needs_only_the_variables_of_its_credential() {
    let (_dir, path) = write_config(
        r#"
        [server]
        listen = "${CLI_TEST_UNSET_LISTEN}"
        [credentials.key]
        type = "subscription_key"
        key = "${CLI_TEST_KEY}"
        [credentials.other]
        type = "client_secret"
        tenant = "contoso"
        client_id = "app"
        client_secret = "${CLI_TEST_UNSET_SECRET}"
        scope = "https://management.azure.com/.default"
        [[routes]]
        prefix = "/a"
        upstream = "http://127.0.0.1:1"
        credential = "other"
        api_keys = ["${CLI_TEST_UNSET_ROUTE_KEY}"]
        "#,
    );
    let out = azgate()
        .args(["token", "key", "-c"])
        .arg(&path)
        .env("CLI_TEST_KEY", "the-key-value")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "the-key-value\n");
    assert!(stderr.is_empty(), "{stderr}");

    // A problem in the credential asked for is still a config error, and only it is named.
    let out = azgate()
        .args(["token", "other", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "credentials.other.client_secret: environment variable CLI_TEST_UNSET_SECRET is not set"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("CLI_TEST_UNSET_LISTEN") && !stderr.contains("CLI_TEST_UNSET_ROUTE_KEY"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    // `check` still validates the whole file.
    let out = azgate()
        .args(["check", "-c"])
        .arg(&path)
        .env("CLI_TEST_KEY", "the-key-value")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn token_and_probe_print_a_failure_once() {
    let (_dir, path) = write_config(
        r#"
        [credentials.broken]
        type = "client_secret"
        tenant = "contoso"
        client_id = "app"
        client_secret = "not-printed-secret"
        scope = "https://management.azure.com/.default"
        token_url = "http://127.0.0.1:1/token"
        "#,
    );
    let out = azgate()
        .args(["token", "broken", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reason = stderr
        .lines()
        .find_map(|l| l.split_once("is unavailable: ").map(|(_, r)| r.to_string()))
        .unwrap_or_else(|| panic!("no failure line:\n{stderr}"));
    assert_eq!(stderr.matches(reason.as_str()).count(), 1, "{stderr}");

    let out = azgate()
        .args(["check", "--probe", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("FAILED"), "{all}");
    assert_eq!(all.matches(reason.as_str()).count(), 1, "{all}");
    assert!(!all.contains("not-printed-secret"));
}

/// `azgate ARGS` on a blocking thread, so in-process mocks keep serving meanwhile.
async fn run(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || azgate().args(args).output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn token_prints_a_read_only_viewer_token_for_a_video_or_a_project() {
    const KEY: &str = "VI-SUBSCRIPTION-KEY-NEVER-PRINTED";
    let vi = MockVideoIndexer::start().await;
    // A classic account whose own token may edit: a viewer token still may not.
    let (_dir, path) = write_config(&format!(
        r#"
        [credentials.vi]
        type = "video_indexer"
        location = "trial"
        account_id = "acc-1"
        subscription_key = "{KEY}"
        allow_edit = true
        api_url = "{}"
        [credentials.key]
        type = "subscription_key"
        key = "plain-key"
        "#,
        vi.url
    ));
    let config = path.display().to_string();

    for (flag, id, scoped) in [
        ("--video", "v-1_x", "Videos"),
        ("--project", "p1", "Projects"),
    ] {
        let out = run(&["token", "vi", flag, id, "-c", &config]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{flag}: {stderr}");
        assert!(stderr.is_empty(), "{flag}: {stderr}");
        let call = vi.calls().pop().expect("a token call");
        assert_eq!(
            call.path,
            format!("/auth/trial/Accounts/acc-1/{scoped}/{id}/AccessToken")
        );
        assert_eq!(call.query.as_deref(), Some("allowEdit=false"), "{flag}");
        assert_eq!(call.header("ocp-apim-subscription-key"), Some(KEY));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("vi-token-{}\n", vi.call_count()),
            "{flag}: only the token on stdout"
        );
    }

    // Video Indexer refusing: its reason once on stderr, nothing on stdout, exit 1.
    vi.respond_with(|_, _| vi_error(404, "BREAKDOWN_NOT_FOUND", "Video 'gone' was not found"));
    let out = run(&["token", "vi", "--video", "gone", "-c", &config]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains("credential \"vi\" gave no viewer token for video \"gone\""),
        "{stderr}"
    );
    assert_eq!(stderr.matches("BREAKDOWN_NOT_FOUND").count(), 1, "{stderr}");
    assert!(!stderr.contains(KEY), "{stderr}");

    // Usage problems exit 2 and ask nothing of Video Indexer.
    let calls = vi.call_count();
    for (args, want) in [
        (
            vec!["token", "vi", "--video", "a/b"],
            "invalid value 'a/b' for '--video <ID>': not a Video Indexer id",
        ),
        (
            vec!["token", "vi", "--project", &"x".repeat(65)],
            "for '--project <ID>': not a Video Indexer id",
        ),
        (
            vec!["token", "vi", "--video", "v1", "--project", "p1"],
            "'--video <ID>' cannot be used with '--project <ID>'",
        ),
        (
            vec!["token", "key", "--video", "v1"],
            "credential \"key\" is a subscription_key credential; --video needs a video_indexer credential",
        ),
    ] {
        let mut args = args;
        args.extend(["-c", &config]);
        let out = run(&args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: no {want:?} in:\n{stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert_eq!(
        vi.call_count(),
        calls,
        "a usage problem reached Video Indexer"
    );
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
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown NAME is a config problem"
    );
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
        // The preset expansion says that body links (nextLink) are rewritten.
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with("/devcenter = devcenter:")
                    && l.contains("body links rewritten")),
            "{value}:\n{stdout}"
        );
    }
}

#[test]
fn check_warns_about_a_certificate_that_expires_within_14_days() {
    let files = TlsFiles::new("server", None);
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    files.write(&files.ca.server_valid("soon", now - day, now + 7 * day));
    let config = files.dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n",
    )
    .unwrap();
    let out = azgate()
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("server.tls.cert: the certificate \"CN=soon\" expires in 6days"),
        "{stderr}"
    );
    // A month left: no warning.
    files.write(&files.ca.server_valid("later", now - day, now + 30 * day));
    let out = azgate()
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("expires in"));
}
