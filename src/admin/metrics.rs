//! `GET /metrics` on the admin listener: the registry in the format the scraper asked for.
//! Prometheus asks for OpenMetrics first and gets it; every other client (an `Accept` of
//! `text/plain`, `*/*` as curl sends, or none) gets the classic Prometheus text format
//! 0.0.4, which every scraper reads — the default Prometheus's own Go client chose too.

use http::HeaderValue;

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 text: counter families named without `_total`, `# EOF`.
    OpenMetrics,
    /// Prometheus text 0.0.4: counters' HELP/TYPE named with `_total`, no `# UNIT`/`# EOF`.
    Text,
}

impl Format {
    pub fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        })
    }
}

/// OpenMetrics when the `Accept` header rates `application/openmetrics-text` above zero and
/// at least as high as `text/plain`; the 0.0.4 text format otherwise.
pub fn negotiate(accept: Option<&HeaderValue>) -> Format {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return Format::Text;
    };
    let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" => text = text.max(q),
            _ => {}
        }
    }
    if openmetrics > 0.0 && openmetrics >= text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// Rewrites the OpenMetrics text the registry produces into the 0.0.4 text format: the
/// HELP and TYPE lines of counters take the `_total` their samples carry (else a classic
/// parser types the samples `untyped`), `info` becomes a `gauge` named `_info`, `unknown`
/// becomes `untyped`, and `# UNIT`, `# EOF` and counters' `_created` samples go. Samples
/// and escaping are the same in both formats.
pub fn to_text(openmetrics: &str) -> String {
    // Family name -> (name in 0.0.4, type in 0.0.4), from the TYPE lines.
    let mut families = std::collections::HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            let renamed = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                other => (name.to_string(), other),
            };
            families.insert(name, renamed);
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|tag| Some((tag, line.strip_prefix(tag)?)));
        if let Some((tag, rest)) = descriptor {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            match families.get(name) {
                Some((renamed, kind)) if tag == "# TYPE " => {
                    out.push_str(&format!("# TYPE {renamed} {kind}\n"));
                }
                Some((renamed, _)) => out.push_str(&format!("# HELP {renamed} {tail}\n")),
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            continue;
        }
        if is_created_sample(line, &families) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A counter's `_created` sample, which the 0.0.4 format does not have.
fn is_created_sample(
    line: &str,
    families: &std::collections::HashMap<&str, (String, &str)>,
) -> bool {
    let name = line.split(['{', ' ']).next().unwrap_or("");
    name.strip_suffix("_created")
        .and_then(|family| families.get(family))
        .is_some_and(|(_, kind)| *kind == "counter")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let cases: &[(Option<&str>, Format)] = &[
            (None, Format::Text),
            (Some("*/*"), Format::Text),
            (Some("text/plain"), Format::Text),
            (Some("text/plain;version=0.0.4"), Format::Text),
            (Some("application/json"), Format::Text),
            // What Prometheus sends (2.x and 3.x).
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                Format::OpenMetrics,
            ),
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                Format::OpenMetrics,
            ),
            (Some("Application/OpenMetrics-Text"), Format::OpenMetrics),
            (
                Some("application/openmetrics-text;q=0.3, text/plain;q=0.9"),
                Format::Text,
            ),
            (Some("application/openmetrics-text;q=0"), Format::Text),
        ];
        for (accept, want) in cases {
            let header = accept.map(HeaderValue::from_static);
            assert_eq!(negotiate(header.as_ref()), *want, "{accept:?}");
        }
    }

    #[test]
    fn openmetrics_to_text() {
        let openmetrics = "\
# HELP azgate_requests Requests answered.
# TYPE azgate_requests counter
azgate_requests_total{route=\"/a\",status=\"200\"} 3
azgate_requests_created{route=\"/a\",status=\"200\"} 1700000000.0
# HELP azgate_inflight_requests Requests being served.
# TYPE azgate_inflight_requests gauge
azgate_inflight_requests 0
# HELP azgate_latency_seconds Latency.
# TYPE azgate_latency_seconds histogram
# UNIT azgate_latency_seconds seconds
azgate_latency_seconds_sum 0.5
azgate_latency_seconds_count 1
azgate_latency_seconds_bucket{le=\"+Inf\"} 1
# HELP azgate_build Build.
# TYPE azgate_build info
azgate_build_info{version=\"1\"} 1
# HELP azgate_retries Upstream retries.
# TYPE azgate_retries counter
# HELP azgate_odd Odd.
# TYPE azgate_odd unknown
azgate_odd 1
# EOF
";
        let want = "\
# HELP azgate_requests_total Requests answered.
# TYPE azgate_requests_total counter
azgate_requests_total{route=\"/a\",status=\"200\"} 3
# HELP azgate_inflight_requests Requests being served.
# TYPE azgate_inflight_requests gauge
azgate_inflight_requests 0
# HELP azgate_latency_seconds Latency.
# TYPE azgate_latency_seconds histogram
azgate_latency_seconds_sum 0.5
azgate_latency_seconds_count 1
azgate_latency_seconds_bucket{le=\"+Inf\"} 1
# HELP azgate_build_info Build.
# TYPE azgate_build_info gauge
azgate_build_info{version=\"1\"} 1
# HELP azgate_retries_total Upstream retries.
# TYPE azgate_retries_total counter
# HELP azgate_odd Odd.
# TYPE azgate_odd untyped
azgate_odd 1
";
        assert_eq!(to_text(openmetrics), want);
    }
}
