//! `[server.tls]` and `[admin.tls]`: the file paths, checked by loading the files the way
//! the server will.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::config::TlsConfig;
use crate::config::error::{Problems, join};

/// `[server.tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
}

/// `[server.tls]` or `[admin.tls]`: the file paths, and the files loaded exactly as the
/// server loads them (`config::tls`), so a problem `serve` would meet is reported here.
pub fn tls(
    raw: RawTls,
    section: &str,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<TlsConfig> {
    let mut path = |file: Option<String>, key: &str, what: &str| match file {
        Some(file) => Some(base_dir.join(file)),
        None => {
            problems.push(join(section, key), format!("missing key ({what})"));
            None
        }
    };
    let cert = path(raw.cert, "cert", "PEM certificate chain");
    let key = path(raw.key, "key", "PEM private key");
    let files = TlsConfig {
        cert: cert?,
        key: key?,
        client_ca: raw.client_ca.map(|file| base_dir.join(file)),
    };
    let now = SystemTime::now();
    match crate::config::tls::load(&files, now) {
        Ok(material) => {
            let validity = &material.validity;
            if let Ok(left) = validity.not_after.duration_since(now)
                && left <= crate::config::tls::EXPIRY_WARNING
            {
                problems.warn(
                    join(section, "cert"),
                    format!(
                        "the certificate \"{}\" expires in {} (at {}): replace it",
                        validity.subject,
                        humantime::format_duration(Duration::from_secs(
                            left.as_secs() / 3600 * 3600
                        )),
                        crate::config::tls::rfc3339(validity.not_after)
                    ),
                );
            }
        }
        Err(found) => {
            for err in found.0 {
                problems.push(join(section, err.key()), err.to_string());
            }
        }
    }
    // The paths stand even when the files do not: the problems above fail the config,
    // and the listener checks below still see that TLS (and mTLS) was asked for.
    Some(files)
}
