//! Process signals of `azgate serve`: SIGTERM and SIGINT (Ctrl-C) stop it, SIGHUP reloads.
//! The handlers are installed before the listeners open, so a signal that arrives right
//! after start is handled, not fatal.

#[cfg(unix)]
use tokio::signal::unix::{Signal, SignalKind, signal};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Drain and exit; names the signal.
    Shutdown(&'static str),
    /// Reload the config and the TLS files.
    Reload,
}

pub struct Signals {
    #[cfg(unix)]
    term: Option<Signal>,
    #[cfg(unix)]
    int: Option<Signal>,
    #[cfg(unix)]
    hup: Option<Signal>,
}

impl Signals {
    /// Installs the handlers now. Must be called inside the runtime.
    pub fn install() -> Self {
        #[cfg(unix)]
        {
            let install = |kind: SignalKind, name: &str| {
                signal(kind)
                    .map_err(|e| tracing::warn!("cannot handle {name}: {e}"))
                    .ok()
            };
            Self {
                term: install(SignalKind::terminate(), "SIGTERM"),
                int: install(SignalKind::interrupt(), "SIGINT"),
                hup: install(SignalKind::hangup(), "SIGHUP"),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// The next signal.
    pub async fn next(&mut self) -> Request {
        #[cfg(unix)]
        {
            async fn recv(signal: &mut Option<Signal>) {
                match signal {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = recv(&mut self.term) => Request::Shutdown("SIGTERM"),
                _ = recv(&mut self.int) => Request::Shutdown("SIGINT"),
                _ = recv(&mut self.hup) => Request::Reload,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Request::Shutdown("Ctrl-C")
        }
    }
}
