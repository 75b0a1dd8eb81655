//! tracing subscriber setup: `pretty` (human) or `json` lines on stderr; `RUST_LOG`
//! overrides `log.level`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops).
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::builder().parse(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: piped and collected logs stay plain text.
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match config.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// For one-shot commands (`token`, `check --probe`): warnings and errors only, so stdout
/// stays clean for scripts.
pub fn init_quiet() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Lets one log line through per `interval` and counts the ones held back meanwhile, so a
/// condition that can repeat on every request is reported without flooding the log.
/// Uses tokio's clock (tests drive it with the paused clock).
#[derive(Debug)]
pub struct LogLimiter {
    interval: std::time::Duration,
    state: std::sync::Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    last: Option<tokio::time::Instant>,
    held_back: u64,
}

impl LogLimiter {
    pub fn new(interval: std::time::Duration) -> Self {
        Self {
            interval,
            state: std::sync::Mutex::default(),
        }
    }

    /// `Some(n)` when a line may be logged now, `n` being the lines held back since the
    /// last one; `None` when this one is to be held back.
    pub fn allow(&self) -> Option<u64> {
        let now = tokio::time::Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.last {
            Some(last) if now.duration_since(last) < self.interval => {
                state.held_back += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_interval_with_the_count_held_back() {
        let limiter = LogLimiter::new(Duration::from_secs(60));
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), None);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(limiter.allow(), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limiter.allow(), Some(2));
        assert_eq!(limiter.allow(), None);
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(limiter.allow(), Some(1));
    }
}
