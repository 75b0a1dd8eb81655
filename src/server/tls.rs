//! HTTPS on the proxy listener: the TLS half of the "accept" step.
//!
//! `TlsTerminator` turns the `[server.tls]` PEM files into a rustls `ServerConfig` (TLS 1.2
//! and 1.3, ALPN `h2` then `http/1.1`, and with `client_ca` a verifier that requires a
//! client certificate chaining to it). The config sits behind an `ArcSwap`: every new
//! handshake takes the current one, so a certificate rotation never touches connections
//! already open. The files are polled every few seconds and can be reloaded on demand;
//! files that cannot be used (half-written, garbage) leave the previous config in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::digest;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// How often the PEM files are checked for changes. Short enough that a rotated
/// certificate is served within seconds, long enough that the reads cost nothing.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Why the TLS files cannot be used. Messages name the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} \"{}\": {source}", .path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the {what} \"{}\" holds no CERTIFICATE block", .path.display())]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("the {what} \"{}\" holds a malformed PEM block: {source}", .path.display())]
    MalformedCertificate {
        what: &'static str,
        path: PathBuf,
        source: pem::Error,
    },
    // The PEM error is left out: its detail could quote a line of the key file.
    #[error("the private key \"{}\" holds no PKCS#1, SEC1 or PKCS#8 private key", .path.display())]
    NoKey { path: PathBuf },
    #[error("the private key \"{}\" holds a malformed PEM block", .path.display())]
    MalformedKey { path: PathBuf },
    #[error(
        "cannot use the certificate \"{}\" with the private key \"{}\": {source}",
        .cert.display(), .key.display()
    )]
    Certificate {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot use the client CA \"{}\": {detail}", .path.display())]
    ClientCa { path: PathBuf, detail: String },
    #[error("the crypto provider does not support TLS 1.2 and 1.3: {0}")]
    Provider(rustls::Error),
}

/// Terminates TLS for the proxy listener with the current certificate.
pub struct TlsTerminator {
    files: TlsConfig,
    current: ArcSwap<ServerConfig>,
    /// What the files held when last looked at, so the poll rebuilds (and warns) once per
    /// change rather than every few seconds.
    last_seen: Mutex<Seen>,
}

/// The state of the files at one look: a digest of their contents (comparing contents
/// rather than modification times also catches the symlink swaps of mounted Kubernetes
/// secrets), or why they could not be read.
#[derive(PartialEq, Eq)]
enum Seen {
    Contents(Vec<u8>),
    Unreadable(String),
}

impl TlsTerminator {
    /// Reads the files and builds the first config. Fails with a message naming the file.
    pub fn load(files: &TlsConfig) -> Result<Self, TlsError> {
        let pem = Pem::read(files)?;
        let config = build(files, &pem)?;
        log_certificate("TLS certificate loaded", files, &pem);
        Ok(Self {
            files: files.clone(),
            current: ArcSwap::from_pointee(config),
            last_seen: Mutex::new(Seen::Contents(pem.digest())),
        })
    }

    /// An acceptor for one new connection, with the config current at this moment.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Re-reads the files and swaps the new config in, whether or not they changed. On
    /// error the previous config stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pem = Pem::read(&self.files)?;
        *self.lock_last_seen() = Seen::Contents(pem.digest());
        self.install(&pem)
    }

    /// Checks the files every couple of seconds until the server stops.
    pub async fn watch_files(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate, and the files were just read by `load`.
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => self.reload_if_changed(),
                () = crate::admin::stopped(&mut stopped) => break,
            }
        }
    }

    // The files are a few KiB on a local disk: reading them inline costs less than handing
    // the work to the blocking pool.
    fn reload_if_changed(&self) {
        let read = Pem::read(&self.files);
        let seen = match &read {
            Ok(pem) => Seen::Contents(pem.digest()),
            Err(err) => Seen::Unreadable(err.to_string()),
        };
        {
            let mut last = self.lock_last_seen();
            if *last == seen {
                return;
            }
            *last = seen;
        }
        if let Err(err) = read.and_then(|pem| self.install(&pem)) {
            tracing::warn!(
                "TLS files changed but cannot be used; new connections keep the previous \
                 certificate: {err}"
            );
        }
    }

    fn install(&self, pem: &Pem) -> Result<(), TlsError> {
        let config = build(&self.files, pem)?;
        self.current.store(Arc::new(config));
        log_certificate("TLS certificate reloaded", &self.files, pem);
        Ok(())
    }

    fn lock_last_seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // The guarded value is a plain digest; a panic elsewhere cannot leave it half-made.
        self.last_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The verified client certificate's subject ("CN=…, O=…"), with mTLS.
pub fn client_subject(conn: &rustls::ServerConnection) -> Option<Arc<str>> {
    let leaf = conn.peer_certificates()?.first()?;
    match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, cert)) => Some(cert.subject().to_string().into()),
        Err(err) => {
            tracing::debug!("cannot read the client certificate's subject: {err}");
            None
        }
    }
}

/// The PEM files as read at one moment. No `Debug`: it holds the private key.
struct Pem {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Pem {
    fn read(files: &TlsConfig) -> Result<Self, TlsError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(Self {
            cert: read("certificate chain", &files.cert)?,
            key: read("private key", &files.key)?,
            client_ca: files
                .client_ca
                .as_deref()
                .map(|path| read("client CA", path))
                .transpose()?,
        })
    }

    fn digest(&self) -> Vec<u8> {
        let mut hash = digest::Context::new(&digest::SHA256);
        // Length prefixes keep bytes from moving between files unnoticed.
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            let bytes = part.map_or(&[][..], Vec::as_slice);
            hash.update(&(bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        }
        hash.finish().as_ref().to_vec()
    }
}

fn build(files: &TlsConfig, pem: &Pem) -> Result<ServerConfig, TlsError> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let certs = certificates(&pem.cert, "certificate chain", &files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|err| match err {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: files.key.clone(),
        },
        _ => TlsError::MalformedKey {
            path: files.key.clone(),
        },
    })?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Provider)?;
    let builder = match (&pem.client_ca, &files.client_ca) {
        (Some(ca), Some(path)) => {
            builder.with_client_cert_verifier(client_verifier(ca, path, provider)?)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config =
        builder
            .with_single_cert(certs, key)
            .map_err(|source| TlsError::Certificate {
                cert: files.cert.clone(),
                key: files.key.clone(),
                source,
            })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Requires a client certificate that chains to one of the CAs in `pem`.
fn client_verifier(
    pem: &[u8],
    path: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let problem = |detail: String| TlsError::ClientCa {
        path: path.to_path_buf(),
        detail,
    };
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem, "client CA", path)? {
        roots
            .add(cert)
            .map_err(|e| problem(format!("not a usable CA certificate: {e}")))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| problem(e.to_string()))
}

fn certificates(
    pem: &[u8],
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::MalformedCertificate {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Names the certificate now served, so an operator can tell a rotation took effect.
fn log_certificate(message: &str, files: &TlsConfig, pem: &Pem) {
    let leaf = CertificateDer::pem_slice_iter(&pem.cert)
        .next()
        .and_then(Result::ok);
    let parsed = leaf
        .as_ref()
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok());
    let (subject, not_after) = match &parsed {
        Some((_, cert)) => (
            cert.subject().to_string(),
            cert.validity().not_after.to_string(),
        ),
        None => (String::new(), String::new()),
    };
    tracing::info!(
        cert = %files.cert.display(),
        subject,
        not_after,
        mtls = files.client_ca.is_some(),
        "{message}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> TlsConfig {
        TlsConfig {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: None,
        }
    }

    #[test]
    fn errors_name_the_file_and_never_quote_the_key() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let tls = files(dir.path());

        let missing = TlsTerminator::load(&tls).err().unwrap().to_string();
        assert!(
            missing.contains("cannot read the certificate chain"),
            "{missing}"
        );
        assert!(missing.contains("cert.pem"), "{missing}");

        std::fs::write(&tls.cert, "not a certificate").unwrap();
        std::fs::write(&tls.key, "SECRET-KEY-MATERIAL").unwrap();
        let empty = TlsTerminator::load(&tls).err().unwrap().to_string();
        assert!(empty.contains("holds no CERTIFICATE block"), "{empty}");

        // A certificate block is enough to get to the key.
        std::fs::write(
            &tls.cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for key in [
            "SECRET-KEY-MATERIAL",
            "-----BEGIN PRIVATE KEY-----\nSECRET-KEY-MATERIAL\n-----END PRIVATE KEY-----\n",
            "-----BEGIN PRIVATE KEY-----\nSECRET-KEY-MATERIAL\n",
        ] {
            std::fs::write(&tls.key, key).unwrap();
            let message = TlsTerminator::load(&tls).err().unwrap().to_string();
            assert!(message.contains("key.pem"), "{message}");
            assert!(!message.contains("SECRET"), "{message}");
        }
    }
}
