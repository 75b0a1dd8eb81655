//! Entra ID token endpoint sources: `client_secret`, `client_certificate`,
//! `workload_identity`.
//!
//! PLACEHOLDER during development: the implementation is being written on its own branch.

use super::token::{FetchError, FetchFuture, TokenSource};
use crate::config::{ClientCertificateConfig, ClientSecretConfig, WorkloadIdentityConfig};
use crate::env::Env;

pub struct ClientSecret;
pub struct ClientCertificate;
pub struct WorkloadIdentity;

impl ClientSecret {
    pub fn new(_config: &ClientSecretConfig, _env: &Env) -> Self {
        Self
    }
}
impl ClientCertificate {
    pub fn new(_config: &ClientCertificateConfig, _env: &Env) -> Self {
        Self
    }
}
impl WorkloadIdentity {
    pub fn new(_config: &WorkloadIdentityConfig, _env: &Env) -> Self {
        Self
    }
}

macro_rules! unfinished {
    ($t:ty, $name:literal) => {
        impl TokenSource for $t {
            fn fetch(&self) -> FetchFuture<'_> {
                Box::pin(async { Err(FetchError::new(concat!($name, " is not finished"))) })
            }
            fn describe(&self) -> String {
                $name.to_string()
            }
        }
    };
}
unfinished!(ClientSecret, "client_secret");
unfinished!(ClientCertificate, "client_certificate");
unfinished!(WorkloadIdentity, "workload_identity");
