//! Credential upkeep without traffic: one task, started by the server and stopped on
//! shutdown, that keeps the credentials of the gateway in service usable while no request
//! comes. A credential that failed and holds no valid token is retried with its cache's
//! backoff (1 s doubling to 60 s, or the endpoint's `Retry-After`), so `/readyz` recovers
//! by itself once the token endpoint is back — an unready pod gets no traffic, so waiting
//! for a request would wait forever. A held token is refreshed at its refresh point, so
//! readiness notices a token endpoint that failed while the gateway was idle and the first
//! request after a quiet hour does not wait for a fetch.
//!
//! Only credentials that have been used are tended: tokens are still fetched on first use.
//! The task reads the gateway through the `ArcSwap` on every round, so a reload changes
//! what it watches.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::gateway::Gateway;

/// Longest sleep between two rounds: how long a new failure, or a reload, can go
/// unnoticed. Each round is a lock and a comparison per watched credential.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// Runs until `stop` turns true (or its sender is gone).
pub async fn run(gateway: Arc<ArcSwap<Gateway>>, mut stop: watch::Receiver<bool>) {
    loop {
        let now = Instant::now();
        let next = {
            let gateway = gateway.load();
            gateway
                .watched_credentials()
                .into_iter()
                .filter_map(|credential| credential.cache())
                .filter_map(|cache| cache.tend())
                .min()
        };
        let wake = next.map_or(now + LOOK_AGAIN, |at| at.min(now + LOOK_AGAIN));
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}
