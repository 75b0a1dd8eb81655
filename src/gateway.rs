//! The hot state: everything built from one config that the request path reads. The
//! server holds it in an `ArcSwap`, so a reload builds a new `Gateway` off the request
//! path and swaps it in whole; requests in flight keep the snapshot they started with.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, VendRouteConfig};
use crate::credentials::video_indexer::ViewerTokens;
use crate::credentials::{Credential, CredentialSet};
use crate::env::Env;
use crate::proxy::inbound::access::AccessPolicy;
use crate::proxy::route::{Route, Router};
use crate::proxy::upstream::UpstreamClient;
use crate::proxy::vend::VendRoute;
use crate::telemetry::{Scraped, Telemetry, TokenSample};

#[derive(Debug)]
pub struct Gateway {
    pub config: Arc<Config>,
    pub router: Router,
    pub credentials: CredentialSet,
    /// Inbound keys and address allow-list of the proxy listener.
    pub access: AccessPolicy,
    /// The same for the admin listener (`[admin.inbound]`).
    pub admin_access: AccessPolicy,
}

impl Gateway {
    pub fn build(config: Config, env: &Env) -> Self {
        Self::rebuild(config, env, None)
    }

    /// A gateway for a new config that keeps the credentials (and their cached tokens)
    /// whose definition did not change since `previous`.
    pub fn rebuild(config: Config, env: &Env, previous: Option<&Gateway>) -> Self {
        let credentials = CredentialSet::rebuild(
            &config.credentials,
            env,
            previous.map(|p| (&p.config.credentials, &p.credentials)),
        );
        let access = AccessPolicy::new(&config.server.inbound);
        let admin_access = AccessPolicy::new(&config.admin.inbound);
        // Routes share one pooled client unless they trust a private CA: one pool per
        // trust configuration keeps connections reusable across routes to the same host.
        let shared = UpstreamClient::new(None);
        let mut by_ca: HashMap<PathBuf, UpstreamClient> = HashMap::new();
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let client = match &route.ca_roots {
                    Some(ca) => by_ca
                        .entry(ca.path.clone())
                        .or_insert_with(|| UpstreamClient::new(Some(ca)))
                        .clone(),
                    None => shared.clone(),
                };
                // References were checked when the config was validated.
                let credential = route
                    .credential
                    .as_deref()
                    .and_then(|name| credentials.get(name).cloned());
                let mut built = Route::new(route.clone(), credential, client);
                // A hold in progress survives a reload that leaves its route alone.
                if let Some(old) = previous
                    .and_then(|p| p.router.routes().find(|r| r.config.prefix == route.prefix))
                {
                    built.keep_throttle_of(old);
                }
                built
            })
            .collect();
        let vending = config
            .vend_routes
            .iter()
            .map(|route| {
                let tokens = Self::viewer_tokens(route, &credentials, previous);
                VendRoute::new(route.clone(), tokens)
            })
            .collect();
        Self {
            config: Arc::new(config),
            router: Router::with_vending(routes, vending),
            credentials,
            access,
            admin_access,
        }
    }

    /// A vending route's token cache: the previous gateway's when neither the route nor
    /// its credential changed (a reload keeps the cached tokens), else a new one.
    fn viewer_tokens(
        route: &VendRouteConfig,
        credentials: &CredentialSet,
        previous: Option<&Gateway>,
    ) -> Option<Arc<ViewerTokens>> {
        let source = credentials
            .get(&route.credential)?
            .video_indexer()?
            .source();
        let kept = previous
            .and_then(|previous| {
                previous
                    .router
                    .vend_routes()
                    .find(|old| old.config == *route)
                    .and_then(|old| old.tokens.clone())
            })
            // The same credential object: rebuilt credentials mean other tokens.
            .filter(|tokens| Arc::ptr_eq(tokens.source(), source));
        Some(kept.unwrap_or_else(|| {
            Arc::new(ViewerTokens::new(
                source.clone(),
                route.max_entries,
                route.max_concurrent_fetches,
            ))
        }))
    }

    /// The credentials `/readyz` follows: `admin.ready_requires` when set, else every
    /// credential a route uses. Each once, in name order.
    pub fn readiness_credentials(&self) -> Vec<&Arc<Credential>> {
        match &self.config.admin.ready_requires {
            Some(names) => self.named(names.iter().map(String::as_str)),
            None => self.route_credentials(),
        }
    }

    /// The credentials kept fresh in the background: those routes use, and those
    /// readiness depends on.
    pub fn watched_credentials(&self) -> Vec<&Arc<Credential>> {
        let mut names: Vec<&str> = self.route_credentials().iter().map(|c| c.name()).collect();
        if let Some(required) = &self.config.admin.ready_requires {
            names.extend(required.iter().map(String::as_str));
        }
        self.named(names.into_iter())
    }

    /// The credentials routes use: forwarding routes' `credential`, and the token source
    /// behind a vending route's `vend`.
    fn route_credentials(&self) -> Vec<&Arc<Credential>> {
        let forwarding = self
            .config
            .routes
            .iter()
            .filter_map(|route| route.credential.as_deref());
        // A vending route fetches viewer tokens, never the account token: what it needs
        // of credentials is the ARM credential of an ARM-based account (a classic one
        // needs only its key).
        let vending = self.config.vend_routes.iter().filter_map(|route| {
            match self.config.credentials.get(&route.credential) {
                Some(crate::config::CredentialConfig::VideoIndexer(vi)) => match &vi.auth {
                    crate::config::VideoIndexerAuth::Arm { arm, .. } => Some(arm.as_str()),
                    crate::config::VideoIndexerAuth::Classic { .. } => None,
                },
                _ => None,
            }
        });
        self.named(forwarding.chain(vending))
    }

    fn named<'a>(&self, names: impl Iterator<Item = &'a str>) -> Vec<&Arc<Credential>> {
        let names: BTreeSet<&str> = names.collect();
        names
            .into_iter()
            .filter_map(|name| self.credentials.get(name))
            .collect()
    }
}

impl Gateway {
    /// Creates the label sets this config makes known, at 0, so a counter is there before
    /// its first event (`rate()` and alerts need the zero): retries per route and reason,
    /// link-rewrite skips per rewriting route and reason, vending outcomes per vending
    /// route, key failovers per credential with a secondary key, reloads per outcome.
    /// Called at start and after each reload; label sets of routes that were removed stay,
    /// as counters do not go away.
    pub fn seed_metrics(&self, telemetry: &Telemetry) {
        for route in self.router.routes() {
            let retry = &route.config.retry;
            if retry.max_attempts > 1 {
                let statuses = retry.on.iter().map(|s| crate::proxy::retry::reason_for(*s));
                for reason in statuses.chain([crate::proxy::retry::CONNECTION_REASON]) {
                    telemetry.seed_retry(&route.name, reason);
                }
            }
            if route.config.rewrite_body_links {
                for skipped in crate::proxy::rewrite::Skipped::ALL {
                    telemetry.seed_rewrite_skipped(&route.name, skipped.label());
                }
            }
        }
        for route in self.router.vend_routes() {
            telemetry.seed_vend(&route.name);
        }
        for route in self.router.routes().filter(|r| r.throttle.holds()) {
            telemetry.seed_throttle(&route.name);
        }
        for (name, credential) in &self.config.credentials {
            if let crate::config::CredentialConfig::SubscriptionKey {
                secondary_key: Some(_),
                ..
            } = credential
            {
                telemetry.seed_failover(name);
            }
        }
        telemetry.seed_reloads();
    }
}

/// The scrape-time metrics read the gateway in service through this.
impl Scraped for ArcSwap<Gateway> {
    fn token_caches(&self) -> Vec<TokenSample> {
        let gateway = self.load();
        gateway
            .credentials
            .iter()
            .filter_map(|credential| {
                let status = credential.cache()?.status();
                Some(TokenSample {
                    credential: credential.name().to_string(),
                    successes: status.successes,
                    failures: status.failures,
                    expires_in: status.expires_in.filter(|_| status.has_token),
                })
            })
            .collect()
    }

    fn throttle_queues(&self) -> Vec<(Arc<str>, u64)> {
        self.load()
            .router
            .routes()
            .filter(|route| route.throttle.holds())
            .map(|route| (route.name.clone(), route.throttle.queued() as u64))
            .collect()
    }

    fn vend_caches(&self) -> Vec<(Arc<str>, u64)> {
        self.load()
            .router
            .vend_routes()
            .map(|route| {
                let held = route.tokens.as_ref().map_or(0, |t| t.entries());
                (route.name.clone(), held)
            })
            .collect()
    }
}
