//! The lifecycle state of a running server, in one place: what is bound (the addresses
//! actually listened on, and the TLS material loaded for them) and which phase the process
//! is in (serving, draining, closing, cut).
//!
//! Both the reload path and the shutdown path consult it. A reload is checked against the
//! sockets that are really open, not against the addresses the new file names (a listen
//! change needs a restart), so a reload cannot take inbound access control away from a
//! socket that stays public. The shutdown path moves the phase forward; the accept loop,
//! every connection and every HTTP/2 stream watch it.

use std::net::SocketAddr;

use tokio::sync::watch;

use crate::config::{Config, TlsConfig, exposed_admin, exposed_proxy};

/// Where the process is in its life. Only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Accepting and serving.
    Serving,
    /// From SIGTERM for `drain_delay`: `/readyz` says 503 and new connections are still
    /// accepted, but every connection is asked to go (HTTP/1.1 responses carry
    /// `Connection: close`, idle HTTP/1.1 connections are closed, HTTP/2 gets GOAWAY), so
    /// clients reconnect to a replica that stays.
    Draining,
    /// No longer accepting; requests in flight get `shutdown_grace` to finish.
    Closing,
    /// The grace ran out, or a second signal asked to stop at once: whatever is still
    /// open is cut (and each cut request logged).
    Cut,
}

/// A listener as it was bound at start.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The address actually listened on (the real port when the config asked for 0).
    pub addr: SocketAddr,
    /// The TLS files loaded at start; a change of their paths needs a restart, so these
    /// (not a reloaded config's) decide whether the socket has mTLS.
    pub tls: Option<TlsConfig>,
}

/// A reload that would leave a bound socket unsafe. The running config stays.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ReloadRefused {
    /// One line per problem, each starting with its key path.
    pub problems: Vec<String>,
}

/// What is bound and which phase the server is in.
#[derive(Debug)]
pub struct Lifecycle {
    proxy: Bound,
    admin: Option<Bound>,
    phase: watch::Sender<Phase>,
    /// Set by a second signal. The drain, not the signal, moves the phase to `Cut`, so it
    /// can count what it cuts before the connections react.
    hurry: watch::Sender<bool>,
}

impl Lifecycle {
    pub fn new(proxy: Bound, admin: Option<Bound>) -> Self {
        Self {
            proxy,
            admin,
            phase: watch::Sender::new(Phase::Serving),
            hurry: watch::Sender::new(false),
        }
    }

    /// Asks for the shutdown to skip what is left of `drain_delay` and `shutdown_grace`.
    pub fn hurry(&self) {
        self.advance(Phase::Draining);
        self.hurry.send_replace(true);
    }

    /// Resolves once `hurry` was called.
    pub async fn hurried(&self) {
        let _ = self.hurry.subscribe().wait_for(|h| *h).await;
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// A receiver for whoever must react to the phase (accept loop, connections).
    pub fn watch(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Moves to `to` unless the server is already there or further; returns whether it
    /// moved.
    pub fn advance(&self, to: Phase) -> bool {
        self.phase.send_if_modified(|phase| {
            let moved = to > *phase;
            if moved {
                *phase = to;
            }
            moved
        })
    }

    /// Whether `next` may be put in service on the sockets that are open: the safe-bind
    /// rule, checked as at start but with the bound addresses and the TLS in effect.
    pub fn check_reload(&self, next: &Config) -> Result<(), ReloadRefused> {
        let mut problems = Vec::new();
        if let Some(problem) = exposed_proxy(
            self.proxy.addr,
            &next.server.inbound,
            self.proxy.tls.as_ref(),
            next.server.allow_unauthenticated,
        ) {
            problems.push(format!(
                "server.listen: the proxy listener is still bound to {} (a listen change needs \
                 a restart), and {problem}",
                self.proxy.addr
            ));
        }
        if let Some(admin) = &self.admin
            && let Some(problem) =
                exposed_admin(admin.addr, &next.admin.inbound, admin.tls.as_ref())
        {
            problems.push(format!(
                "admin.listen: the admin listener is still bound to {} (a listen change needs \
                 a restart), and {problem}",
                admin.addr
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ReloadRefused { problems })
        }
    }
}

/// Resolves once `phase` reaches `at` (or the lifecycle is gone).
pub async fn reached(phase: &mut watch::Receiver<Phase>, at: Phase) {
    let _ = phase.wait_for(|p| *p >= at).await;
}

/// Resolves once `stop` turns true (or its sender is gone): how the server's background
/// tasks (file watchers, failure reports, the admin listener) learn to stop.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phase_only_moves_forward() {
        let lifecycle = Lifecycle::new(
            Bound {
                addr: "127.0.0.1:1".parse().unwrap(),
                tls: None,
            },
            None,
        );
        assert!(lifecycle.advance(Phase::Draining));
        assert!(!lifecycle.advance(Phase::Draining));
        assert!(lifecycle.advance(Phase::Cut));
        assert!(
            !lifecycle.advance(Phase::Closing),
            "a cut server does not go back"
        );
        assert_eq!(lifecycle.phase(), Phase::Cut);
    }
}
