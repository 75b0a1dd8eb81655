//! Loading a client certificate PEM (certificate, chain and private key), for
//! `client_certificate` credentials and the `default` chain's `AZURE_CLIENT_CERTIFICATE_PATH`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::secret::Secret;

/// Reads a PEM file holding a client certificate (then its chain) and the private key.
/// Also used for `AZURE_CLIENT_CERTIFICATE_PATH` by the `default` credential.
pub fn read_client_certificate(
    path: &Path,
) -> Result<(Arc<Vec<CertificateDer<'static>>>, Secret), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read \"{}\": {e}", path.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("\"{}\" is not valid PEM: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("\"{}\" holds no CERTIFICATE block", path.display()));
    }
    if PrivateKeyDer::from_pem_slice(text.as_bytes()).is_err() {
        return Err(format!(
            "\"{}\" holds no private key (PKCS#1, SEC1 or PKCS#8 PEM block)",
            path.display()
        ));
    }
    Ok((Arc::new(chain), Secret::new(text)))
}
