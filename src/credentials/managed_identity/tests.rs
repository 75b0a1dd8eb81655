//! The managed identity source's request URLs, its description, and the `default` chain's
//! quick probe against a closed port and a silent one.

use super::*;
use crate::config::Audience;
use std::collections::HashMap;

fn source(vars: &[(&str, &str)], client_id: Option<&str>) -> ManagedIdentity {
    let config = ManagedIdentityConfig {
        audience: Audience::Scope("https://management.azure.com/.default".into()),
        client_id: client_id.map(str::to_string),
        endpoint: None,
    };
    let env = Env::from_map(
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    );
    ManagedIdentity::new(&config, &env)
}

#[test]
fn urls_per_protocol() {
    let imds = source(&[], Some("a b&c"));
    assert_eq!(
        imds.request_url().unwrap().as_str(),
        "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01\
         &resource=https%3A%2F%2Fmanagement.azure.com&client_id=a+b%26c"
    );
    let app = source(
        &[
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token"),
            ("IDENTITY_HEADER", "h"),
        ],
        None,
    );
    assert_eq!(
        app.request_url().unwrap().as_str(),
        "http://127.0.0.1:41741/msi/token?resource=https%3A%2F%2Fmanagement.azure.com\
         &api-version=2019-08-01"
    );
    // Only one of the two variables: not App Service.
    let half = source(&[("IDENTITY_ENDPOINT", "http://127.0.0.1:1/x")], None);
    assert!(half.describe().contains("IMDS"), "{}", half.describe());
    assert_eq!(app.attempts(), 1);
    assert_eq!(imds.attempts(), IMDS_ATTEMPTS);
    assert_eq!(source(&[], None).probing().attempts(), 1);
}

fn probe_at(endpoint: String) -> ManagedIdentity {
    crate::install_crypto_provider();
    let config = ManagedIdentityConfig {
        audience: Audience::Resource("https://management.azure.com".into()),
        client_id: None,
        endpoint: Some(endpoint),
    };
    ManagedIdentity::new(&config, &Env::from_map(HashMap::new())).probing()
}

/// The `default` chain's probe (not reachable through the public API until the chain
/// lands): a refused connection is one attempt and an immediate answer.
#[tokio::test]
async fn probing_a_closed_port_fails_fast() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let started = std::time::Instant::now();
    let err = probe_at(format!("http://{closed}/token"))
        .fetch_token()
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        err.message
            .starts_with("no managed identity endpoint answered at http://127.0.0.1:"),
        "{}",
        err.message
    );
    assert!(!err.message.contains("gave up"), "{}", err.message);
}

/// An endpoint that accepts but never answers (what a firewall or a stuck IMDS looks
/// like) is given up on at the probe's 2 s limit, not the normal 10 s one.
#[tokio::test(start_paused = true)]
async fn probing_a_silent_endpoint_gives_up_at_two_seconds() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    let err = probe_at(format!("http://{}/token", silent.local_addr().unwrap()))
        .fetch_token()
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited >= PROBE_CONNECT_TIMEOUT && waited <= PROBE_TIMEOUT,
        "{waited:?}"
    );
    assert!(err.message.ends_with(": timed out"), "{}", err.message);
    drop(silent);
}

#[test]
fn describe_hides_the_identity_header() {
    let app = source(
        &[
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token"),
            ("IDENTITY_HEADER", "very-secret-header"),
        ],
        Some("1234"),
    );
    let text = app.describe();
    assert!(!text.contains("very-secret-header"), "{text}");
    assert!(text.contains("client_id 1234"), "{text}");
}
