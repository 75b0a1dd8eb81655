//! HTTPS on the proxy and admin listeners: the TLS half of the "accept" step.
//!
//! `TlsTerminator` serves the rustls config that `config::tls` builds from the PEM files
//! (the loader `azgate check` runs too). The config sits behind an `ArcSwap`: every new
//! handshake takes the current one, so a certificate rotation never touches connections
//! already open. The files are polled every few seconds and can be reloaded on demand;
//! files that cannot be used (half-written, garbage, a certificate expired or not valid
//! yet) leave the previous config in place.
//!
//! It also keeps an eye on what it serves: the chain's expiry is a metric and, from 14 days
//! before, a daily warning; failed handshakes are counted by reason and summarised in the
//! log (`FailureLog`), never logged one line per connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::failures::FailureLog;
use crate::config::TlsConfig;
use crate::config::tls::{EXPIRY_WARNING, Pem, TlsMaterial, TlsProblems, Validity, rfc3339};
use crate::telemetry::Telemetry;

/// How often the PEM files are checked for changes. Short enough that a rotated
/// certificate is served within a second, long enough that the reads cost nothing; and
/// polling, unlike directory events, cannot be held back by other files changing there.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How often an expiring certificate is warned about again.
const EXPIRY_REMINDER: Duration = Duration::from_secs(24 * 3600);

/// Terminates TLS for one listener with the current certificate.
pub struct TlsTerminator {
    /// `proxy` or `admin`: the metrics' `listener` label.
    listener: &'static str,
    files: TlsConfig,
    current: ArcSwap<ServerConfig>,
    state: Mutex<State>,
    telemetry: Arc<Telemetry>,
    handshake_failures: Arc<FailureLog>,
}

struct State {
    /// What the files held when last looked at, so the poll rebuilds (and warns) once per
    /// change rather than every few seconds.
    seen: Seen,
    /// The chain being served.
    validity: Validity,
    /// When the last expiry warning was logged.
    warned: Option<Instant>,
    /// A rotation refused only because the new certificate is not valid yet is tried
    /// again once it is, although the files will not change again.
    retry_at: Option<SystemTime>,
}

/// The state of the files at one look: a digest of their contents, or why they could not
/// be read.
#[derive(PartialEq, Eq)]
enum Seen {
    Contents(Vec<u8>),
    Unreadable(String),
}

impl TlsTerminator {
    /// Reads the files and builds the first config for `listener` (`proxy` or `admin`).
    pub fn load(
        files: &TlsConfig,
        listener: &'static str,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, TlsProblems> {
        let pem = Pem::read(files)?;
        let TlsMaterial { config, validity } = pem.build(files, SystemTime::now())?;
        let terminator = Self {
            listener,
            files: files.clone(),
            current: ArcSwap::from_pointee(config),
            state: Mutex::new(State {
                seen: Seen::Contents(pem.digest()),
                validity,
                warned: None,
                retry_at: None,
            }),
            telemetry,
            handshake_failures: Arc::new(FailureLog::new("failed TLS handshakes", listener)),
        };
        terminator.served("TLS certificate loaded", &mut terminator.lock_state());
        Ok(terminator)
    }

    /// An acceptor for one new connection, with the config current at this moment.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// The summary of this listener's failed handshakes, for the server's reporter.
    pub fn handshake_failures(&self) -> Arc<FailureLog> {
        self.handshake_failures.clone()
    }

    /// Re-reads the files and swaps the new config in, whether or not they changed. On
    /// error the previous config stays.
    pub fn reload(&self) -> Result<(), TlsProblems> {
        let pem = Pem::read(&self.files)?;
        self.lock_state().seen = Seen::Contents(pem.digest());
        self.install(&pem)
    }

    /// Checks the files every couple of seconds, and the served certificate's expiry,
    /// until the server stops.
    pub async fn watch_files(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate, and the files were just read by `load`.
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    self.reload_if_changed();
                    self.remind_expiry();
                }
                () = super::lifecycle::stopped(&mut stopped) => break,
            }
        }
    }

    /// Counts and summarises a handshake that failed with `err`.
    pub fn handshake_failed(&self, peer: SocketAddr, err: &std::io::Error) {
        let reason = failure_reason(err);
        self.telemetry
            .record_handshake_failure(self.listener, reason);
        self.handshake_failures.record(reason, peer, err);
    }

    /// Counts and summarises a handshake that did not finish within the header timeout.
    pub fn handshake_timed_out(&self, peer: SocketAddr) {
        self.telemetry
            .record_handshake_failure(self.listener, "timeout");
        self.handshake_failures
            .record("timeout", peer, &"not finished within the header timeout");
    }

    // The files are a few KiB on a local disk: reading them inline costs less than handing
    // the work to the blocking pool.
    fn reload_if_changed(&self) {
        let read = Pem::read(&self.files);
        let seen = match &read {
            Ok(pem) => Seen::Contents(pem.digest()),
            Err(err) => Seen::Unreadable(err.to_string()),
        };
        {
            let mut state = self.lock_state();
            let retry = state
                .retry_at
                .is_some_and(|at| SystemTime::now() >= at && state.seen == seen);
            if state.seen == seen && !retry {
                return;
            }
            state.seen = seen;
            state.retry_at = None;
        }
        let Err(problems) = read.and_then(|pem| self.install(&pem)) else {
            return;
        };
        if problems.has_validity_problem() {
            self.lock_state().retry_at = problems.valid_from();
            tracing::error!(
                listener = self.listener,
                "new TLS certificate refused; new connections keep the previous one: {problems}"
            );
        } else {
            tracing::warn!(
                listener = self.listener,
                "TLS files changed but cannot be used; new connections keep the previous \
                 certificate: {problems}"
            );
        }
    }

    fn install(&self, pem: &Pem) -> Result<(), TlsProblems> {
        let TlsMaterial { config, validity } = pem.build(&self.files, SystemTime::now())?;
        self.current.store(Arc::new(config));
        let mut state = self.lock_state();
        state.validity = validity;
        self.served("TLS certificate reloaded", &mut state);
        Ok(())
    }

    /// A certificate was put in service: names it, so an operator can tell a rotation
    /// took effect, sets the expiry metric and warns if it expires soon.
    fn served(&self, message: &str, state: &mut State) {
        let validity = &state.validity;
        self.telemetry
            .set_certificate_expiry(self.listener, validity.not_after);
        tracing::info!(
            listener = self.listener,
            cert = %self.files.cert.display(),
            subject = validity.subject,
            not_after = rfc3339(validity.not_after),
            mtls = self.files.client_ca.is_some(),
            "{message}"
        );
        self.warn_if_expiring(state);
    }

    /// Repeats the expiry warning once a day while it applies.
    fn remind_expiry(&self) {
        let mut state = self.lock_state();
        if state
            .warned
            .is_none_or(|at| at.elapsed() >= EXPIRY_REMINDER)
        {
            self.warn_if_expiring(&mut state);
        }
    }

    fn warn_if_expiring(&self, state: &mut State) {
        let validity = &state.validity;
        let cert = self.files.cert.display();
        let expires = rfc3339(validity.not_after);
        match validity.not_after.duration_since(SystemTime::now()) {
            Ok(left) if left > EXPIRY_WARNING => return,
            Ok(left) => tracing::warn!(
                listener = self.listener,
                subject = validity.subject,
                not_after = expires,
                "the TLS certificate of the {} listener expires in {} (at {expires}): \
                 replace \"{cert}\"",
                self.listener,
                humantime::format_duration(Duration::from_secs(left.as_secs() / 3600 * 3600)),
            ),
            Err(_) => tracing::error!(
                listener = self.listener,
                subject = validity.subject,
                not_after = expires,
                "the TLS certificate of the {} listener expired at {expires} and clients \
                 refuse it: replace \"{cert}\"",
                self.listener,
            ),
        }
        state.warned = Some(Instant::now());
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        // The guarded values are plain data; a panic elsewhere cannot leave them half-made.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `reason` label of a failed handshake: a small fixed set, so that no client can
/// grow the metric.
fn failure_reason(err: &std::io::Error) -> &'static str {
    use rustls::{Error, InvalidMessage, PeerMisbehaved};
    let rustls_error = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>());
    match rustls_error {
        Some(Error::NoCertificatesPresented) => "no_client_cert",
        Some(Error::InvalidCertificate(_) | Error::InvalidCertRevocationList(_)) => {
            "bad_client_cert"
        }
        Some(
            Error::PeerMisbehaved(PeerMisbehaved::ServerNameMustContainOneHostName)
            | Error::InvalidMessage(InvalidMessage::InvalidServerName),
        ) => "sni",
        // The client refused the handshake: often our certificate, which it does not trust.
        Some(Error::AlertReceived(_)) => "peer_alert",
        Some(_) => "protocol",
        None => match err.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe => "eof",
            _ => "other",
        },
    }
}

/// The verified client certificate's subject ("CN=…, O=…"), with mTLS.
pub fn client_subject(conn: &rustls::ServerConnection) -> Option<Arc<str>> {
    let leaf = conn.peer_certificates()?.first()?;
    match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, cert)) => Some(cert.subject().to_string().into()),
        Err(err) => {
            tracing::debug!("cannot read the client certificate's subject: {err}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tls::tests::{certificate, unix_now};
    use crate::server::failures::tests::Capture;

    const DAY: i64 = 86_400;

    #[tokio::test(start_paused = true)]
    async fn a_certificate_near_expiry_is_warned_about_at_load_then_daily() {
        crate::install_crypto_provider();
        let capture = Capture::default();
        let _guard = capture.install();
        let dir = tempfile::tempdir().unwrap();
        let files = TlsConfig {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            client_ca: None,
        };
        let write = |(cert, key): (String, String)| {
            std::fs::write(&files.cert, cert).unwrap();
            std::fs::write(&files.key, key).unwrap();
        };
        let now = unix_now();
        write(certificate(now - DAY, now + 3 * DAY));
        let telemetry = Telemetry::new();
        let tls = Arc::new(TlsTerminator::load(&files, "admin", telemetry.clone()).unwrap());
        let warnings = || capture.lines("WARN");
        assert_eq!(warnings().len(), 1, "{:?}", warnings());
        assert!(
            warnings()[0].contains("the TLS certificate of the admin listener expires in 2days"),
            "{:?}",
            warnings()
        );
        let gauge = format!(
            "azgate_tls_certificate_expiry_timestamp_seconds{{listener=\"admin\"}} {}.0",
            now + 3 * DAY
        );
        assert!(
            telemetry.encode().contains(&gauge),
            "{}",
            telemetry.encode()
        );

        let (stop, stopped) = watch::channel(false);
        let watching = tokio::spawn(tls.clone().watch_files(stopped));
        // Polled every 2 s, but said once a day.
        for _ in 0..60 {
            tokio::time::advance(POLL_INTERVAL).await;
        }
        assert_eq!(warnings().len(), 1, "{:?}", warnings());
        tokio::time::advance(EXPIRY_REMINDER).await;
        tokio::time::advance(POLL_INTERVAL).await;
        assert_eq!(warnings().len(), 2, "{:?}", warnings());

        // Renewed: served, and no more warnings.
        write(certificate(now - DAY, now + 90 * DAY));
        tls.reload().unwrap();
        tokio::time::advance(EXPIRY_REMINDER * 3).await;
        tokio::time::advance(POLL_INTERVAL).await;
        assert_eq!(warnings().len(), 2, "{:?}", warnings());
        let gauge = format!(
            "azgate_tls_certificate_expiry_timestamp_seconds{{listener=\"admin\"}} {}.0",
            now + 90 * DAY
        );
        assert!(
            telemetry.encode().contains(&gauge),
            "{}",
            telemetry.encode()
        );

        stop.send_replace(true);
        watching.await.unwrap();
    }
}
