//! TLS test kit: per-run certificate authorities (server and client certificates), the
//! `[server.tls]` files in a temp dir, and a TLS client that reports what it negotiated
//! (ALPN, protocol version, the server's certificate) and speaks HTTP/1.1 or h2 over it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::BoxError;

/// A certificate authority made for one test run.
pub struct Authority {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate and its key, as PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Leaf {
    /// The chain and key for a rustls client identity.
    pub fn identity(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        (certs, key)
    }
}

impl Authority {
    pub fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        Self {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1 with common name `cn`, with an
    /// ECDSA P-256 key in PKCS#8.
    pub fn server(&self, cn: &str) -> Leaf {
        self.server_with_key(cn, rcgen::KeyPair::generate().unwrap())
    }

    pub fn server_with_key(&self, cn: &str, key: rcgen::KeyPair) -> Leaf {
        self.server_leaf(cn, key, None)
    }

    /// A server certificate (as `server` makes) valid only from `not_before` to `not_after`.
    pub fn server_valid(&self, cn: &str, not_before: SystemTime, not_after: SystemTime) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        self.server_leaf(cn, key, Some((not_before, not_after)))
    }

    fn server_leaf(
        &self,
        cn: &str,
        key: rcgen::KeyPair,
        validity: Option<(SystemTime, SystemTime)>,
    ) -> Leaf {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        if let Some((not_before, not_after)) = validity {
            // rcgen takes `time` dates; x509-parser converts whole Unix seconds to them.
            let at = |t: SystemTime| {
                let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
                x509_parser::time::ASN1Time::from_timestamp(secs)
                    .unwrap()
                    .to_datetime()
            };
            params.not_before = at(not_before);
            params.not_after = at(not_after);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A client certificate with subject `CN=cn, O=org`.
    pub fn client(&self, cn: &str, org: &str) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The `[server.tls]` files of one test, in a temp dir that is also the config's base dir.
pub struct TlsFiles {
    pub dir: tempfile::TempDir,
    pub ca: Authority,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl TlsFiles {
    /// A server certificate with common name `cn` from a fresh CA; `client_ca.pem` holds
    /// `client_ca` when given.
    pub fn new(cn: &str, client_ca: Option<&Authority>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = Self {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            client_ca: dir.path().join("client_ca.pem"),
            ca: Authority::new("azgate test server CA"),
            dir,
        };
        files.write(&files.ca.server(cn));
        if let Some(ca) = client_ca {
            std::fs::write(&files.client_ca, ca.pem()).unwrap();
        }
        files
    }

    /// Replaces the served certificate and key (key first, as a rotation tool might).
    pub fn write(&self, leaf: &Leaf) {
        std::fs::write(&self.key, &leaf.key_pem).unwrap();
        std::fs::write(&self.cert, &leaf.cert_pem).unwrap();
    }

    /// A config with TLS in front of `upstream`, mTLS when `mtls`, then `server_extra`
    /// lines under `[server]`.
    pub fn config(&self, upstream: &str, mtls: bool, server_extra: &str) -> String {
        let client_ca = if mtls {
            "client_ca = \"client_ca.pem\"\n"
        } else {
            ""
        };
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\n{server_extra}\n\
             [server.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n{client_ca}\
             [admin]\nlisten = \"\"\n\
             [[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\n"
        )
    }

    /// A client trusting this test's server CA.
    pub fn client(&self) -> ClientOptions {
        ClientOptions {
            roots: self.ca.pem(),
            alpn: vec![b"http/1.1".to_vec()],
            identity: None,
            tls12_only: false,
        }
    }
}

/// How a test client connects.
pub struct ClientOptions {
    roots: String,
    alpn: Vec<Vec<u8>>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    tls12_only: bool,
}

impl ClientOptions {
    /// Offers h2 then http/1.1 by ALPN.
    pub fn h2(mut self) -> Self {
        self.alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        self
    }

    pub fn tls12_only(mut self) -> Self {
        self.tls12_only = true;
        self
    }

    pub fn identity(mut self, leaf: &Leaf) -> Self {
        self.identity = Some(leaf.identity());
        self
    }

    fn config(&self) -> Arc<rustls::ClientConfig> {
        super::init();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.roots.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let builder = rustls::ClientConfig::builder_with_protocol_versions(versions)
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((certs, key)) => builder
                .with_client_auth_cert(certs.clone(), key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        Arc::new(config)
    }

    /// Completes a TLS handshake with azgate at `addr` (as `localhost`).
    pub async fn handshake(&self, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        TlsConnector::from(self.config())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    /// Connects and starts HTTP (h2 when ALPN chose it, else HTTP/1.1).
    pub async fn open(&self, addr: SocketAddr) -> Result<Session, BoxError> {
        let tls = self.handshake(addr).await?;
        let (_, conn) = tls.get_ref();
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let protocol = conn.protocol_version();
        let server_subject = conn
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(subject)
            .unwrap_or_default();
        let io = TokioIo::new(tls);
        let (sender, task) = if alpn.as_deref() == Some(b"h2") {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            (
                Sender::H2(sender),
                tokio::spawn(async move { drop(conn.await) }),
            )
        } else {
            let (sender, conn) = http1::handshake(io).await?;
            (
                Sender::H1(sender),
                tokio::spawn(async move { drop(conn.await) }),
            )
        };
        Ok(Session {
            sender,
            task,
            alpn,
            protocol,
            server_subject,
        })
    }

    /// Sends `request` in the same TCP write as the client's last handshake message (rustls
    /// holds what is written before the handshake ends and sends it with its Finished), so
    /// azgate's handshake reads the request with it. Returns the answer, read until azgate
    /// closes the connection or for at most 10 s.
    pub async fn send_with_finished(
        &self,
        addr: SocketAddr,
        request: &'static [u8],
    ) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let config = self.config();
        tokio::task::spawn_blocking(move || {
            let mut tcp = std::net::TcpStream::connect(addr)?;
            tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
            let name = ServerName::try_from("localhost").unwrap();
            let mut conn =
                rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
            conn.writer().write_all(request)?;
            let mut answer = Vec::new();
            rustls::Stream::new(&mut conn, &mut tcp).read_to_end(&mut answer)?;
            Ok(String::from_utf8_lossy(&answer).into_owned())
        })
        .await?
    }

    /// Expects azgate to refuse this client's TLS handshake: returns the rustls error the
    /// client saw (with TLS 1.3 the refusal of a client certificate arrives as an alert
    /// after the client's side of the handshake is done, so this also sends a request).
    pub async fn refused(&self, addr: SocketAddr) -> rustls::Error {
        let outcome = async {
            let mut tls = self.handshake(addr).await?;
            tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
                .await?;
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let err = match tokio::time::timeout(std::time::Duration::from_secs(5), outcome).await {
            Ok(Ok(buf)) => panic!(
                "handshake accepted; server answered {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(Err(err)) => err,
            Err(_) => panic!("no answer within 5 s"),
        };
        err.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .cloned()
            .unwrap_or_else(|| panic!("not a TLS error: {err:?}"))
    }
}

enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

/// One open TLS connection to azgate. Dropping it closes the connection.
pub struct Session {
    sender: Sender,
    task: JoinHandle<()>,
    /// The protocol ALPN chose, if any.
    pub alpn: Option<Vec<u8>>,
    pub protocol: Option<rustls::ProtocolVersion>,
    /// The subject of the certificate the server presented.
    pub server_subject: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Session {
    /// GETs `path`: the response's HTTP version, status and body.
    pub async fn get(&mut self, path: &str) -> Result<(Version, StatusCode, String), BoxError> {
        let request = Request::get(format!("https://localhost{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = match &mut self.sender {
            Sender::H1(sender) => {
                sender.ready().await?;
                // HTTP/1.1 wants origin-form with a Host header.
                let (mut parts, body) = request.into_parts();
                parts.uri = path.parse().unwrap();
                parts
                    .headers
                    .insert(http::header::HOST, "localhost".parse().unwrap());
                sender
                    .send_request(Request::from_parts(parts, body))
                    .await?
            }
            Sender::H2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
        };
        let version = response.version();
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((version, status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// A TLS ClientHello (from rustls, for `localhost`) whose SNI is changed to `127.0.0:9`,
/// a name with a port in it such as some load generators send (`127.0.0.1:8443`): rustls
/// refuses the handshake.
pub fn client_hello_with_bad_sni() -> Vec<u8> {
    super::init();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    let at = hello
        .windows(9)
        .position(|w| w == b"localhost")
        .expect("the SNI in the ClientHello");
    hello[at..at + 9].copy_from_slice(b"127.0.0:9");
    hello
}

/// Sends `hello` on a new connection to `addr` and reads until the server closes it.
pub async fn send_hello(addr: SocketAddr, hello: &[u8]) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tcp.read_to_end(&mut rest),
    );
    assert!(read.await.is_ok(), "the server kept the connection open");
}

/// A certificate's subject as "CN=…, O=…".
pub fn subject(der: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.subject().to_string()
}

/// The private key inside a PKCS#8 document, as PEM of its own kind: PKCS#1
/// (`RSA PRIVATE KEY`) for RSA, SEC1 (`EC PRIVATE KEY`) for EC. A PKCS#8 document is
/// SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING key }.
pub fn unwrap_pkcs8(pkcs8_der: &[u8], label: &str) -> String {
    use x509_parser::der_parser::der::parse_der;
    let (_, document) = parse_der(pkcs8_der).unwrap();
    let fields = document.as_sequence().unwrap();
    let inner = fields[2].as_slice().unwrap();
    let body = base64_lines(inner);
    format!("-----BEGIN {label}-----\n{body}-----END {label}-----\n")
}

fn base64_lines(bytes: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out
}
