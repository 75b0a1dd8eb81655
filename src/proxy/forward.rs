//! The "send" phase: a pooled hyper-util client per trust configuration, HTTP/1.1 or
//! HTTP/2 by ALPN, with a bound on the wait for response headers.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::ProxyBody;
use super::error::ProxyError;
use super::inbound::body::client_body_error;
use crate::config::CaRoots;

/// A TCP connect that takes longer than this is an unreachable upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle pooled connections are closed before common server and load-balancer idle
/// timeouts (60 s and up), so azgate never reuses one the other side is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// TCP keep-alive probes keep NAT and firewall state alive on long-running requests.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// A pooled client for upstream requests. Cloning shares the pool.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    trust: Arc<str>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpstreamClient({})", self.trust)
    }
}

impl UpstreamClient {
    /// A client trusting the webpki roots plus, when given, a route's private CA.
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
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        // Small requests and responses must not wait for Nagle's algorithm.
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_keepalive(Some(TCP_KEEPALIVE));

        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);

        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            // Big uploads over HTTP/2 need windows that grow with the bandwidth-delay product.
            .http2_adaptive_window(true)
            .build(https);
        Self { client, trust }
    }

    /// Sends `request` and waits at most `timeout` for the response headers.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
        timeout: Duration,
        upstream: &str,
    ) -> Result<Response<Incoming>, ProxyError> {
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            // The client's body failing (too large, stalled, connection lost) is not the
            // upstream's fault, whatever the client library calls it.
            Ok(Err(err)) => {
                Err(
                    client_body_error(&err).unwrap_or_else(|| ProxyError::UpstreamUnreachable {
                        upstream: upstream.to_string(),
                        reason: error_chain(&err),
                    }),
                )
            }
            Err(_) => Err(ProxyError::UpstreamTimeout {
                upstream: upstream.to_string(),
                after: timeout,
            }),
        }
    }
}

/// "client error (Connect): tcp connect error: Connection refused (os error 111)".
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
