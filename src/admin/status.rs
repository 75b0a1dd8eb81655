//! `/status.json` and the `/status` page that renders it. Everything here is safe to show:
//! paths are redacted by the access log, credentials show their source and token expiry,
//! vending routes their cache size and counts, never a token.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json as j};

use super::AdminState;
use crate::credentials::TokenCache;
use crate::credentials::video_indexer::ViewerTokens;
use crate::proxy::vend::VendRoute;

/// The self-contained status page (HTML, CSS and script inline; no external assets).
pub const PAGE: &str = include_str!("status.html");

pub(super) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn json(state: &AdminState) -> Value {
    let gateway = state.gateway.load();
    let now = SystemTime::now();
    let summaries = state.telemetry.route_summaries();
    let mut prefixes: Vec<_> = gateway
        .config
        .routes
        .iter()
        .map(|r| r.prefix.clone())
        .collect();
    prefixes.sort();
    let routes: Vec<Value> = gateway
        .config
        .routes
        .iter()
        .map(|route| {
            let summary = summaries.get(&route.prefix).cloned().unwrap_or_default();
            // The hold window after the upstream's 429s: its time left and its queue.
            let throttle = gateway
                .router
                .routes()
                .find(|r| r.config.prefix == route.prefix)
                .filter(|r| r.throttle.holds())
                .map(|r| {
                    j!({
                        "hold_left_ms": r.throttle.hold_left().map(|d| d.as_millis() as u64),
                        "queued": r.throttle.queued(),
                        // Rounded to a hundredth: a pace, not a measurement.
                        "learned_per_second": r.throttle.learned_per_second().map(|p| (p * 100.0).round() / 100.0),
                    })
                });
            j!({
                "prefix": route.prefix,
                "throttle": throttle,
                "upstream": route.upstream.to_string().trim_end_matches('/'),
                "credential": route.credential,
                "methods": route.methods.as_ref().map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
                "requests": summary.requests,
                "errors": summary.errors,
                "p50_ms": summary.p50_ms,
                "p99_ms": summary.p99_ms,
            })
        })
        .collect();
    let credentials: Vec<Value> = gateway
        .credentials
        .iter()
        .map(|credential| match credential.cache() {
            Some(cache) => {
                let s = cache.status();
                j!({
                    "name": credential.name(),
                    "type": credential.kind(),
                    "source": cache.describe(),
                    "has_token": s.has_token,
                    "expires_at_ms": s.expires_in.filter(|_| s.has_token).map(|left| unix_ms(now + left)),
                    "last_refresh_ms": s.last_refresh_ago.and_then(|ago| now.checked_sub(ago)).map(unix_ms),
                    "last_error": s.last_error,
                    "fetches": {"success": s.successes, "failure": s.failures},
                    "sources_tried": sources_tried(cache),
                })
            }
            None => j!({
                "name": credential.name(),
                "type": credential.kind(),
                "source": "fixed value from the config",
                "has_token": true,
                "expires_at_ms": null,
                "last_refresh_ms": null,
                "last_error": null,
                "fetches": null,
                "sources_tried": [],
            }),
        })
        .collect();
    let vend_routes: Vec<Value> = gateway.router.vend_routes().map(vend_route).collect();
    let started = state.telemetry.started();
    j!({
        "version": env!("CARGO_PKG_VERSION"),
        "now_ms": unix_ms(now),
        "started_ms": unix_ms(started),
        "uptime_seconds": now.duration_since(started).map_or(0.0, |d| d.as_secs_f64()),
        "draining": state.health.is_draining(),
        "config": gateway.config.file,
        "routes": routes,
        "credentials": credentials,
        "vend_routes": vend_routes,
        "requests": state.telemetry.history(),
    })
}

/// What a chained credential (`default`) looked at: each source, `used`, `failed` or
/// `unavailable`, and why. Empty for other credentials.
fn sources_tried(cache: &TokenCache) -> Vec<Value> {
    cache
        .tried()
        .into_iter()
        .map(|step| j!({"source": step.source, "outcome": step.outcome.as_str(), "reason": step.reason}))
        .collect()
}

/// A vending route: its viewer-token cache (entries held, at most `max_entries`) and how
/// its token requests were served since the route was built (a reload that keeps the
/// route keeps its counts). Counts only: no token, no id.
fn vend_route(route: &Arc<VendRoute>) -> Value {
    let tokens = route.tokens.as_deref();
    let count = |pick: fn(&ViewerTokens) -> u64| tokens.map(pick);
    j!({
        "prefix": route.prefix(),
        "credential": route.config.credential,
        "entries": tokens.map(|t| t.entries()),
        "max_entries": route.config.max_entries,
        "hits": count(|t| t.stats.hits.load(Ordering::Relaxed)),
        "misses": count(|t| t.stats.misses.load(Ordering::Relaxed)),
        "refused": count(|t| t.stats.refused.load(Ordering::Relaxed)),
        "errors": count(|t| t.stats.errors.load(Ordering::Relaxed)),
    })
}
