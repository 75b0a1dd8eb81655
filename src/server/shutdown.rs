//! Process signals that end `azgate serve`. The handlers are installed before the
//! listeners open, so a SIGTERM that arrives right after start still drains gracefully
//! instead of killing the process.

#[cfg(unix)]
use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGTERM and SIGINT (Ctrl-C) handlers.
pub struct Signals {
    #[cfg(unix)]
    term: Option<Signal>,
    #[cfg(unix)]
    int: Option<Signal>,
}

impl Signals {
    /// Installs the handlers now. Must be called inside the runtime.
    pub fn install() -> Self {
        #[cfg(unix)]
        {
            let term = signal(SignalKind::terminate())
                .map_err(|e| tracing::warn!("cannot handle SIGTERM: {e}"))
                .ok();
            let int = signal(SignalKind::interrupt())
                .map_err(|e| tracing::warn!("cannot handle SIGINT: {e}"))
                .ok();
            Self { term, int }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// Resolves when a shutdown signal arrives, naming it.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            let term = async {
                match &mut self.term {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match &mut self.int {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term => "SIGTERM",
                _ = int => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
