//! `default`: environment, workload identity, managed identity, Azure CLI.
//!
//! PLACEHOLDER during development.

use super::token::{FetchError, FetchFuture, TokenSource};
use crate::config::DefaultConfig;
use crate::env::Env;

pub struct DefaultChain;

impl DefaultChain {
    pub fn new(_config: &DefaultConfig, _env: &Env) -> Self {
        Self
    }
}

impl TokenSource for DefaultChain {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async { Err(FetchError::new("default is not finished")) })
    }
    fn describe(&self) -> String {
        "default".to_string()
    }
}
