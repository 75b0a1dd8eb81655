//! Metrics read from the gateway in service when Prometheus scrapes, rather than counted
//! as events: each credential's token fetches and expiry, each vending route's cache size.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::{CredentialLabel, CredentialOutcome, RouteLabel};
use crate::gateway::Gateway;

/// `azgate_token_fetches_total{credential,outcome}` and
/// `azgate_token_expiry_timestamp_seconds{credential}`, read from the token caches of the
/// gateway in service when Prometheus scrapes.
#[derive(Debug)]
pub(super) struct TokenCollector(pub(super) Arc<OnceLock<Arc<ArcSwap<Gateway>>>>);

impl Collector for TokenCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let fetches = Family::<CredentialOutcome, Counter>::default();
        let expiry = Family::<CredentialLabel, Gauge<f64, AtomicU64>>::default();
        if let Some(gateway) = self.0.get() {
            let gateway = gateway.load();
            let now = SystemTime::now();
            for credential in gateway.credentials.iter() {
                let Some(cache) = credential.cache() else {
                    continue;
                };
                let status = cache.status();
                let name = credential.name().to_string();
                for (outcome, n) in [("success", status.successes), ("failure", status.failures)] {
                    fetches
                        .get_or_create(&CredentialOutcome {
                            credential: name.clone(),
                            outcome: outcome.to_string(),
                        })
                        .inc_by(n);
                }
                if let Some(left) = status.expires_in.filter(|_| status.has_token) {
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
pub(super) struct VendCollector(pub(super) Arc<OnceLock<Arc<ArcSwap<Gateway>>>>);

impl Collector for VendCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let entries = Family::<RouteLabel, Gauge>::default();
        if let Some(gateway) = self.0.get() {
            for route in gateway.load().router.vend_routes() {
                let held = route.tokens.as_ref().map_or(0, |t| t.entries());
                entries
                    .get_or_create(&RouteLabel {
                        route: route.name.clone(),
                    })
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
