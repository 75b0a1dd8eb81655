//! The `default` credential follows DefaultAzureCredential's rule: it moves past a source
//! only when that source is not set up here, and stops with the error of a source that is
//! set up but fails — it never switches identity quietly. The sources it looked at show
//! in `/status.json` and `check --probe`.
#![cfg(unix)]

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use azgate::credentials::token::StepOutcome;
use azgate::credentials::{Credential, CredentialSet};
use support::azure_cli::FakeAz;
use support::entra::MockEntra;
use support::{Azgate, MockUpstream, client, status};

const CREDENTIAL: &str =
    "[credentials.d]\ntype = \"default\"\nscope = \"https://management.azure.com/.default\"\n";

/// A logged-in `az` printing a token for another identity.
fn logged_in_az() -> FakeAz {
    FakeAz::printing(&serde_json::json!({
        "accessToken": "cli-user-token",
        "expires_on": support::video_indexer::now_secs() + 3600,
        "tokenType": "Bearer",
    }))
}

/// A local port nothing listens on, standing in for IMDS on a machine without one.
fn closed_port() -> String {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    format!("http://{addr}")
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn default_credential(env: HashMap<String, String>) -> Arc<Credential> {
    support::init();
    let config = azgate::config::parse(CREDENTIAL, "t.toml", Path::new("."), &|_| None).unwrap();
    let set = CredentialSet::build(&config.credentials, &azgate::env::Env::from_map(env));
    set.get("d").unwrap().clone()
}

fn tried(credential: &Credential) -> Vec<(&'static str, StepOutcome)> {
    credential
        .cache()
        .unwrap()
        .tried()
        .into_iter()
        .map(|s| (s.source, s.outcome))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_wrong_client_secret_stops_the_chain_instead_of_falling_back_to_the_cli() {
    let entra = MockEntra::start().await;
    entra.refuse_client_secret();
    let az = logged_in_az();
    let imds = closed_port();
    let credential = default_credential(vars(&[
        ("AZURE_TENANT_ID", "contoso"),
        ("AZURE_CLIENT_ID", "app-1"),
        ("AZURE_CLIENT_SECRET", "wrong-secret"),
        ("AZURE_AUTHORITY_HOST", &entra.url),
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST", &imds),
        ("PATH", &az.path()),
    ]));

    let err = credential.reveal().await.unwrap_err();
    assert!(err.reason.starts_with("environment: "), "{}", err.reason);
    assert!(err.reason.contains("AADSTS7000215"), "{}", err.reason);
    assert!(!err.reason.contains("wrong-secret"), "{}", err.reason);
    assert!(
        !az.dir.path().join("args").exists(),
        "the chain went on to the Azure CLI"
    );
    assert_eq!(tried(&credential), [("environment", StepOutcome::Failed)]);

    // Later fetches retry the same source, after the cache's backoff.
    tokio::time::advance(Duration::from_millis(1100)).await;
    let err = credential.reveal().await.unwrap_err();
    assert!(err.reason.contains("AADSTS7000215"), "{}", err.reason);
    assert_eq!(entra.call_count(), 2);
    assert!(!az.dir.path().join("args").exists());

    // Once the secret is accepted, the same source gives the token.
    entra.come_back();
    tokio::time::advance(Duration::from_millis(2100)).await;
    assert_eq!(credential.reveal().await.unwrap(), "token-3");
    assert_eq!(tried(&credential), [("environment", StepOutcome::Used)]);
    assert!(!az.dir.path().join("args").exists());
}

#[tokio::test]
async fn sources_not_set_up_are_passed_over_and_listed() {
    let az = logged_in_az();
    let imds = closed_port();
    let credential = default_credential(vars(&[
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST", &imds),
        ("PATH", &az.path()),
    ]));
    assert_eq!(credential.reveal().await.unwrap(), "cli-user-token");
    assert_eq!(
        tried(&credential),
        [
            ("environment", StepOutcome::Unavailable),
            ("workload identity", StepOutcome::Unavailable),
            ("managed identity", StepOutcome::Unavailable),
            ("Azure CLI", StepOutcome::Used),
        ]
    );
    let steps = credential.cache().unwrap().tried();
    assert!(
        steps[2]
            .reason
            .as_deref()
            .unwrap()
            .contains("no managed identity endpoint answered"),
        "{steps:?}"
    );
}

#[tokio::test]
async fn identity_not_assigned_and_az_not_logged_in_count_as_unavailable() {
    // IMDS answers 400: no identity assigned to this host.
    let imds = MockUpstream::start(|_| async {
        http::Response::builder()
            .status(400)
            .body(support::full(
                r#"{"error":"invalid_request","error_description":"Identity not found"}"#,
            ))
            .unwrap()
    })
    .await;
    let az = FakeAz::new("echo \"ERROR: Please run 'az login' to setup account.\" >&2; exit 1");
    let credential = default_credential(vars(&[
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST", &imds.url),
        ("PATH", &az.path()),
    ]));
    let err = credential.reveal().await.unwrap_err();
    assert!(
        err.reason.starts_with("no credential source is available"),
        "{}",
        err.reason
    );
    for part in [
        "managed identity not assigned",
        "az login",
        "AZURE_TENANT_ID",
    ] {
        assert!(err.reason.contains(part), "no {part:?} in {}", err.reason);
    }
    assert!(
        tried(&credential)
            .iter()
            .all(|(_, outcome)| *outcome == StepOutcome::Unavailable)
    );
}

#[tokio::test]
async fn status_and_probe_list_the_sources_tried() {
    let entra = MockEntra::start().await;
    entra.refuse_client_secret();
    let upstream = MockUpstream::echo().await;
    let env = [
        ("AZURE_TENANT_ID", "contoso"),
        ("AZURE_CLIENT_ID", "app-1"),
        ("AZURE_CLIENT_SECRET", "wrong-secret"),
        ("AZURE_AUTHORITY_HOST", entra.url.as_str()),
    ];
    let owned: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let text = support::config_text(&format!(
        "{CREDENTIAL}[[routes]]\nprefix = \"/arm\"\nupstream = \"{}\"\ncredential = \"d\"\n",
        upstream.url
    ));
    let gw = Azgate::start_with(&text, Path::new("."), &env.iter().copied().collect()).await;
    assert_eq!(status(client().get(format!("{}/arm/x", gw.url))).await, 502);
    let admin = gw.admin_url.clone().unwrap();
    let page = support::status_json(&admin).await;
    let credential = &page["credentials"][0];
    assert_eq!(credential["name"], "d");
    assert!(
        credential["last_error"]
            .as_str()
            .unwrap()
            .contains("AADSTS7000215")
    );
    let steps = credential["sources_tried"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{credential}");
    assert_eq!(steps[0]["source"], "environment");
    assert_eq!(steps[0]["outcome"], "failed");
    assert!(!page.to_string().contains("wrong-secret"));
    gw.stop().await;

    // `check --probe` fails, names the cause once and lists the source it stopped at.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, CREDENTIAL).unwrap();
    let bin = env!("CARGO_BIN_EXE_azgate");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["check", "--probe", "-c"])
            .arg(&path)
            .env_remove("AZGATE_CONFIG")
            .env_remove("RUST_LOG")
            .envs(owned)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(stdout.matches("AADSTS7000215").count(), 1, "{stdout}");
    assert!(
        stdout.contains("sources tried (default chain):"),
        "{stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("d ") && l.contains("environment"))
        .unwrap_or_else(|| panic!("no row for the environment source:\n{stdout}"));
    assert!(row.contains("failed"), "{row}");
    assert!(!stdout.contains("wrong-secret"));
}
