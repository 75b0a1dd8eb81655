//! Why TLS files cannot be used: one `TlsError` per problem, each naming its file (never
//! its contents) and the key of the TLS section it belongs to; `TlsProblems` holds them all.

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use rustls::pki_types::pem;

use super::rfc3339;

/// Which of the files a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Cert,
    Key,
    ClientCa,
}

impl Part {
    /// The key naming the file in `[server.tls]`.
    pub fn key(self) -> &'static str {
        match self {
            Part::Cert => "cert",
            Part::Key => "key",
            Part::ClientCa => "client_ca",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Cert => "certificate chain",
            Part::Key => "private key",
            Part::ClientCa => "client CA",
        })
    }
}

/// Why the TLS files cannot be used. Messages name the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {part} \"{}\": {source}", .path.display())]
    Read {
        part: Part,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the {part} \"{}\" holds no CERTIFICATE block", .path.display())]
    NoCertificate { part: Part, path: PathBuf },
    #[error("the {part} \"{}\" holds a malformed PEM block: {source}", .path.display())]
    MalformedCertificate {
        part: Part,
        path: PathBuf,
        source: pem::Error,
    },
    #[error("the {part} \"{}\" holds a certificate that cannot be parsed: {detail}", .path.display())]
    UnparsableCertificate {
        part: Part,
        path: PathBuf,
        detail: String,
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
    #[error(
        "the certificate \"{subject}\" in \"{}\" expired at {}; clients refuse it",
        .path.display(), rfc3339(*.not_after)
    )]
    Expired {
        path: PathBuf,
        subject: String,
        not_after: SystemTime,
    },
    #[error(
        "the certificate \"{subject}\" in \"{}\" is not valid before {}; clients refuse it",
        .path.display(), rfc3339(*.not_before)
    )]
    NotYetValid {
        path: PathBuf,
        subject: String,
        not_before: SystemTime,
    },
    #[error("the crypto provider does not support TLS 1.2 and 1.3: {0}")]
    Provider(rustls::Error),
}

impl TlsError {
    /// The key of the TLS section the problem belongs to; empty when it concerns the
    /// section as a whole (a key that does not match its certificate).
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Read { part, .. }
            | TlsError::NoCertificate { part, .. }
            | TlsError::MalformedCertificate { part, .. }
            | TlsError::UnparsableCertificate { part, .. } => part.key(),
            TlsError::NoKey { .. } | TlsError::MalformedKey { .. } => Part::Key.key(),
            TlsError::ClientCa { .. } => Part::ClientCa.key(),
            TlsError::Expired { .. } | TlsError::NotYetValid { .. } => Part::Cert.key(),
            TlsError::Certificate { .. } | TlsError::Provider(_) => "",
        }
    }
}

/// Every problem found in one set of TLS files, reported together.
#[derive(Debug)]
pub struct TlsProblems(pub Vec<TlsError>);

impl TlsProblems {
    /// Whether any problem is a certificate outside its validity period (an operator's
    /// mistake to act on, rather than a file caught half-written).
    pub fn has_validity_problem(&self) -> bool {
        self.0
            .iter()
            .any(|e| matches!(e, TlsError::Expired { .. } | TlsError::NotYetValid { .. }))
    }

    /// When every problem is a certificate not valid yet: the moment it becomes valid.
    pub fn valid_from(&self) -> Option<SystemTime> {
        let mut latest: Option<SystemTime> = None;
        for err in &self.0 {
            let TlsError::NotYetValid { not_before, .. } = err else {
                return None;
            };
            latest = Some(latest.map_or(*not_before, |l| l.max(*not_before)));
        }
        latest
    }
}

impl From<TlsError> for TlsProblems {
    fn from(err: TlsError) -> Self {
        Self(vec![err])
    }
}

impl fmt::Display for TlsProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TlsProblems {}
