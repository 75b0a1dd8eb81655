//! `managed_identity`: IMDS or App Service.
//!
//! PLACEHOLDER during development: the implementation is being written on its own branch.

use super::token::{FetchError, FetchFuture, TokenSource};
use crate::config::ManagedIdentityConfig;
use crate::env::Env;

pub struct ManagedIdentity;

impl ManagedIdentity {
    pub fn new(_config: &ManagedIdentityConfig, _env: &Env) -> Self {
        Self
    }

    /// For the `default` chain: one attempt, short timeouts.
    pub fn probing(self) -> Self {
        self
    }
}

impl TokenSource for ManagedIdentity {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async { Err(FetchError::new("managed_identity is not finished")) })
    }
    fn describe(&self) -> String {
        "managed_identity".to_string()
    }
}
