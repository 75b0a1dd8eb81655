//! A scripted upstream: answers requests with a fixed sequence of replies (repeating the
//! last one) and records what it received and when (on tokio's clock, so tests on the
//! paused clock can check the waits between attempts).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::{MockUpstream, full};

/// One reply of the script.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

pub fn reply(status: u16) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: format!("reply {status}"),
    }
}

impl Reply {
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }
}

/// A request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub struct Scripted {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _server: MockUpstream,
}

impl Scripted {
    pub async fn start(script: Vec<Reply>) -> Self {
        assert!(!script.is_empty());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let server = {
            let seen = seen.clone();
            let script = Arc::new(script);
            MockUpstream::start(move |request| {
                let (seen, script) = (seen.clone(), script.clone());
                async move {
                    let (parts, body) = request.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(Seen {
                            at: Instant::now(),
                            method: parts.method.to_string(),
                            path_and_query: parts
                                .uri
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            headers: parts.headers,
                            body,
                        });
                        seen.len()
                    };
                    let reply = &script[(n - 1).min(script.len() - 1)];
                    let mut response = Response::builder().status(reply.status);
                    for (name, value) in &reply.headers {
                        response = response.header(*name, value);
                    }
                    response.body(full(reply.body.clone())).unwrap()
                }
            })
            .await
        };
        Self {
            url: server.url.clone(),
            seen,
            _server: server,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The gaps between consecutive requests.
    pub fn gaps(&self) -> Vec<std::time::Duration> {
        let seen = self.seen();
        seen.windows(2).map(|w| w[1].at - w[0].at).collect()
    }
}
