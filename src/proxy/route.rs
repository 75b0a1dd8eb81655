//! The "route" phase: which configured route serves a request path, whether its method
//! is allowed, and where on the upstream the request goes.

use std::sync::Arc;

use http::Method;

use super::error::ProxyError;
use super::inbound::access::KeyDigest;
use super::retry::RetryBudget;
use super::throttle::Throttle;
use super::upstream::{Upstream, UpstreamClient};
use super::vend::VendRoute;
use crate::config::RouteConfig;
use crate::credentials::Credential;
use crate::credentials::video_indexer::{Scope, scope_in_path};
use crate::logging::LogLimiter;

/// A configured route, ready to serve: its config, its credential and its upstream's pool.
#[derive(Debug)]
pub struct Route {
    pub config: RouteConfig,
    /// The prefix, shared with logs and metrics without copying.
    pub name: Arc<str>,
    pub credential: Option<Arc<Credential>>,
    pub upstream: Upstream,
    /// The `Allow` header value, when `methods` restricts the route.
    allow: Option<String>,
    /// The upstream without a trailing slash, for messages.
    pub upstream_label: String,
    /// Caps retries on this route at a fraction of its traffic.
    pub retry_budget: RetryBudget,
    /// Digests of the inbound keys allowed on this route, when it narrows them.
    pub key_digests: Option<Vec<KeyDigest>>,
    /// Bodies whose links could not be rewritten are logged at most once a minute.
    pub rewrite_warnings: LogLimiter,
    /// Requests returned without retry because the budget was spent: logged at most every
    /// 10 s, with the count held back.
    pub budget_warnings: LogLimiter,
    /// The route's hold window after the upstream's 429s (`[routes.throttle]`); shared with
    /// the next gateway when a reload leaves the route's prefix and throttle unchanged, so
    /// a hold in progress survives the reload.
    pub throttle: Arc<Throttle>,
}

impl Route {
    pub fn new(
        config: RouteConfig,
        credential: Option<Arc<Credential>>,
        client: UpstreamClient,
    ) -> Self {
        let allow = config.methods.as_ref().map(|methods| {
            methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        });
        let key_digests = config
            .api_keys
            .as_ref()
            .map(|keys| keys.iter().map(KeyDigest::of_secret).collect());
        let upstream_label = config
            .upstream
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let name: Arc<str> = Arc::from(config.prefix.as_str());
        let upstream = client.upstream(&config.upstream);
        Self {
            throttle: Arc::new(Throttle::new(config.throttle.clone(), name.clone())),
            name,
            config,
            credential,
            upstream,
            allow,
            upstream_label,
            retry_budget: RetryBudget::default(),
            key_digests,
            rewrite_warnings: LogLimiter::new(std::time::Duration::from_secs(60)),
            budget_warnings: LogLimiter::new(std::time::Duration::from_secs(10)),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }

    /// Takes over `previous`'s hold state on a reload that keeps the route's prefix: the
    /// same throttle when its settings are unchanged, else the hold, queue and learned
    /// pace under the new settings.
    pub fn keep_throttle_of(&mut self, previous: &Route) {
        if previous.config.prefix != self.config.prefix {
            return;
        }
        self.throttle = if previous.config.throttle == self.config.throttle {
            previous.throttle.clone()
        } else {
            Arc::new(Throttle::continuing(
                self.config.throttle.clone(),
                self.name.clone(),
                &previous.throttle,
            ))
        };
    }

    /// The video or project a request is about, when the route injects tokens scoped to
    /// it (`scoped_tokens`); `None` injects the credential's account token.
    pub fn token_scope(&self, path: &str) -> Option<Scope> {
        self.config
            .scoped_tokens
            .then(|| scope_in_path(path))
            .flatten()
    }

    /// How much of a request body to keep for replay: the retry buffer when a retry or
    /// a 401 replay could need it, else nothing (the body streams at once).
    pub fn replay_limit(&self) -> u64 {
        let token = self
            .credential
            .as_ref()
            .is_some_and(|c| c.cache().is_some());
        if self.config.retry.max_attempts > 1 || token {
            self.config.retry.buffer
        } else {
            0
        }
    }

    /// 405 with the allowed methods when the route restricts them.
    pub fn check_method(&self, method: &Method) -> Result<(), ProxyError> {
        match (&self.config.methods, &self.allow) {
            (Some(methods), Some(allow)) if !methods.contains(method) => {
                Err(ProxyError::MethodNotAllowed {
                    method: method.to_string(),
                    route: self.config.prefix.clone(),
                    allowed: allow.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The upstream path for a request path: the prefix removed when `strip_prefix` is
    /// on, appended to the upstream's base path.
    pub fn upstream_path(&self, path: &str) -> String {
        let rest = if self.config.strip_prefix && self.config.prefix != "/" {
            path.get(self.config.prefix.len()..).unwrap_or("")
        } else {
            path
        };
        let base = self.config.upstream.path().trim_end_matches('/');
        let mut out = String::with_capacity(base.len() + rest.len() + 1);
        out.push_str(base);
        out.push_str(rest);
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        out
    }
}

/// What a request path matched: a forwarding route or a vending route.
#[derive(Debug, Clone, Copy)]
pub enum Matched<'a> {
    Forward(&'a Arc<Route>),
    Vend(&'a Arc<VendRoute>),
}

/// Routes ordered longest prefix first, so the first match is the most specific.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Arc<Route>>,
    vending: Vec<Arc<VendRoute>>,
    /// (prefix, index): `Ok` into `routes`, `Err` into `vending`; longest prefix first.
    order: Vec<(usize, Result<usize, usize>)>,
}

impl Router {
    pub fn new(routes: Vec<Route>) -> Self {
        Self::with_vending(routes, Vec::new())
    }

    pub fn with_vending(routes: Vec<Route>, vending: Vec<VendRoute>) -> Self {
        let routes: Vec<Arc<Route>> = routes.into_iter().map(Arc::new).collect();
        let vending: Vec<Arc<VendRoute>> = vending.into_iter().map(Arc::new).collect();
        let mut order: Vec<(usize, Result<usize, usize>)> = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.config.prefix.len(), Ok(i)))
            .chain(
                vending
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (r.config.prefix.len(), Err(i))),
            )
            .collect();
        order.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        Self {
            routes,
            vending,
            order,
        }
    }

    /// The route for `path`, matched on whole segments: `/vi` matches `/vi` and `/vi/x`,
    /// not `/video`.
    pub fn route(&self, path: &str) -> Option<Matched<'_>> {
        if !path.starts_with('/') {
            return None;
        }
        self.order.iter().find_map(|(_, index)| match *index {
            Ok(i) => {
                let route = &self.routes[i];
                segment_match(&route.config.prefix, path).then_some(Matched::Forward(route))
            }
            Err(i) => {
                let route = &self.vending[i];
                segment_match(&route.config.prefix, path).then_some(Matched::Vend(route))
            }
        })
    }

    /// The forwarding routes.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    /// The vending routes.
    pub fn vend_routes(&self) -> impl Iterator<Item = &Arc<VendRoute>> {
        self.vending.iter()
    }
}

fn segment_match(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// A route with defaults for everything but its prefix, upstream and `strip_prefix`.
    pub(crate) fn route(prefix: &str, upstream: &str, strip: bool) -> Route {
        let config = RouteConfig {
            prefix: prefix.to_string(),
            upstream: upstream.parse().unwrap(),
            credential: None,
            strip_prefix: strip,
            methods: None,
            set_headers: Vec::new(),
            timeout: Duration::from_secs(1),
            ca_roots: None,
            retry: Default::default(),
            max_body: 1 << 30,
            allow_encoded_slash: false,
            api_keys: None,
            preset: None,
            set_query: Vec::new(),
            rewrite_body_links: false,
            rewrite_body_limit: 8 << 20,
            forwarded_headers: true,
            scoped_tokens: false,
            throttle: crate::config::ThrottleConfig::default_for(false),
        };
        Route::new(config, None, UpstreamClient::new(None))
    }

    #[test]
    fn longest_whole_segment_prefix_wins() {
        let router = Router::new(vec![
            route("/", "http://root", true),
            route("/vi", "http://vi", true),
            route("/vi/trial", "http://trial", true),
        ]);
        let cases = [
            ("/vi", "/vi"),
            ("/vi/", "/vi"),
            ("/vi/x", "/vi"),
            ("/video", "/"),
            ("/vi/trial", "/vi/trial"),
            ("/vi/trial/Accounts", "/vi/trial"),
            ("/vi/trials", "/vi"),
            ("/", "/"),
            ("/other", "/"),
        ];
        for (path, want) in cases {
            let got = router.route(path).map(|m| match m {
                Matched::Forward(r) => r.prefix(),
                Matched::Vend(r) => r.prefix(),
            });
            assert_eq!(got, Some(want), "{path}");
        }
        let no_root = Router::new(vec![route("/vi", "http://vi", true)]);
        assert!(no_root.route("/video").is_none());
        assert!(no_root.route("/").is_none());
        assert!(no_root.route("*").is_none());
    }

    #[test]
    fn upstream_paths() {
        let cases = [
            (
                "/vi",
                "http://u",
                true,
                "/vi/trial/Accounts",
                "/trial/Accounts",
            ),
            ("/vi", "http://u", true, "/vi", "/"),
            ("/vi", "http://u", true, "/vi/", "/"),
            ("/vi", "http://u/api", true, "/vi/x", "/api/x"),
            ("/vi", "http://u/api/", true, "/vi/x", "/api/x"),
            ("/vi", "http://u/api", true, "/vi", "/api"),
            ("/vi", "http://u", false, "/vi/x", "/vi/x"),
            ("/vi", "http://u/base", false, "/vi/x", "/base/vi/x"),
            ("/", "http://u", true, "/x/y", "/x/y"),
            ("/", "http://u/api", true, "/x", "/api/x"),
        ];
        for (prefix, upstream, strip, path, want) in cases {
            assert_eq!(
                route(prefix, upstream, strip).upstream_path(path),
                want,
                "{prefix} {upstream} {path}"
            );
        }
    }

    #[test]
    fn method_allow_list() {
        let mut r = route("/vi", "http://u", true);
        r.config.methods = Some(vec![Method::GET, Method::HEAD]);
        let r = Route::new(r.config.clone(), None, UpstreamClient::new(None));
        assert!(r.check_method(&Method::GET).is_ok());
        match r.check_method(&Method::POST) {
            Err(ProxyError::MethodNotAllowed { allowed, .. }) => assert_eq!(allowed, "GET, HEAD"),
            other => panic!("{other:?}"),
        }
    }
}
