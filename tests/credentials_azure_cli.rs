//! `azure_cli` against a fake `az`: a shell script in a temp dir that becomes the Env's
//! PATH, recording its arguments and environment and printing canned output.
#![cfg(unix)]

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use azgate::credentials::{Credential, CredentialSet};
use support::azure_cli::FakeAz;
use support::{Azgate, MockUpstream, client, json, seen};

/// The credential `cli` built from `table` (its keys after `type`), with `PATH` = `path`.
fn credential(table: &str, path: &str) -> Arc<Credential> {
    support::init();
    let text = format!(
        "[credentials.cli]\ntype = \"azure_cli\"\n{table}\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9\"\ncredential = \"cli\"\n"
    );
    let config = azgate::config::parse(&text, "test.toml", Path::new("."), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let env = azgate::env::Env::from_map(HashMap::from([("PATH".to_string(), path.to_string())]));
    let set = CredentialSet::build(&config.credentials, &env);
    set.get("cli").unwrap().clone()
}

const SCOPE: &str = "scope = \"https://management.azure.com/.default\"";

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn expires_in(credential: &Credential) -> u64 {
    credential
        .cache()
        .unwrap()
        .status()
        .expires_in
        .unwrap()
        .as_secs()
}

async fn error_of(credential: &Credential) -> String {
    credential.reveal().await.unwrap_err().to_string()
}

#[tokio::test]
async fn scope_tenant_and_subscription_become_arguments() {
    let az = FakeAz::printing(&serde_json::json!({
        "accessToken": "cli-token",
        // expires_on wins over a (wrong) expiresOn.
        "expiresOn": "2001-01-01 00:00:00.000000",
        "expires_on": now_secs() + 3000,
        "subscription": "sub-1",
        "tenant": "contoso",
        "tokenType": "Bearer",
    }));
    let cli = credential(
        &format!("{SCOPE}\ntenant = \"contoso\"\nsubscription = \"sub-1\""),
        &az.path(),
    );

    assert_eq!(cli.reveal().await.unwrap(), "cli-token");
    assert_eq!(
        az.args(),
        [
            "account",
            "get-access-token",
            "--output",
            "json",
            "--scope",
            "https://management.azure.com/.default",
            "--tenant",
            "contoso",
            "--subscription",
            "sub-1",
        ]
    );
    assert_eq!(
        az.env(),
        format!("PATH={}\nAZURE_CORE_NO_COLOR=true\n", az.path())
    );
    assert!(expires_in(&cli).abs_diff(3000) <= 2, "{}", expires_in(&cli));
    let described = cli.cache().unwrap().describe();
    assert_eq!(
        described,
        "azure_cli (scope https://management.azure.com/.default, tenant contoso, subscription sub-1)"
    );
}

#[tokio::test]
async fn a_resource_is_passed_as_resource() {
    let az = FakeAz::printing(&serde_json::json!({
        "accessToken": "v1-token",
        "expires_on": (now_secs() + 600).to_string(),
    }));
    let cli = credential("resource = \"https://rest.media.azure.net\"", &az.path());

    assert_eq!(cli.reveal().await.unwrap(), "v1-token");
    assert_eq!(
        az.args(),
        [
            "account",
            "get-access-token",
            "--output",
            "json",
            "--resource",
            "https://rest.media.azure.net",
        ]
    );
}

#[tokio::test]
async fn expires_on_alone_is_read_as_local_time() {
    let at = chrono::Local::now() + chrono::Duration::minutes(45);
    let az = FakeAz::printing(&serde_json::json!({
        "accessToken": "old-cli-token",
        "expiresOn": at.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        "tokenType": "Bearer",
    }));
    let cli = credential(SCOPE, &az.path());

    assert_eq!(cli.reveal().await.unwrap(), "old-cli-token");
    let left = expires_in(&cli);
    assert!(left.abs_diff(45 * 60) <= 5, "{left}s left");
}

#[tokio::test]
async fn not_logged_in_says_run_az_login() {
    let az = FakeAz::new("echo \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1");
    let cli = credential(SCOPE, &az.path());

    let message = error_of(&cli).await;
    assert!(
        message.contains("not logged in: run `az login`"),
        "{message}"
    );
    assert!(
        message.contains("Please run 'az login' to setup account."),
        "{message}"
    );
}

#[tokio::test]
async fn other_failures_give_the_exit_code_and_first_stderr_line() {
    let az = FakeAz::new("echo 'WARNING: something odd' >&2\necho 'second line' >&2\nexit 2");
    let cli = credential(SCOPE, &az.path());

    let message = error_of(&cli).await;
    assert!(
        message.ends_with("az failed (exit code 2): WARNING: something odd"),
        "{message}"
    );
    assert!(!message.contains("second line"), "{message}");
}

#[tokio::test]
async fn az_missing_from_path() {
    let empty = tempfile::tempdir().unwrap();
    // A non-executable `az` is not an `az`.
    std::fs::write(empty.path().join("az"), "#!/bin/sh\n").unwrap();
    let cli = credential(SCOPE, &empty.path().display().to_string());

    let message = error_of(&cli).await;
    assert!(
        message.ends_with(
            "Azure CLI (`az`) not found on PATH; install it or use another credential type"
        ),
        "{message}"
    );
}

/// The 10 s limit on a paused clock: the runtime idles while `az` sleeps, so tokio jumps
/// straight to the deadline. Then the script must have been killed, not left running.
#[tokio::test(start_paused = true)]
async fn a_hanging_az_is_stopped_after_ten_seconds() {
    let az = FakeAz::new("echo $$ > '{dir}/pid'\nexec /bin/sleep 30");
    let cli = credential(SCOPE, &az.path());

    let real_start = std::time::Instant::now();
    let started = tokio::time::Instant::now();
    let message = error_of(&cli).await;
    assert!(
        message.ends_with("az did not answer within 10 s"),
        "{message}"
    );
    assert!(started.elapsed() >= Duration::from_secs(10));
    assert!(real_start.elapsed() < Duration::from_secs(5));

    // The clock jumped at once, so the script may have been killed before it wrote its
    // pid; if it was not, it writes it within milliseconds and must then die.
    let pid_file = az.dir.path().join("pid");
    let Some(pid) = within(Duration::from_secs(1), || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .filter(|p| p.ends_with('\n'))
    }) else {
        return;
    };
    let stat = PathBuf::from(format!("/proc/{}/stat", pid.trim()));
    if Path::new("/proc/self/stat").exists() {
        let stopped = within(Duration::from_secs(3), || {
            // Gone, or a zombie waiting to be reaped: either way no longer running.
            let state = std::fs::read_to_string(&stat).ok();
            let dead = state
                .as_deref()
                .and_then(|s| s.rsplit(')').next())
                .is_none_or(|rest| rest.trim_start().starts_with('Z'));
            dead.then_some(())
        });
        assert!(stopped.is_some(), "az (pid {}) still runs", pid.trim());
    }
}

/// Polls `check` in real time (the tokio clock may be paused) until it gives a value.
fn within<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn unreadable_output_is_a_clear_error_without_the_token() {
    let cases = [
        (
            "printf 'not json at all'",
            "az printed output that is not JSON",
        ),
        (
            "printf '{\"tokenType\":\"Bearer\"}'",
            "az's output has no accessToken",
        ),
        (
            "printf '{\"accessToken\":\"leaky-token\"}'",
            "az's output has neither expires_on nor expiresOn",
        ),
        (
            "printf '{\"accessToken\":\"leaky-token\",\"expiresOn\":\"tomorrow\"}'",
            "az's output has an unreadable expiresOn: \"tomorrow\"",
        ),
        (
            "printf '{\"accessToken\":\"leaky-token'",
            "az printed output that is not JSON",
        ),
    ];
    for (body, want) in cases {
        let az = FakeAz::new(body);
        let cli = credential(SCOPE, &az.path());
        let message = error_of(&cli).await;
        assert!(message.contains(want), "{body}: {message}");
        assert!(!message.contains("leaky-token"), "{message}");
    }
}

#[tokio::test]
async fn the_proxy_injects_the_cli_token() {
    let az = FakeAz::printing(&serde_json::json!({
        "accessToken": "proxied-cli-token",
        "expires_on": now_secs() + 3600,
    }));
    let upstream = MockUpstream::echo().await;
    let text = support::config_text(&format!(
        r#"
        [credentials.cli]
        type = "azure_cli"
        {SCOPE}
        [[routes]]
        prefix = "/arm"
        upstream = "{}"
        credential = "cli"
        "#,
        upstream.url
    ));
    let path = az.path();
    let env = HashMap::from([("PATH", path.as_str())]);
    let gw = Azgate::start_with(&text, Path::new("."), &env).await;

    let response = client()
        .get(format!("{}/arm/subscriptions", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo = json(response).await;
    assert_eq!(
        seen(&echo, "authorization"),
        vec!["Bearer proxied-cli-token"]
    );
    gw.stop().await;
}
