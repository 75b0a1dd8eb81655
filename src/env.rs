//! The process environment as a value, so that credential sources (which read `AZURE_*`,
//! `IDENTITY_ENDPOINT`, `PATH`…) can be given a fixed environment in tests instead of
//! mutating the real one.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

#[derive(Clone)]
pub struct Env(Arc<Lookup>);

impl Env {
    /// The real process environment.
    pub fn process() -> Self {
        Self(Arc::new(|name| std::env::var(name).ok()))
    }

    /// A fixed set of variables.
    pub fn from_map(vars: HashMap<String, String>) -> Self {
        Self(Arc::new(move |name| vars.get(name).cloned()))
    }

    /// A fixed set of variables from `(name, value)` pairs, for tests.
    #[cfg(test)]
    pub fn from_pairs(vars: &[(&str, &str)]) -> Self {
        Self::from_map(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// The variable's value; unset and empty are the same.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.is_empty())
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Env")
    }
}
