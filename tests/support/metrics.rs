//! Prometheus text parsed into samples, for exact assertions on `/metrics`.
#![allow(dead_code)]

use std::collections::HashMap;

pub type Samples = HashMap<(String, Vec<(String, String)>), f64>;

/// GETs `{admin}/metrics` and parses it.
pub async fn scrape(admin: &str) -> Samples {
    let text = super::client()
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .expect("scrape /metrics")
        .text()
        .await
        .expect("metrics body");
    samples(&text)
}

/// Prometheus samples as (name, sorted labels) -> value.
pub fn samples(text: &str) -> Samples {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("metrics parse");
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(_) | prometheus_parse::Value::Summary(_) => {
                    f64::NAN
                }
            };
            ((s.metric, labels), value)
        })
        .collect()
}

/// The sample `name{labels}`; panics when there is none.
pub fn get(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    lookup(samples, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

/// The sample `name{labels}`, if there is one.
pub fn lookup(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    samples.get(&(name.to_string(), labels)).copied()
}
