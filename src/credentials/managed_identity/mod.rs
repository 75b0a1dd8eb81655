//! `managed_identity`: a token from the identity endpoint of the host azgate runs on.
//!
//! App Service and Functions announce theirs with `IDENTITY_ENDPOINT` and
//! `IDENTITY_HEADER`; everywhere else (VMs, scale sets, AKS nodes, Container Instances)
//! it is IMDS at a link-local address, or the `endpoint` the config names. IMDS answers
//! 404/410/429/5xx while it starts or updates, so those are retried with backoff inside
//! one fetch; App Service errors go straight back to the cache, which backs off itself.
//!
//! `probing()` is the `default` chain's quick look: one attempt with short timeouts, so a
//! machine without an identity endpoint says so in about a second instead of hanging.

mod wire;

use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tokio::time::Instant;

use super::token::{self, FetchError, FetchFuture, Token, TokenSource};
use crate::config::ManagedIdentityConfig;
use crate::env::Env;
use crate::secret::Secret;
use wire::{error_detail, parse_token};

const IMDS_URL: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
const IMDS_API_VERSION: &str = "2018-02-01";
const APP_SERVICE_API_VERSION: &str = "2019-08-01";

/// IMDS attempts per fetch: the first and four retries.
const IMDS_ATTEMPTS: u32 = 5;
/// Wait before the first retry; doubles per retry (1, 2, 4, 8 s).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Every attempt and wait of one fetch together. Below the cache's 60 s limit on a fetch,
/// so our own (clearer) error reaches the user rather than the cache's timeout.
const FETCH_BUDGET: Duration = Duration::from_secs(50);
/// One attempt. The endpoint is on the host, so a healthy one answers in milliseconds.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Probing: a link-local address that nobody serves never refuses, it just stays silent,
/// so only a short connect timeout makes "no IMDS here" quick.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct ManagedIdentity {
    endpoint: Endpoint,
    resource: String,
    client_id: Option<String>,
    probing: bool,
}

enum Endpoint {
    Imds { url: String },
    AppService { url: String, header: Secret },
}

impl Endpoint {
    fn url(&self) -> &str {
        match self {
            Endpoint::Imds { url } | Endpoint::AppService { url, .. } => url,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Endpoint::Imds { .. } => "IMDS",
            Endpoint::AppService { .. } => "the App Service identity endpoint",
        }
    }
}

/// How one attempt ended.
enum Attempt {
    Done(Result<Token, FetchError>),
    /// A failure IMDS may recover from by itself.
    Transient(FetchError),
}

impl ManagedIdentity {
    pub fn new(config: &ManagedIdentityConfig, env: &Env) -> Self {
        let endpoint = match (env.get("IDENTITY_ENDPOINT"), env.get("IDENTITY_HEADER")) {
            (Some(url), Some(header)) => Endpoint::AppService {
                url,
                header: Secret::new(header),
            },
            _ => Endpoint::Imds {
                url: config
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| IMDS_URL.to_string()),
            },
        };
        Self {
            endpoint,
            resource: config.audience.resource(),
            client_id: config.client_id.clone(),
            probing: false,
        }
    }

    /// For the `default` chain: one attempt, short timeouts.
    pub fn probing(mut self) -> Self {
        self.probing = true;
        self
    }

    fn attempts(&self) -> u32 {
        match (&self.endpoint, self.probing) {
            (Endpoint::Imds { .. }, false) => IMDS_ATTEMPTS,
            _ => 1,
        }
    }

    /// The endpoint URL with the query of its protocol.
    fn request_url(&self) -> Result<reqwest::Url, FetchError> {
        let mut url = reqwest::Url::parse(self.endpoint.url()).map_err(|e| {
            FetchError::new(format!(
                "the managed identity endpoint \"{}\" is not a URL: {e}",
                self.endpoint.url()
            ))
        })?;
        {
            let mut query = url.query_pairs_mut();
            match &self.endpoint {
                Endpoint::Imds { .. } => query
                    .append_pair("api-version", IMDS_API_VERSION)
                    .append_pair("resource", &self.resource),
                Endpoint::AppService { .. } => query
                    .append_pair("resource", &self.resource)
                    .append_pair("api-version", APP_SERVICE_API_VERSION),
            };
            if let Some(client_id) = &self.client_id {
                query.append_pair("client_id", client_id);
            }
        }
        Ok(url)
    }

    /// Built per fetch (about once an hour) rather than in `new`, which cannot fail.
    fn client(&self) -> Result<reqwest::Client, FetchError> {
        let (connect, total) = if self.probing {
            (PROBE_CONNECT_TIMEOUT, PROBE_TIMEOUT)
        } else {
            (CONNECT_TIMEOUT, ATTEMPT_TIMEOUT)
        };
        reqwest::Client::builder()
            .connect_timeout(connect)
            .timeout(total)
            // The endpoint is on this host: a proxy could not reach it, and must not see
            // the identity header or the token.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("azgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::new(format!("cannot build the HTTP client: {e}")))
    }

    async fn fetch_token(&self) -> Result<Token, FetchError> {
        let url = self.request_url()?;
        let client = self.client()?;
        let deadline = Instant::now() + FETCH_BUDGET;
        let attempts = self.attempts();
        let mut attempt = 1;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let error = match self.attempt(&client, &url, left).await {
                Attempt::Done(result) => return result,
                Attempt::Transient(error) if attempts == 1 => return Err(error),
                Attempt::Transient(error) => error,
            };
            let wait = FIRST_BACKOFF
                .saturating_mul(1 << (attempt - 1))
                .max(error.retry_after.unwrap_or_default());
            let out_of_time = Instant::now() + wait >= deadline;
            if attempt >= attempts || out_of_time {
                let attempts = if attempt == 1 { "attempt" } else { "attempts" };
                return Err(FetchError {
                    message: format!("{} (gave up after {attempt} {attempts})", error.message),
                    ..error
                });
            }
            tracing::debug!(
                attempt,
                wait_ms = wait.as_millis() as u64,
                "IMDS is not ready, retrying: {error}"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        client: &reqwest::Client,
        url: &reqwest::Url,
        left: Duration,
    ) -> Attempt {
        let mut request = client.get(url.clone());
        if !self.probing {
            request = request.timeout(ATTEMPT_TIMEOUT.min(left));
        }
        request = match &self.endpoint {
            Endpoint::Imds { .. } => request.header("Metadata", "true"),
            Endpoint::AppService { header, .. } => match HeaderValue::from_str(header.expose()) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    request.header("X-IDENTITY-HEADER", value)
                }
                Err(_) => {
                    return Attempt::Done(Err(FetchError::new(
                        "IDENTITY_HEADER holds characters not allowed in a header",
                    )));
                }
            },
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Attempt::Transient(self.unreachable(&e)),
        };
        let status = response.status();
        let retry_after = token::retry_after(response.headers());
        let body = match response.text().await {
            Ok(body) => body,
            Err(e) => return Attempt::Transient(self.unreachable(&e)),
        };
        if status.is_success() {
            return Attempt::Done(parse_token(&body));
        }
        let detail = error_detail(&body);
        let name = self.endpoint.name();
        if status == StatusCode::BAD_REQUEST {
            let which = match &self.client_id {
                Some(id) => format!("user-assigned identity with client_id {id}"),
                None => "system-assigned identity".to_string(),
            };
            // The Azure SDKs treat this as "no managed identity here", not as a failure.
            return Attempt::Done(Err(FetchError::new(format!(
                "managed identity not assigned: {name} has no {which} for this host: {detail} (HTTP {status})"
            ))
            .unavailable()));
        }
        let error = FetchError::new(format!("{name} answered HTTP {status}: {detail}"))
            .with_retry_after(retry_after);
        let transient = matches!(self.endpoint, Endpoint::Imds { .. })
            && (matches!(status.as_u16(), 404 | 410 | 429) || status.is_server_error());
        if transient {
            Attempt::Transient(error)
        } else {
            Attempt::Done(Err(error))
        }
    }

    fn unreachable(&self, error: &reqwest::Error) -> FetchError {
        let cause = if error.is_timeout() {
            "timed out".to_string()
        } else {
            root_cause(error)
        };
        FetchError::new(format!(
            "no managed identity endpoint answered at {} ({}): {cause}",
            self.endpoint.url(),
            self.endpoint.name()
        ))
        .unavailable()
    }
}

impl TokenSource for ManagedIdentity {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(self.fetch_token())
    }

    fn describe(&self) -> String {
        let mut text = match &self.endpoint {
            Endpoint::Imds { url } => format!("managed_identity (IMDS {url}"),
            Endpoint::AppService { url, .. } => format!("managed_identity (App Service {url}"),
        };
        text.push_str(&format!(", resource {}", self.resource));
        if let Some(id) = &self.client_id {
            text.push_str(&format!(", client_id {id}"));
        }
        if self.probing {
            text.push_str(", probing");
        }
        text.push(')');
        text
    }
}

/// The innermost error (e.g. "Connection refused (os error 111)"): reqwest's own message
/// only says that sending failed.
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests;
