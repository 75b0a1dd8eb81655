//! Opening a connection to an upstream: DNS, TCP (no Nagle, keep-alive probes, a bounded
//! connect) and, for `https://`, TLS offering `h2` then `http/1.1` by ALPN.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A TCP connect that takes longer than this is an unreachable upstream (split between
/// the addresses a name resolves to).
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keep-alive probes keep NAT and firewall state alive on long-running requests.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Where connections to one upstream go and how they are secured.
pub(super) struct Endpoint {
    /// The host as DNS or an IP parser takes it (IPv6 without brackets).
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// A connection that could not be opened, with the step that failed.
#[derive(Debug)]
pub struct ConnectError {
    step: &'static str,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.source)
    }
}

impl std::error::Error for ConnectError {}

impl ConnectError {
    fn new(step: &'static str, source: io::Error) -> Self {
        Self {
            step,
            source: source.into(),
        }
    }

    /// The HTTP/1.1 or HTTP/2 handshake on an open connection failed.
    pub(super) fn handshake(source: Box<dyn std::error::Error + Send + Sync>) -> Self {
        Self {
            step: "handshake failed",
            source,
        }
    }
}

/// An open connection and whether the upstream took HTTP/2.
pub(super) struct Connected {
    pub stream: Stream,
    pub h2: bool,
}

impl Endpoint {
    /// The endpoint of `uri` (`http` or `https`, an authority); `tls` is used for `https`.
    pub(super) fn new(
        uri: &http::Uri,
        tls: &Arc<rustls::ClientConfig>,
    ) -> Result<Self, ConnectError> {
        let invalid = |what: &str| {
            ConnectError::new(
                "invalid upstream",
                io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {uri}")),
            )
        };
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid("the scheme is not http or https")),
        };
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = ServerName::try_from(host.clone())
                .map_err(|_| invalid("the host is not a valid TLS server name"))?;
            Some((TlsConnector::from(tls.clone()), name))
        } else {
            None
        };
        Ok(Self { host, port, tls })
    }

    pub(super) fn is_https(&self) -> bool {
        self.tls.is_some()
    }

    /// Resolves, connects (bounded by [`CONNECT_TIMEOUT`]) and, for HTTPS, shakes hands.
    pub(super) async fn connect(&self) -> Result<Connected, ConnectError> {
        let tcp = self.connect_tcp().await?;
        let Some((tls, name)) = &self.tls else {
            return Ok(Connected {
                stream: Stream::Plain(tcp),
                h2: false,
            });
        };
        let tls = tls
            .connect(name.clone(), tcp)
            .await
            .map_err(|err| ConnectError::new("tls handshake failed", err))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Connected {
            stream: Stream::Tls(Box::new(tls)),
            h2,
        })
    }

    async fn connect_tcp(&self) -> Result<TcpStream, ConnectError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|err| ConnectError::new("dns error", err))?
            .collect();
        if addrs.is_empty() {
            let err = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
            return Err(ConnectError::new("dns error", err));
        }
        // Each address gets its share of the connect timeout, so one that drops packets
        // cannot use up the time of the next.
        let each = CONNECT_TIMEOUT / addrs.len() as u32;
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(each, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    // Small requests and responses must not wait for Nagle's algorithm.
                    // Both are best effort: a socket without them still works.
                    let _ = tcp.set_nodelay(true);
                    let _ = SockRef::from(&tcp)
                        .set_tcp_keepalive(&TcpKeepalive::new().with_time(TCP_KEEPALIVE));
                    return Ok(tcp);
                }
                Ok(Err(err)) => last = Some(ConnectError::new("tcp connect error", err)),
                Err(_) => {
                    let err = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{addr} did not answer within {each:?}"),
                    );
                    last = Some(ConnectError::new("tcp connect error", err));
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            ConnectError::new("tcp connect error", io::ErrorKind::NotFound.into())
        }))
    }
}

/// A plain or TLS upstream connection.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
