//! W3C Trace Context on the wire: the `traceparent` azgate reads at the inbound edge and
//! writes on each upstream attempt. `tracestate` is not touched: the template carries the
//! client's on to the upstream as it came.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{SpanContext, TraceId};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The trace id of a well-formed incoming `traceparent` (version 00 layout, non-zero id),
/// for the access log and error bodies when azgate exports no spans itself. Reads one
/// header in place; no allocation.
pub fn incoming_trace_id(headers: &HeaderMap) -> Option<TraceId> {
    let value = headers.get(TRACEPARENT)?.as_bytes();
    // version "-" trace-id "-" parent-id "-" flags; later versions may append fields.
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    if &value[..2] == b"ff" || (value.len() > 55 && value[55] != b'-') {
        return None;
    }
    let hex = std::str::from_utf8(&value[3..35]).ok()?;
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    TraceId::from_hex(hex)
        .ok()
        .filter(|id| *id != TraceId::INVALID)
}

/// The `traceparent` naming `span` as the parent of what the upstream does.
pub fn traceparent(span: &SpanContext) -> HeaderValue {
    let text = format!(
        "00-{}-{}-{:02x}",
        span.trace_id(),
        span.span_id(),
        span.trace_flags()
    );
    // Hex digits and dashes only.
    let mut value = HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static(""));
    // New on every attempt: kept out of an HTTP/2 upstream's HPACK table (never-indexed),
    // like the request id, so it does not push out the entries worth keeping.
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceFlags, TraceState};

    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn incoming_traceparents() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let cases = [
            (format!("00-{id}-00f067aa0ba902b7-01"), true),
            (format!("00-{id}-00f067aa0ba902b7-00"), true),
            // A later version may add fields after a dash.
            (format!("01-{id}-00f067aa0ba902b7-01-extra"), true),
            (format!("ff-{id}-00f067aa0ba902b7-01"), false),
            (format!("00-{id}-00f067aa0ba902b7-01x"), false),
            (format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)), false),
            (
                format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase()),
                false,
            ),
            ("00-short-01".to_string(), false),
        ];
        for (value, valid) in cases {
            let found = incoming_trace_id(&with(&value));
            assert_eq!(found.is_some(), valid, "{value}");
            if valid {
                assert_eq!(found.unwrap().to_string(), id);
            }
        }
        assert_eq!(incoming_trace_id(&HeaderMap::new()), None);
    }

    #[test]
    fn outgoing_traceparent_names_the_span() {
        let span = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        );
        assert_eq!(
            traceparent(&span),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }
}
