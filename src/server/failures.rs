//! Failures of single connections before any request is served (failed TLS handshakes,
//! request heads the HTTP parser refuses; accept errors fit too): the "accept" step's
//! log. Any client can cause these as fast as it can open connections, so they are never
//! logged one line per connection (except at debug level): a `FailureLog` reports them at
//! most once per `REPORT_INTERVAL` per listener and kind, with counts by reason. The caller
//! counts each one in its metric; this only keeps the log readable.

use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The longest a failure waits to be reported, and the shortest time between two reports
/// of one `FailureLog`.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Rate-limited reports of one kind of failure on one listener.
pub struct FailureLog {
    /// What failed, plural ("failed TLS handshakes").
    what: &'static str,
    listener: &'static str,
    window: Mutex<Window>,
}

/// What happened since the last report.
#[derive(Default)]
struct Window {
    last_report: Option<Instant>,
    first: Option<Instant>,
    counts: BTreeMap<&'static str, u64>,
    latest: String,
}

impl FailureLog {
    pub fn new(what: &'static str, listener: &'static str) -> Self {
        Self {
            what,
            listener,
            window: Mutex::new(Window::default()),
        }
    }

    /// Notes one failure. Reported at once when the last report is `REPORT_INTERVAL` old
    /// (or there was none), else with the next report.
    pub fn record(&self, reason: &'static str, peer: SocketAddr, detail: &dyn Display) {
        tracing::debug!(
            listener = self.listener,
            %peer,
            reason,
            "{}: one from {peer}: {detail}",
            self.what
        );
        let now = Instant::now();
        let mut window = self.lock();
        *window.counts.entry(reason).or_default() += 1;
        window.first.get_or_insert(now);
        window.latest.clear();
        let _ = write!(window.latest, "from {peer}: {detail}");
        if window.due(now) {
            self.report(&mut window, now);
        }
    }

    /// Reports what accumulated, if the last report is old enough.
    pub fn report_if_due(&self) {
        let now = Instant::now();
        let mut window = self.lock();
        if window.due(now) {
            self.report(&mut window, now);
        }
    }

    /// Reports what accumulated now, due or not (at shutdown).
    pub fn flush(&self) {
        self.report(&mut self.lock(), Instant::now());
    }

    fn report(&self, window: &mut Window, now: Instant) {
        let Some(first) = window.first.take() else {
            return;
        };
        let counts = std::mem::take(&mut window.counts);
        let total: u64 = counts.values().sum();
        let mut reasons = String::new();
        for (reason, n) in &counts {
            if !reasons.is_empty() {
                reasons.push_str(", ");
            }
            let _ = write!(reasons, "{reason} {n}");
        }
        let over = humantime::format_duration(Duration::from_secs(
            now.saturating_duration_since(first).as_secs(),
        ));
        // nginx logs handshake failures caused by clients at `info` too: they say more
        // about the client than about the server.
        tracing::info!(
            listener = self.listener,
            failures = total,
            reasons,
            "{} on the {} listener: {total} in {over} ({reasons}); latest {}",
            self.what,
            self.listener,
            window.latest
        );
        window.last_report = Some(now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        // The window holds plain counters; a panic elsewhere cannot leave it half-made.
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Window {
    fn due(&self, now: Instant) -> bool {
        self.last_report
            .is_none_or(|at| now.saturating_duration_since(at) >= REPORT_INTERVAL)
    }
}

/// Reports each log's failures when due until `stopped` turns true, then whatever is
/// left. The server runs one of these for all its failure logs.
pub async fn report_until(logs: Vec<Arc<FailureLog>>, mut stopped: watch::Receiver<bool>) {
    if logs.is_empty() {
        return;
    }
    // A tenth of the interval: a report is at most that late.
    let mut ticks = tokio::time::interval(REPORT_INTERVAL / 10);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => logs.iter().for_each(|log| log.report_if_due()),
            () = super::lifecycle::stopped(&mut stopped) => break,
        }
    }
    logs.iter().for_each(|log| log.flush());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Log output of the current thread's subscriber, for unit tests.
    #[derive(Clone, Default)]
    pub(crate) struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        /// Captures events up to DEBUG until the guard drops.
        pub(crate) fn install(&self) -> tracing::subscriber::DefaultGuard {
            let writer = self.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_default(subscriber)
        }

        /// The lines of `level` written so far.
        pub(crate) fn lines(&self, level: &str) -> Vec<String> {
            String::from_utf8_lossy(&self.0.lock().unwrap())
                .lines()
                .filter(|l| l.contains(level))
                .map(str::to_owned)
                .collect()
        }

        fn reports(&self) -> Vec<String> {
            self.lines("INFO")
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_gives_one_line_per_interval_with_counts_by_reason() {
        let capture = Capture::default();
        let _guard = capture.install();
        let log = Arc::new(FailureLog::new("failed TLS handshakes", "proxy"));
        let (stop, stopped) = watch::channel(false);
        let reporter = tokio::spawn(report_until(vec![log.clone()], stopped));
        let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();

        // The first failure is reported at once; the flood after it waits for the interval.
        log.record("sni", peer, &"illegal SNI");
        assert_eq!(capture.reports().len(), 1);
        assert!(
            capture.reports()[0].contains("1 in 0s (sni 1)"),
            "{:?}",
            capture.reports()
        );
        for i in 0..5000 {
            let reason = if i % 100 == 0 { "eof" } else { "sni" };
            log.record(reason, peer, &"illegal SNI");
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        tokio::task::yield_now().await;
        assert_eq!(capture.reports().len(), 1, "{:?}", capture.reports());

        tokio::time::advance(Duration::from_secs(6)).await;
        tokio::task::yield_now().await;
        let reports = capture.reports();
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert!(
            reports[1].contains("failed TLS handshakes on the proxy listener: 5000 in")
                && reports[1].contains("(eof 50, sni 4950)")
                && reports[1].contains("latest from 192.0.2.7:40000: illegal SNI"),
            "{reports:?}"
        );

        // Quiet: nothing more to say.
        tokio::time::advance(Duration::from_secs(60)).await;
        tokio::task::yield_now().await;
        assert_eq!(capture.reports().len(), 2);

        // Failures left at shutdown are reported then, not lost.
        log.record("timeout", peer, &"no handshake in time");
        log.record("timeout", peer, &"no handshake in time");
        assert_eq!(capture.reports().len(), 3, "{:?}", capture.reports());
        log.record("timeout", peer, &"no handshake in time");
        stop.send_replace(true);
        reporter.await.unwrap();
        let reports = capture.reports();
        assert_eq!(reports.len(), 4, "{reports:?}");
        assert!(reports[3].contains("2 in 0s (timeout 2)"), "{reports:?}");
    }
}
