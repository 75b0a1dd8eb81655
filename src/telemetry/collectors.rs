//! Metrics read from the gateway in service when Prometheus scrapes, rather than counted
//! as events: each credential's token fetches and expiry, each vending route's cache size.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::labels::{CredentialLabel, CredentialOutcome, RouteLabel};

/// What the scrape-time metrics read from the state in service. The gateway implements it
/// (`gateway.rs`), so telemetry, a leaf of the module graph, imports nothing above it.
pub trait Scraped: Send + Sync + std::fmt::Debug {
    /// Each credential's token cache, read now.
    fn token_caches(&self) -> Vec<TokenSample>;
    /// Each vending route and the viewer tokens it holds.
    fn vend_caches(&self) -> Vec<(Arc<str>, u64)>;
    /// Each holding route and the requests waiting out its hold now.
    fn throttle_queues(&self) -> Vec<(Arc<str>, u64)>;
}

/// One credential's token cache at a scrape.
pub struct TokenSample {
    pub credential: String,
    pub successes: u64,
    pub failures: u64,
    /// Time left on the token held, if one is held and usable.
    pub expires_in: Option<std::time::Duration>,
}

/// Set once, at start; empty until then.
pub(super) type Source = Arc<OnceLock<Arc<dyn Scraped>>>;

/// `azgate_token_fetches_total{credential,outcome}` and
/// `azgate_token_expiry_timestamp_seconds{credential}`, read from the token caches of the
/// gateway in service when Prometheus scrapes.
#[derive(Debug)]
pub(super) struct TokenCollector(pub(super) Source);

impl Collector for TokenCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let fetches = Family::<CredentialOutcome, Counter>::default();
        let expiry = Family::<CredentialLabel, Gauge<f64, AtomicU64>>::default();
        if let Some(source) = self.0.get() {
            let now = SystemTime::now();
            for sample in source.token_caches() {
                let name = sample.credential;
                for (outcome, n) in [("success", sample.successes), ("failure", sample.failures)] {
                    fetches
                        .get_or_create(&CredentialOutcome {
                            credential: name.clone(),
                            outcome: outcome.to_string(),
                        })
                        .inc_by(n);
                }
                if let Some(left) = sample.expires_in {
                    let at = (now + left).duration_since(UNIX_EPOCH).unwrap_or_default();
                    expiry
                        .get_or_create(&CredentialLabel { credential: name })
                        .set(at.as_secs_f64());
                }
            }
        }
        let counter = encoder.encode_descriptor(
            // The registry adds the `azgate_` prefix.
            "token_fetches",
            "Token fetches, by credential and outcome",
            None,
            fetches.metric_type(),
        )?;
        fetches.encode(counter)?;
        let gauge = encoder.encode_descriptor(
            "token_expiry_timestamp_seconds",
            "When each credential's current token expires (Unix time)",
            None,
            expiry.metric_type(),
        )?;
        expiry.encode(gauge)?;
        Ok(())
    }
}

/// `azgate_vend_cache_entries{route}`: the viewer tokens each vending route holds.
#[derive(Debug)]
pub(super) struct VendCollector(pub(super) Source);

impl Collector for VendCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let entries = Family::<RouteLabel, Gauge>::default();
        if let Some(source) = self.0.get() {
            for (route, held) in source.vend_caches() {
                entries
                    .get_or_create(&RouteLabel { route })
                    .set(i64::try_from(held).unwrap_or(i64::MAX));
            }
        }
        let gauge = encoder.encode_descriptor(
            "vend_cache_entries",
            "Viewer tokens each vending route holds in its cache",
            None,
            entries.metric_type(),
        )?;
        entries.encode(gauge)
    }
}

/// `azgate_throttle_queue{route}`: requests waiting out a route's hold now.
#[derive(Debug)]
pub(super) struct ThrottleCollector(pub(super) Source);

impl Collector for ThrottleCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let queued = Family::<RouteLabel, Gauge>::default();
        if let Some(source) = self.0.get() {
            for (route, waiting) in source.throttle_queues() {
                queued
                    .get_or_create(&RouteLabel { route })
                    .set(i64::try_from(waiting).unwrap_or(i64::MAX));
            }
        }
        let gauge = encoder.encode_descriptor(
            "throttle_queue",
            "Requests waiting out each holding route's hold now.",
            None,
            queued.metric_type(),
        )?;
        queued.encode(gauge)
    }
}
