//! `static` and `subscription_key`: a header whose value is fixed in the config, with an
//! optional secondary key that takes over when the upstream refuses the primary one.

use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderName, HeaderValue};

use super::Injection;

/// A fixed header, validated (and marked sensitive) when the config was loaded.
#[derive(Debug)]
pub struct FixedHeader {
    name: HeaderName,
    value: HeaderValue,
    secondary: Option<HeaderValue>,
    /// Set once the primary value was refused; stays until the config is reloaded.
    on_secondary: AtomicBool,
}

/// Which of the two values an injection carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Primary,
    Secondary,
}

impl FixedHeader {
    pub fn new(name: HeaderName, value: HeaderValue, secondary: Option<HeaderValue>) -> Self {
        let sensitive = |mut v: HeaderValue| {
            v.set_sensitive(true);
            v
        };
        Self {
            name,
            value: sensitive(value),
            secondary: secondary.map(sensitive),
            on_secondary: AtomicBool::new(false),
        }
    }

    /// The value to send now. Cloning a `HeaderValue` shares its bytes: no allocation.
    pub fn injection(&self) -> (Injection, Slot) {
        let (value, slot) = match &self.secondary {
            Some(secondary) if self.on_secondary.load(Ordering::Relaxed) => {
                (secondary, Slot::Secondary)
            }
            _ => (&self.value, Slot::Primary),
        };
        let injection = Injection::Header {
            name: self.name.clone(),
            value: value.clone(),
        };
        (injection, slot)
    }

    /// The upstream refused the value in `used`. Switches to the secondary value when
    /// there is one; true when a replay with the other value makes sense, and whether
    /// this call made the switch.
    pub fn refuse(&self, used: Slot) -> (bool, bool) {
        if used != Slot::Primary || self.secondary.is_none() {
            return (false, false);
        }
        let switched = !self.on_secondary.swap(true, Ordering::Relaxed);
        (true, switched)
    }

    /// The value in use, for `azgate token NAME`.
    pub fn reveal(&self) -> String {
        match self.injection().0 {
            Injection::Header { value, .. } => {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            }
            Injection::Query { value, .. } => value.expose().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(injection: Injection) -> HeaderValue {
        match injection {
            Injection::Header { value, .. } => value,
            Injection::Query { .. } => panic!("expected a header"),
        }
    }

    #[test]
    fn injects_a_sensitive_header_and_hides_it_in_debug() {
        let fixed = FixedHeader::new(
            HeaderName::from_static("ocp-apim-subscription-key"),
            HeaderValue::from_static("k-123-secret"),
            None,
        );
        let (injection, slot) = fixed.injection();
        assert_eq!(slot, Slot::Primary);
        let value = header(injection);
        assert_eq!(value, "k-123-secret");
        assert!(value.is_sensitive());
        assert!(!format!("{fixed:?} {value:?}").contains("k-123-secret"));
        assert_eq!(
            fixed.refuse(Slot::Primary),
            (false, false),
            "no secondary, no replay"
        );
    }

    #[test]
    fn a_refused_primary_switches_to_the_secondary_once() {
        let fixed = FixedHeader::new(
            HeaderName::from_static("ocp-apim-subscription-key"),
            HeaderValue::from_static("primary"),
            Some(HeaderValue::from_static("secondary")),
        );
        assert_eq!(fixed.refuse(Slot::Primary), (true, true));
        assert_eq!(
            fixed.refuse(Slot::Primary),
            (true, false),
            "a concurrent request replays too"
        );
        let (injection, slot) = fixed.injection();
        assert_eq!(
            (header(injection), slot),
            (HeaderValue::from_static("secondary"), Slot::Secondary)
        );
        assert_eq!(
            fixed.refuse(Slot::Secondary),
            (false, false),
            "the secondary refused: no loop"
        );
        assert_eq!(fixed.reveal(), "secondary");
    }
}
