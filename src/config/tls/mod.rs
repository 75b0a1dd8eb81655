//! `[server.tls]` and `[admin.tls]` material: the PEM files -> a rustls `ServerConfig`
//! (TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, and with `client_ca` a verifier that
//! requires a client certificate chaining to it), and the validity of the chain served.
//!
//! This is the one loader: `azgate check` and `serve` run it when the config is validated,
//! the server when it starts, and the TLS terminator on every rotation, so what `check`
//! accepts is what `serve` serves. A chain holding a certificate that has expired or is
//! not valid yet is refused like a key that does not match: clients would refuse it.

mod error;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::TlsConfig;
pub use error::{Part, TlsError, TlsProblems};

/// When the served chain can be used: the latest `notBefore` and the earliest `notAfter`
/// of its certificates (an intermediate that expires first breaks the chain too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    /// The leaf's subject ("CN=…"), to name the certificate in logs.
    pub subject: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// A certificate this close to its expiry is warned about: by `check`, and by `serve` at
/// every load and once a day.
pub const EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(14 * 24 * 3600);

/// A rustls config ready to serve, and what it serves.
pub struct TlsMaterial {
    pub config: ServerConfig,
    pub validity: Validity,
}

/// Reads the files and builds the config, checking validity at `now`.
pub fn load(files: &TlsConfig, now: SystemTime) -> Result<TlsMaterial, TlsProblems> {
    Pem::read(files)?.build(files, now)
}

/// The PEM files as read at one moment. No `Debug`: it holds the private key.
pub struct Pem {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Pem {
    /// Reads every file, reporting each one that cannot be read.
    pub fn read(files: &TlsConfig) -> Result<Self, TlsProblems> {
        let mut problems = Vec::new();
        let mut read = |part, path: &Path| {
            std::fs::read(path)
                .map_err(|source| {
                    problems.push(TlsError::Read {
                        part,
                        path: path.to_path_buf(),
                        source,
                    })
                })
                .ok()
        };
        let cert = read(Part::Cert, &files.cert);
        let key = read(Part::Key, &files.key);
        let client_ca = files.client_ca.as_deref().map(|p| read(Part::ClientCa, p));
        match (cert, key, client_ca) {
            (Some(cert), Some(key), None) => Ok(Self {
                cert,
                key,
                client_ca: None,
            }),
            (Some(cert), Some(key), Some(Some(ca))) => Ok(Self {
                cert,
                key,
                client_ca: Some(ca),
            }),
            _ => Err(TlsProblems(problems)),
        }
    }

    /// A digest of the contents, to tell whether the files changed (comparing contents
    /// rather than modification times also catches the symlink swaps of mounted
    /// Kubernetes secrets).
    pub fn digest(&self) -> Vec<u8> {
        let mut hash = digest::Context::new(&digest::SHA256);
        // Length prefixes keep bytes from moving between files unnoticed.
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            let bytes = part.map_or(&[][..], Vec::as_slice);
            hash.update(&(bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        }
        hash.finish().as_ref().to_vec()
    }

    /// Builds the rustls config, reporting every problem of every file at once.
    pub fn build(&self, files: &TlsConfig, now: SystemTime) -> Result<TlsMaterial, TlsProblems> {
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let mut problems = Vec::new();
        let certs = certificates(&self.cert, Part::Cert, &files.cert)
            .map_err(|e| problems.push(e))
            .ok();
        let validity = certs
            .as_deref()
            .and_then(|chain| validity(chain, &files.cert, now, &mut problems));
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|err| {
                let path = files.key.clone();
                problems.push(match err {
                    pem::Error::NoItemsFound => TlsError::NoKey { path },
                    _ => TlsError::MalformedKey { path },
                })
            })
            .ok();
        let verifier = match (&self.client_ca, &files.client_ca) {
            (Some(ca), Some(path)) => match client_verifier(ca, path, provider.clone()) {
                Ok(verifier) => Some(verifier),
                Err(err) => {
                    problems.push(err);
                    None
                }
            },
            _ => None,
        };
        let (Some(certs), Some(validity), Some(key), true) =
            (certs, validity, key, problems.is_empty())
        else {
            return Err(TlsProblems(problems));
        };

        let builder = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Provider)?;
        let builder = match verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
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
        Ok(TlsMaterial { config, validity })
    }
}

/// The chain's validity period; every certificate outside its own at `now` is a problem.
fn validity(
    chain: &[CertificateDer<'static>],
    path: &Path,
    now: SystemTime,
    problems: &mut Vec<TlsError>,
) -> Option<Validity> {
    let mut out: Option<Validity> = None;
    for der in chain {
        let cert = match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => cert,
            Err(err) => {
                problems.push(TlsError::UnparsableCertificate {
                    part: Part::Cert,
                    path: path.to_path_buf(),
                    detail: err.to_string(),
                });
                return None;
            }
        };
        let subject = cert.subject().to_string();
        let not_before = system_time(cert.validity().not_before.timestamp());
        let not_after = system_time(cert.validity().not_after.timestamp());
        if now > not_after {
            problems.push(TlsError::Expired {
                path: path.to_path_buf(),
                subject: subject.clone(),
                not_after,
            });
        } else if now < not_before {
            problems.push(TlsError::NotYetValid {
                path: path.to_path_buf(),
                subject: subject.clone(),
                not_before,
            });
        }
        out = Some(match out {
            None => Validity {
                subject,
                not_before,
                not_after,
            },
            Some(leaf) => Validity {
                not_before: leaf.not_before.max(not_before),
                not_after: leaf.not_after.min(not_after),
                ..leaf
            },
        });
    }
    out
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
    for cert in certificates(pem, Part::ClientCa, path)? {
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
    part: Part,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::MalformedCertificate {
            part,
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            part,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// A certificate time (Unix seconds, possibly before 1970) as a `SystemTime`.
fn system_time(secs: i64) -> SystemTime {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    let shifted = if secs >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    shifted.unwrap_or(UNIX_EPOCH)
}

/// `2026-12-01T15:04:05Z`.
pub fn rfc3339(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn files(dir: &Path) -> TlsConfig {
        TlsConfig {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: None,
        }
    }

    fn load_now(tls: &TlsConfig) -> Result<TlsMaterial, TlsProblems> {
        load(tls, SystemTime::now())
    }

    /// A self-signed certificate valid from `not_before` to `not_after` (Unix seconds), and
    /// its key, as PEM.
    pub(crate) fn certificate(not_before: i64, not_after: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "dated");
        let at = |secs| {
            x509_parser::time::ASN1Time::from_timestamp(secs)
                .unwrap()
                .to_datetime()
        };
        params.not_before = at(not_before);
        params.not_after = at(not_after);
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    pub(crate) fn unix_now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn errors_name_the_file_and_never_quote_the_key() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let tls = files(dir.path());

        let missing = load_now(&tls).err().unwrap();
        let text = missing.to_string();
        assert!(text.contains("cannot read the certificate chain"), "{text}");
        assert!(text.contains("cert.pem"), "{text}");
        // Both missing files are reported at once, each under its own key.
        let keys: Vec<_> = missing.0.iter().map(TlsError::key).collect();
        assert_eq!(keys, ["cert", "key"], "{text}");

        std::fs::write(&tls.cert, "not a certificate").unwrap();
        std::fs::write(&tls.key, "SECRET-KEY-MATERIAL").unwrap();
        let empty = load_now(&tls).err().unwrap().to_string();
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
            let message = load_now(&tls).err().unwrap().to_string();
            assert!(message.contains("key.pem"), "{message}");
            assert!(!message.contains("SECRET"), "{message}");
        }
    }

    #[test]
    fn certificates_outside_their_validity_are_refused_with_their_dates() {
        crate::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let tls = files(dir.path());
        let now = unix_now();
        let day = 86_400;

        let (cert, key) = certificate(now - 30 * day, now - day);
        std::fs::write(&tls.cert, cert).unwrap();
        std::fs::write(&tls.key, key).unwrap();
        let expired = load_now(&tls).err().unwrap();
        assert!(expired.has_validity_problem());
        assert_eq!(expired.valid_from(), None);
        assert_eq!(expired.0[0].key(), "cert");
        let text = expired.to_string();
        assert!(
            text.contains("CN=dated") && text.contains("expired at"),
            "{text}"
        );
        assert!(text.contains(&rfc3339(system_time(now - day))), "{text}");

        let (cert, key) = certificate(now + day, now + 30 * day);
        std::fs::write(&tls.cert, cert).unwrap();
        std::fs::write(&tls.key, key).unwrap();
        let early = load_now(&tls).err().unwrap();
        assert!(early.to_string().contains("is not valid before"), "{early}");
        assert_eq!(early.valid_from(), Some(system_time(now + day)));

        let (cert, key) = certificate(now - day, now + 3 * day);
        std::fs::write(&tls.cert, cert).unwrap();
        std::fs::write(&tls.key, key).unwrap();
        let valid = load_now(&tls).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(valid.validity.not_after, system_time(now + 3 * day));
        assert_eq!(valid.validity.subject, "CN=dated");
    }
}
