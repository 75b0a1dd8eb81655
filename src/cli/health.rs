//! `azgate health URL`: the probe a container image runs without any shell tools.

use std::process::ExitCode;
use std::time::Duration;

use super::runtime;

/// Bytes of an unhealthy answer's body read for the message: `/readyz` says there why it
/// is not ready, and a health check must not wait on a large body.
const HEALTH_BODY_READ: usize = 1024;

pub(super) fn health_timeout(text: &str) -> Result<Duration, String> {
    match crate::config::parse_duration(text)? {
        d if d.is_zero() => Err("must be greater than zero".to_string()),
        d => Ok(d),
    }
}

/// `azgate health URL`: one line on stdout when healthy, on stderr otherwise.
pub(super) fn health(url: &str, timeout: Duration) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let outcome = runtime.block_on(async {
        // reqwest's own timeout covers the exchange; this one also bounds DNS and body reads.
        tokio::time::timeout(timeout, probe_health(url, timeout))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer from {url} within {}",
                    humantime::format_duration(timeout)
                ))
            })
    });
    match outcome {
        Ok(line) => {
            println!("azgate health: {line}");
            ExitCode::SUCCESS
        }
        Err(line) => {
            eprintln!("azgate health: {line}");
            ExitCode::FAILURE
        }
    }
}

async fn probe_health(url: &str, timeout: Duration) -> Result<String, String> {
    let target = reqwest::Url::parse(url).map_err(|e| format!("\"{url}\" is not a URL: {e}"))?;
    if !matches!(target.scheme(), "http" | "https") {
        return Err(format!("\"{url}\" is not an http(s) URL"));
    }
    // No proxy variables: a probe goes straight to the address it names, also inside a
    // container whose environment sets HTTPS_PROXY for the upstream traffic.
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("azgate-health/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let mut response = client
        .get(target)
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {}", error_chain(&e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(format!("{url} answered {status}"));
    }
    let mut body = Vec::new();
    while body.len() < HEALTH_BODY_READ {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(HEALTH_BODY_READ);
    Err(format!(
        "{url} answered {status}: {}",
        crate::credentials::token::snippet(&String::from_utf8_lossy(&body))
    ))
}

/// An error and its causes on one line ("… : tcp connect error: Connection refused").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}
