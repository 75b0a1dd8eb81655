//! `azure_cli`: the token of whoever ran `az login` on this machine, from
//! `az account get-access-token`. Meant for developers running azgate locally.
//!
//! `az` is looked up on the `PATH` of the `Env` at every fetch (so installing it later
//! works without a restart) and run with stdin closed, no colours and a 10 s limit: it is
//! a Python program that may stop to prompt, or hang on a network call.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chrono::TimeZone;

use super::token::{self, FetchError, FetchFuture, Token, TokenSource};
use crate::config::{Audience, AzureCliConfig};
use crate::env::Env;

/// What the Azure SDKs allow `az` too.
const AZ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AzureCli {
    audience: Audience,
    tenant: Option<String>,
    subscription: Option<String>,
    path: Option<String>,
    timeout: Duration,
}

impl AzureCli {
    pub fn new(config: &AzureCliConfig, env: &Env) -> Self {
        Self {
            audience: config.audience.clone(),
            tenant: config.tenant.clone(),
            subscription: config.subscription.clone(),
            path: env.get("PATH"),
            timeout: AZ_TIMEOUT,
        }
    }

    fn arguments(&self) -> Vec<&str> {
        let mut args = vec!["account", "get-access-token", "--output", "json"];
        match &self.audience {
            Audience::Scope(scope) => args.extend(["--scope", scope]),
            Audience::Resource(resource) => args.extend(["--resource", resource]),
        }
        if let Some(tenant) = &self.tenant {
            args.extend(["--tenant", tenant]);
        }
        if let Some(subscription) = &self.subscription {
            args.extend(["--subscription", subscription]);
        }
        args
    }

    async fn fetch_token(&self) -> Result<Token, FetchError> {
        let az = find_az(self.path.as_deref()).ok_or_else(|| {
            FetchError::new(
                "Azure CLI (`az`) not found on PATH; install it or use another credential type",
            )
            .unavailable()
        })?;
        let child = tokio::process::Command::new(&az)
            .args(self.arguments())
            .env("PATH", self.path.as_deref().unwrap_or_default())
            .env("AZURE_CORE_NO_COLOR", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Dropping the output future on timeout (or when the cache gives up) must not
            // leave `az` running.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| FetchError::new(format!("cannot run {}: {e}", az.display())))?;
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                FetchError::new(format!(
                    "az did not answer within {} s",
                    self.timeout.as_secs_f64()
                ))
            })?
            .map_err(|e| FetchError::new(format!("cannot read the output of az: {e}")))?;
        if !output.status.success() {
            return Err(failure(output.status.code(), &output.stderr));
        }
        parse_output(&output.stdout)
    }
}

impl TokenSource for AzureCli {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(self.fetch_token())
    }

    fn describe(&self) -> String {
        let mut text = match &self.audience {
            Audience::Scope(scope) => format!("azure_cli (scope {scope}"),
            Audience::Resource(resource) => format!("azure_cli (resource {resource}"),
        };
        if let Some(tenant) = &self.tenant {
            text.push_str(&format!(", tenant {tenant}"));
        }
        if let Some(subscription) = &self.subscription {
            text.push_str(&format!(", subscription {subscription}"));
        }
        text.push(')');
        text
    }
}

/// The first executable file named `az` in `path`'s directories.
fn find_az(path: Option<&str>) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join("az"))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// A non-zero exit, named by its most likely cause.
fn failure(code: Option<i32>, stderr: &[u8]) -> FetchError {
    let stderr = String::from_utf8_lossy(stderr);
    let first_line = stderr
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(token::snippet)
        .unwrap_or_else(|| "(nothing on stderr)".to_string());
    let exit = match code {
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".to_string(),
    };
    if stderr.contains("az login") {
        FetchError::new(format!(
            "Azure CLI not logged in: run `az login` (az: {first_line})"
        ))
        .unavailable()
    } else {
        FetchError::new(format!("az failed ({exit}): {first_line}"))
    }
}

/// `az`'s JSON. Nothing of stdout goes into an error message: it may hold the token.
fn parse_output(stdout: &[u8]) -> Result<Token, FetchError> {
    let json: serde_json::Value = serde_json::from_slice(stdout).map_err(|_| {
        FetchError::new(format!(
            "az printed output that is not JSON ({} bytes)",
            stdout.len()
        ))
    })?;
    let Some(value) = json["accessToken"].as_str().filter(|t| !t.is_empty()) else {
        return Err(FetchError::new("az's output has no accessToken"));
    };
    let expires_at = expiry(&json)?;
    Token::new(value.to_string(), token::remaining(expires_at))
}

/// Epoch seconds from `expires_on` (CLI ≥ 2.54, UTC), else from `expiresOn` (local time).
fn expiry(json: &serde_json::Value) -> Result<u64, FetchError> {
    let epoch = match &json["expires_on"] {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    if let Some(epoch) = epoch {
        return Ok(epoch);
    }
    match json["expiresOn"].as_str() {
        Some(text) => local_time(text).ok_or_else(|| {
            FetchError::new(format!(
                "az's output has an unreadable expiresOn: \"{text}\""
            ))
        }),
        None => Err(FetchError::new(
            "az's output has neither expires_on nor expiresOn",
        )),
    }
}

/// `"2023-10-31 21:59:10.000000"`: az prints its expiry in the machine's local time.
fn local_time(text: &str) -> Option<u64> {
    let naive = chrono::NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f").ok()?;
    // In the hour a DST change repeats, either reading is within an hour of the truth;
    // take the earlier so the token is refreshed too early rather than too late.
    let local = chrono::Local.from_local_datetime(&naive).earliest()?;
    u64::try_from(local.timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expiry_prefers_expires_on() {
        let both = json!({"expires_on": 1698760750, "expiresOn": "2000-01-01 00:00:00.000000"});
        assert_eq!(expiry(&both).unwrap(), 1698760750);
        assert_eq!(
            expiry(&json!({"expires_on": "1698760750"})).unwrap(),
            1698760750
        );
        let local = chrono::Local
            .with_ymd_and_hms(2023, 10, 31, 21, 59, 10)
            .earliest()
            .unwrap();
        for text in ["2023-10-31 21:59:10.000000", "2023-10-31 21:59:10"] {
            let got = expiry(&json!({ "expiresOn": text })).unwrap();
            assert_eq!(got as i64, local.timestamp(), "{text}");
        }
        assert!(expiry(&json!({"expiresOn": "soon"})).is_err());
        assert!(expiry(&json!({})).is_err());
    }

    #[test]
    fn failures_name_the_cause() {
        let err = failure(
            Some(1),
            b"\nERROR: Please run 'az login' to setup account.\nmore\n",
        );
        assert_eq!(
            err.message,
            "Azure CLI not logged in: run `az login` (az: ERROR: Please run 'az login' to setup account.)"
        );
        let err = failure(Some(2), b"ERROR: unrecognized arguments: --bogus\n");
        assert_eq!(
            err.message,
            "az failed (exit code 2): ERROR: unrecognized arguments: --bogus"
        );
        assert_eq!(
            failure(None, b"").message,
            "az failed (killed by a signal): (nothing on stderr)"
        );
    }

    #[cfg(unix)]
    #[test]
    fn path_lookup_skips_what_is_not_an_executable_az() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        for d in [&a, &b, &c] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::create_dir(a.join("az")).unwrap(); // a directory
        std::fs::write(b.join("az"), "#!/bin/sh\n").unwrap(); // not executable
        std::fs::write(c.join("az"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(c.join("az"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("::{}:{}:{}", a.display(), b.display(), c.display());
        assert_eq!(find_az(Some(&path)), Some(c.join("az")));
        assert_eq!(find_az(Some(&b.display().to_string())), None);
        assert_eq!(find_az(None), None);
    }

    /// The timeout with a short limit in real time; the integration test covers the 10 s
    /// one on a paused clock.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_silent_az_is_killed_at_the_timeout() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("az");
        std::fs::write(&script, "#!/bin/sh\nexec /bin/sleep 30\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = AzureCliConfig {
            audience: Audience::Resource("https://management.azure.com".into()),
            tenant: None,
            subscription: None,
        };
        let env = Env::from_map([("PATH".to_string(), dir.path().display().to_string())].into());
        let mut cli = AzureCli::new(&config, &env);
        cli.timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let err = cli.fetch_token().await.unwrap_err();
        assert_eq!(err.message, "az did not answer within 0.2 s");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
