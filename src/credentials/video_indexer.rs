//! `video_indexer`: classic (subscription key) and ARM-based account tokens.
//!
//! PLACEHOLDER during development: the implementation is being written on its own branch.

use std::sync::Arc;

use super::cache::TokenCache;
use super::token::{FetchError, FetchFuture, TokenSource};
use crate::config::VideoIndexerConfig;

pub struct VideoIndexer;

impl VideoIndexer {
    pub fn new(_config: &VideoIndexerConfig, _arm: Option<Arc<TokenCache>>) -> Self {
        Self
    }
}

impl TokenSource for VideoIndexer {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async { Err(FetchError::new("video_indexer is not finished")) })
    }
    fn describe(&self) -> String {
        "video_indexer".to_string()
    }
}
