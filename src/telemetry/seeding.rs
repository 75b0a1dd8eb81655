//! Label sets listed at 0 before their first event (the gateway seeds those its config
//! makes known), and the counters of vending and throttling.

use std::sync::Arc;

use super::Telemetry;
use super::labels::{
    CredentialLabel, HeaderLabels, OutcomeLabel, RetryLabels, RouteLabel, RouteOutcome, VendLabels,
};

impl Telemetry {
    /// Lists a label set at 0 before its first event (`gateway.rs` seeds those the config
    /// makes known, at start and after each reload).
    pub fn seed_retry(&self, route: &Arc<str>, reason: &'static str) {
        self.retries.get_or_create_owned(&RetryLabels {
            route: route.clone(),
            reason,
        });
    }

    pub fn seed_rewrite_skipped(&self, route: &Arc<str>, reason: &'static str) {
        self.rewrite_skipped.get_or_create_owned(&RetryLabels {
            route: route.clone(),
            reason,
        });
    }

    pub fn seed_vend(&self, route: &Arc<str>) {
        for scope in ["account", "project", "video"] {
            for outcome in ["hit", "miss", "refused", "error"] {
                self.vend_requests.get_or_create_owned(&VendLabels {
                    route: route.clone(),
                    scope,
                    outcome,
                });
            }
        }
    }

    pub fn seed_throttle(&self, route: &Arc<str>) {
        self.throttle_holds.get_or_create_owned(&RouteLabel {
            route: route.clone(),
        });
        for outcome in ["queued", "rejected", "abandoned"] {
            self.throttled.get_or_create_owned(&RouteOutcome {
                route: route.clone(),
                outcome,
            });
        }
    }

    pub fn record_throttle_hold(&self, route: &Arc<str>) {
        self.throttle_holds
            .get_or_create(&RouteLabel {
                route: route.clone(),
            })
            .inc();
    }

    pub fn record_throttled(&self, route: &Arc<str>, outcome: &'static str) {
        self.throttled
            .get_or_create(&RouteOutcome {
                route: route.clone(),
                outcome,
            })
            .inc();
    }

    pub fn record_ratelimit_remaining(&self, route: &Arc<str>, header: &'static str, left: i64) {
        self.ratelimit_remaining
            .get_or_create(&HeaderLabels {
                route: route.clone(),
                header,
            })
            .set(left);
    }

    pub fn seed_failover(&self, credential: &str) {
        self.failovers.get_or_create_owned(&CredentialLabel {
            credential: credential.to_string(),
        });
    }

    pub fn seed_reloads(&self) {
        for outcome in ["success", "failure"] {
            self.reloads.get_or_create_owned(&OutcomeLabel {
                outcome: outcome.to_string(),
            });
        }
    }

    pub fn record_vend(&self, route: &Arc<str>, scope: &'static str, outcome: &'static str) {
        self.vend_requests
            .get_or_create(&VendLabels {
                route: route.clone(),
                scope,
                outcome,
            })
            .inc();
    }
}
