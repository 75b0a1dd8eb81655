//! `static` and `subscription_key`: a header whose value is fixed in the config.

use http::{HeaderName, HeaderValue};

use super::Injection;

/// A fixed header, validated (and marked sensitive) when the config was loaded.
#[derive(Debug)]
pub struct FixedHeader {
    name: HeaderName,
    value: HeaderValue,
}

impl FixedHeader {
    pub fn new(name: HeaderName, mut value: HeaderValue) -> Self {
        value.set_sensitive(true);
        Self { name, value }
    }

    /// The configured value, for `azgate token NAME`.
    pub fn reveal(&self) -> String {
        String::from_utf8_lossy(self.value.as_bytes()).into_owned()
    }

    /// Cloning a `HeaderValue` shares its bytes: no allocation per request.
    pub fn injection(&self) -> Injection {
        Injection::Header {
            name: self.name.clone(),
            value: self.value.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injects_a_sensitive_header_and_hides_it_in_debug() {
        let fixed = FixedHeader::new(
            HeaderName::from_static("ocp-apim-subscription-key"),
            HeaderValue::from_static("k-123-secret"),
        );
        let Injection::Header { name, value } = fixed.injection() else {
            panic!("expected a header injection");
        };
        assert_eq!(name, "ocp-apim-subscription-key");
        assert_eq!(value, "k-123-secret");
        assert!(value.is_sensitive());
        assert!(!format!("{fixed:?} {value:?}").contains("k-123-secret"));
    }
}
