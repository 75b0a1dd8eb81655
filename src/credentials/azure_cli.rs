//! `azure_cli`: `az account get-access-token`.
//!
//! PLACEHOLDER during development: the implementation is being written on its own branch.

use super::token::{FetchError, FetchFuture, TokenSource};
use crate::config::AzureCliConfig;
use crate::env::Env;

pub struct AzureCli;

impl AzureCli {
    pub fn new(_config: &AzureCliConfig, _env: &Env) -> Self {
        Self
    }
}

impl TokenSource for AzureCli {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async { Err(FetchError::new("azure_cli is not finished")) })
    }
    fn describe(&self) -> String {
        "azure_cli".to_string()
    }
}
