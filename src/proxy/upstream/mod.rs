//! The "send" phase's connections: a pool per upstream (HTTP/1.1, or HTTP/2 when ALPN takes
//! it), found once when a route is built, and a bound on the wait for response headers.
//! Routes that trust the same roots share one [`UpstreamClient`] and so the pools of the
//! upstreams they have in common.

mod connect;
mod pool;
mod settings;
mod streams;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, Uri};

use self::connect::Endpoint;
use self::pool::{HostPool, SendError};
pub use self::pool::{UpstreamBody, discard};
use super::body::ProxyBody;
use super::error::ProxyError;
use super::inbound::body::client_body_error;
use crate::config::CaRoots;

/// The connection pools of the routes that trust the same roots. Cloning shares them.
#[derive(Clone)]
pub struct UpstreamClient {
    tls: Arc<rustls::ClientConfig>,
    pools: Arc<Mutex<HashMap<String, Upstream>>>,
    trust: Arc<str>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpstreamClient({})", self.trust)
    }
}

/// One upstream's pool, as a route holds it.
#[derive(Clone)]
pub struct Upstream {
    pool: Result<Arc<HostPool>, Arc<str>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upstream")
    }
}

impl UpstreamClient {
    /// Pools trusting the webpki roots plus, when given, a route's private CA.
    pub fn new(extra_roots: Option<&CaRoots>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let trust: Arc<str> = match extra_roots {
            Some(extra) => {
                // Each certificate was checked to be a usable root when the config loaded.
                let (added, _ignored) =
                    roots.add_parsable_certificates(extra.certs.iter().cloned());
                format!("webpki + {} from {}", added, extra.path.display()).into()
            }
            None => "webpki".into(),
        };
        let mut tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self {
            tls: Arc::new(tls),
            pools: Arc::default(),
            trust,
        }
    }

    /// The pool of the upstream `uri` points at (scheme and authority), shared by every
    /// route of this client that goes there.
    pub fn upstream(&self, uri: &Uri) -> Upstream {
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map_or("", |a| a.as_str())
        );
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pools
            .entry(key)
            .or_insert_with(|| Upstream {
                pool: Endpoint::new(uri, &self.tls)
                    .map(|endpoint| Arc::new(HostPool::new(endpoint, uri)))
                    .map_err(|err| err.to_string().into()),
            })
            .clone()
    }
}

/// A request that got no response.
#[derive(Debug)]
pub struct Failed {
    pub error: ProxyError,
    /// The upstream refused it before processing it (an HTTP/2 stream refused or left out
    /// by a graceful GOAWAY): safe to send again, whatever the method.
    pub unprocessed: bool,
}

impl From<ProxyError> for Failed {
    fn from(error: ProxyError) -> Self {
        Self {
            error,
            unprocessed: false,
        }
    }
}

impl Upstream {
    /// Sends `request` and waits at most `timeout` for the response headers.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
        timeout: Duration,
        upstream: &str,
    ) -> Result<Response<UpstreamBody>, Failed> {
        let unreachable = |reason: String| ProxyError::UpstreamUnreachable {
            upstream: upstream.to_string(),
            reason,
        };
        let pool = self
            .pool
            .as_ref()
            .map_err(|err| unreachable(err.to_string()))?;
        match tokio::time::timeout(timeout, pool.send(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(SendError::Connect(err))) => Err(unreachable(err.to_string()).into()),
            // The client's body failing (too large, stalled, connection lost) is not the
            // upstream's fault, whatever the client library calls it.
            Ok(Err(SendError::Http(err))) => Err(client_body_error(&err)
                .unwrap_or_else(|| unreachable(error_chain(&err)))
                .into()),
            Ok(Err(SendError::Unprocessed(err))) => Err(Failed {
                error: unreachable(error_chain(&err)),
                unprocessed: true,
            }),
            Err(_) => Err(ProxyError::UpstreamTimeout {
                upstream: upstream.to_string(),
                after: timeout,
            }
            .into()),
        }
    }
}

/// "connection closed before message completed: broken pipe".
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests;
