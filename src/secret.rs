//! A string that must never be printed: client secrets, subscription keys, tokens.
//!
//! `Secret`'s `Debug` and `Display` both print `***`, so a stray `{:?}` or `{}` on a config
//! or credential struct cannot leak it into a log line or an error body.

use std::fmt;

/// A secret value read from the config or fetched from a token endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2-very-secret");
        let printed = format!("{s:?} {:#?} {s}", Some(&s));
        assert!(!printed.contains("hunter2"), "{printed}");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }
}
