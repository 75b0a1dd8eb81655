//! tracing subscriber setup: `pretty` (human) or `json` lines on stderr; `RUST_LOG`
//! overrides `log.level`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// rustls logs (through the `log` bridge the subscriber installs) one WARN line for many
/// a malformed handshake, such as an SNI it refuses: a line per connection that any client
/// can cause, 48,000 in 10 s from one load generator. Failed handshakes are counted in
/// `azgate_tls_handshake_failures_total` and summarised by azgate instead, so rustls says
/// only errors unless a filter names it (`RUST_LOG=info,rustls=warn`).
const RUSTLS_DEFAULT: &str = "rustls=error";

/// Level names a filter directive may use.
const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// Checks a filter (`log.level`, `RUST_LOG`): comma-separated directives, each a level
/// (`info`) or `target=level` (`azgate=debug`). A bare word that is not a level is a
/// target with no level, which `EnvFilter` accepts and which turns every other line off:
/// `"warning"` would silence azgate entirely, so it is refused here.
pub fn check_filter(text: &str) -> Result<(), String> {
    let is_level = |word: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(word.trim()));
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive
            .rsplit_once('=')
            .map_or(directive, |(_, level)| level);
        if !is_level(level) {
            return Err(format!(
                "\"{directive}\" is not a level; expected one of {} (or directives such as \"info,azgate=debug\")",
                LEVELS.join(", ")
            ));
        }
    }
    EnvFilter::builder()
        .parse(text)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The filter from `rust_log` (`RUST_LOG`), else from `level` (else `info`), with rustls
/// quietened unless the filter names it. A `RUST_LOG` that `check_filter` refuses is
/// ignored (and said so once logging is up, by `init`).
fn filter(level: &str, rust_log: Option<String>) -> EnvFilter {
    let from_env = rust_log.filter(|text| !text.trim().is_empty() && check_filter(text).is_ok());
    let text = from_env.as_deref().unwrap_or(level);
    let filter = EnvFilter::builder()
        .parse(text)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    if text.contains("rustls") {
        return filter;
    }
    match RUSTLS_DEFAULT.parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops).
pub fn init(config: &LogConfig) {
    let filter = filter(&config.level, std::env::var("RUST_LOG").ok());
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
    if let Ok(text) = std::env::var("RUST_LOG")
        && !text.trim().is_empty()
        && let Err(why) = check_filter(&text)
    {
        tracing::warn!(
            "RUST_LOG ignored: {why}; logging at log.level = \"{}\"",
            config.level
        );
    }
}

/// For one-shot commands (`token`, `check --probe`): warnings and errors only, so stdout
/// stays clean for scripts. The credential modules' warnings are left out: these commands
/// print each credential's failure themselves, and the log line would say it twice.
pub fn init_quiet() {
    let filter = filter(
        "warn,azgate::credentials=error",
        std::env::var("RUST_LOG").ok(),
    );
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
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use std::time::Duration;

    /// Whether a WARN event of rustls's, and an INFO event of azgate's, pass the filter.
    fn passes(level: &str, rust_log: Option<&str>) -> (bool, bool) {
        let subscriber =
            tracing_subscriber::registry().with(filter(level, rust_log.map(str::to_owned)));
        tracing::subscriber::with_default(subscriber, || {
            (
                tracing::event_enabled!(target: "rustls::msgs::handshake", Level::WARN),
                tracing::event_enabled!(target: "azgate::server", Level::INFO),
            )
        })
    }

    #[test]
    fn rustls_warnings_are_off_unless_a_filter_names_rustls() {
        assert_eq!(passes("info", None), (false, true));
        assert_eq!(passes("debug", Some("")), (false, true));
        assert_eq!(passes("info", Some("not a [filter")), (false, true));
        assert_eq!(passes("info", Some("info,rustls=warn")), (true, true));
        assert_eq!(passes("info,rustls=warn", None), (true, true));
        assert_eq!(passes("info", Some("warn")), (false, false));
        // A bare word that is no level would turn everything off: ignored.
        assert_eq!(passes("info", Some("bogus")), (false, true));
    }

    #[test]
    fn filters_are_levels_or_target_levels() {
        for good in [
            "info",
            "WARN",
            "off",
            "info,azgate=debug",
            "azgate::access=warn, info",
        ] {
            assert_eq!(check_filter(good), Ok(()), "{good}");
        }
        for bad in ["warning", "verbose", "bogus", "info,azgate=loud", "azgate"] {
            let err = check_filter(bad).unwrap_err();
            assert!(err.contains("is not a level"), "{bad}: {err}");
        }
    }

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
