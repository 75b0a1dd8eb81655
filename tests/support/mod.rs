//! In-process test harness: mock upstreams (plain and TLS with a per-run CA), azgate
//! itself on 127.0.0.1:0, and HTTP clients. Nothing here touches the network beyond
//! loopback.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub mod azure_cli;
pub mod binary;
pub mod browser;
pub mod entra;
pub mod identity;
pub mod logs;
pub mod metrics;
pub mod otlp;
pub mod raw;
pub mod scripted;
pub mod sdk;
pub mod tls;
pub mod video_indexer;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn init() {
    azgate::install_crypto_provider();
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A certificate authority made for one test run, with its PEM written to a temp dir.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    pub ca_pem_path: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "azgate test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA cert");
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_pem_path = dir.path().join("test-ca.pem");
        std::fs::write(&ca_pem_path, cert.pem()).expect("write CA");
        let issuer = rcgen::Issuer::new(params, key);
        Self {
            dir,
            ca_pem_path,
            issuer,
        }
    }

    /// A leaf certificate for `localhost` and 127.0.0.1, as (cert PEM, key PEM).
    pub fn server_cert(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf params");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        (cert.pem(), key.serialize_pem())
    }

    /// A rustls server config offering h2 and http/1.1.
    pub fn server_config(&self) -> rustls::ServerConfig {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (cert_pem, key_pem) = self.server_cert();
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("cert");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

/// A mock upstream server. Stops when dropped.
pub struct MockUpstream {
    pub addr: SocketAddr,
    pub url: String,
    task: JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockUpstream {
    /// Plain HTTP (HTTP/1.1 and h2c) upstream answering with `handler`.
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        Self::serve(handler, None).await
    }

    /// HTTPS upstream (h2 and http/1.1 by ALPN) with a certificate from `ca`.
    pub async fn start_tls<F, Fut>(ca: &TestCa, handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        Self::serve(handler, Some(Arc::new(ca.server_config()))).await
    }

    /// An upstream that answers every request with a JSON description of it.
    pub async fn echo() -> Self {
        Self::start(echo).await
    }

    async fn serve<F, Fut>(handler: F, tls: Option<Arc<rustls::ServerConfig>>) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let addr = listener.local_addr().expect("addr");
        let url = match tls {
            Some(_) => format!("https://localhost:{}", addr.port()),
            None => format!("http://{addr}"),
        };
        let handler = Arc::new(handler);
        let task = tokio::spawn(async move {
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Self { addr, url, task }
    }
}

/// Describes the request as JSON: method, path, query, version, headers, body.
pub async fn echo(request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for (name, value) in &parts.headers {
        headers
            .entry(name.to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "authority": parts.uri.authority().map(|a| a.to_string()),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body.len(),
        "body": String::from_utf8_lossy(&body),
    });
    Response::builder()
        .header("content-type", "application/json")
        .header("x-ms-request-id", "upstream-req-1")
        .body(full(json.to_string()))
        .expect("echo response")
}

/// azgate running in-process on 127.0.0.1:0.
pub struct Azgate {
    pub addr: SocketAddr,
    pub url: String,
    pub admin_url: Option<String>,
    server: azgate::server::RunningServer,
}

impl Azgate {
    /// Starts azgate with `body` (credentials and routes) under a `[server]` table that
    /// listens on an ephemeral port and an admin listener on another.
    pub async fn start(body: &str) -> Self {
        Self::start_with(&config_text(body), Path::new("."), &HashMap::new()).await
    }

    /// Starts azgate from a full config text, variables from `env` only.
    pub async fn start_with(text: &str, base_dir: &Path, env: &HashMap<&str, &str>) -> Self {
        init();
        let lookup = |name: &str| env.get(name).map(|v| v.to_string());
        let config = azgate::config::parse(text, "test.toml", base_dir, &lookup)
            .unwrap_or_else(|e| panic!("{e}"));
        let env = azgate::env::Env::from_map(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let server = azgate::server::start(config, env)
            .await
            .expect("start azgate");
        Self {
            addr: server.proxy_addr,
            url: format!("http://{}", server.proxy_addr),
            admin_url: server.admin_addr.map(|a| format!("http://{a}")),
            server,
        }
    }

    pub fn shutdown(&self) {
        self.server.shutdown();
    }

    pub async fn stop(self) {
        self.server.shutdown();
        self.server.wait().await;
    }

    pub fn into_server(self) -> azgate::server::RunningServer {
        self.server
    }
}

pub fn config_text(body: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{body}"
    )
}

/// A loopback port that refuses connections for as long as the returned socket lives: bound
/// but not listening, so no other test can take it meanwhile (a port freed at once can
/// become another test's server).
pub fn refused_port() -> (socket2::Socket, u16) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("bound address")
        .port();
    (socket, port)
}

/// An HTTP/1.1 client that ignores proxy variables.
pub fn client() -> reqwest::Client {
    init();
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// An HTTP/2 client speaking h2c with prior knowledge.
pub fn h2c_client() -> reqwest::Client {
    init();
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("h2c client")
}

/// Sends `request` and returns the status of its answer.
pub async fn status(request: reqwest::RequestBuilder) -> reqwest::StatusCode {
    request.send().await.expect("request").status()
}

/// Sends `request` and returns the body of its answer as text.
pub async fn body_text(request: reqwest::RequestBuilder) -> String {
    request
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body")
}

/// The JSON body of an echo (or error) response.
pub async fn json(response: reqwest::Response) -> serde_json::Value {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The admin listener's `/status.json` (no admin key).
pub async fn status_json(admin: &str) -> serde_json::Value {
    json(
        client()
            .get(format!("{admin}/status.json"))
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// All values of a header as the echo upstream saw it.
pub fn seen<'a>(echo: &'a serde_json::Value, header: &str) -> Vec<&'a str> {
    echo["headers"][header]
        .as_array()
        .map(|values| values.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default()
}
