//! Hot reload: SIGHUP or a change of the config file loads the config again, validates it
//! fully, and puts it in service; a config that does not validate, or that would leave a
//! socket still bound without the inbound control it needs, is refused, logged and
//! counted, and the running one stays.
//!
//! The file is watched through its parent directory, because editors and Kubernetes
//! ConfigMaps replace files by rename (a ConfigMap swaps a `..data` symlink), which a
//! watch on the file itself would miss. Only events that name the config file (or a
//! ConfigMap's `..data` entries) count: a log file written next to the config every few
//! milliseconds must not hold a reload back. A burst of events on the config is debounced,
//! with a ceiling after which the file is read anyway; a reload happens only when the
//! file's contents changed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::RunningServer;
use crate::config::ConfigSource;

/// Quiet time after the last event on the config before the file is read.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// Longest wait after the first event of a burst: the file is read by then even if
/// events on it keep coming.
const CEILING: Duration = Duration::from_secs(2);

/// Loads `source` again and applies it. Errors (the config's problems) are returned for
/// logging; the running config stays.
pub fn reload(source: &ConfigSource, running: &RunningServer) -> Result<(), String> {
    let refused = |problems: usize, err: &dyn std::fmt::Display| {
        tracing::error!(
            config = %source.display_name(),
            problems,
            "config reload refused; the running config stays:\n{err}"
        );
        err.to_string()
    };
    match source.load() {
        Ok(config) => {
            config.log_warnings();
            match running.apply(config) {
                Ok(warnings) => {
                    for warning in &warnings {
                        tracing::warn!("config reloaded, but {warning}");
                    }
                    tracing::info!(config = %source.display_name(), "config reloaded");
                    Ok(())
                }
                // Valid on its own, but not on the sockets that are open (`apply` counted it).
                Err(err) => Err(refused(err.problems.len(), &err)),
            }
        }
        Err(err) => {
            running.telemetry.record_reload(false);
            Err(refused(err.problems.len(), &err))
        }
    }
}

/// Watches a config file; yields once per settled change of its contents.
pub struct ConfigWatcher {
    _watcher: notify::RecommendedWatcher,
    changes: mpsc::UnboundedReceiver<()>,
    path: PathBuf,
    last: Option<Vec<u8>>,
}

impl ConfigWatcher {
    pub fn new(path: &Path) -> Result<Self, String> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().map(OsString::from).unwrap_or_default();
        let (tx, changes) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && concerns(&event, &name)
                {
                    let _ = tx.send(());
                }
            })
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        Ok(Self {
            _watcher: watcher,
            changes,
            path: path.to_path_buf(),
            last: std::fs::read(path).ok(),
        })
    }

    /// Resolves when the file's contents changed and events on it have settled.
    pub async fn changed(&mut self) {
        loop {
            if self.changes.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
            let mut burst = Burst::new(Instant::now());
            while let Ok(event) =
                tokio::time::timeout_at(burst.read_at(), self.changes.recv()).await
            {
                if event.is_none() {
                    break;
                }
                burst.event(Instant::now());
            }
            let now = std::fs::read(&self.path).ok();
            if now.is_some() && now != self.last {
                self.last = now;
                return;
            }
        }
    }

    /// Records contents loaded another way (SIGHUP), so the same change is not reloaded twice.
    pub fn mark_loaded(&mut self) {
        self.last = std::fs::read(&self.path).ok();
    }
}

/// Whether a directory event may have changed the config file: it names the file, or a
/// ConfigMap's `..data` swap (the file is a symlink through it), or names nothing (the
/// watcher lost track and asks for a rescan).
fn concerns(event: &notify::Event, name: &OsString) -> bool {
    event.paths.is_empty()
        || event.paths.iter().any(|path| {
            path.file_name()
                .is_some_and(|file| file == name || file.to_string_lossy().starts_with("..data"))
        })
}

/// A burst of events on the config: read the file once they pause for `DEBOUNCE`, or
/// `CEILING` after the first, whichever comes first.
struct Burst {
    first: Instant,
    last: Instant,
}

impl Burst {
    fn new(at: Instant) -> Self {
        Self {
            first: at,
            last: at,
        }
    }

    fn event(&mut self, at: Instant) {
        self.last = at;
    }

    fn read_at(&self) -> Instant {
        (self.last + DEBOUNCE).min(self.first + CEILING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, EventKind, ModifyKind, RenameMode};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut event = notify::Event::new(kind);
        for path in paths {
            event = event.add_path(PathBuf::from(path));
        }
        event
    }

    #[test]
    fn only_events_on_the_config_count() {
        let name = OsString::from("proxy.toml");
        let write = EventKind::Modify(ModifyKind::Any);
        assert!(concerns(&event(write, &["/etc/azgate/proxy.toml"]), &name));
        assert!(!concerns(&event(write, &["/etc/azgate/azgate.log"]), &name));
        assert!(!concerns(
            &event(write, &["/etc/azgate/proxy.toml.bak"]),
            &name
        ));
        // `mv new.toml proxy.toml`: the rename names both.
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(concerns(
            &event(rename, &["/d/new.toml", "/d/proxy.toml"]),
            &name
        ));
        // A ConfigMap update: `..data_tmp` renamed over `..data`.
        assert!(concerns(
            &event(rename, &["/d/..data_tmp", "/d/..data"]),
            &name
        ));
        assert!(concerns(
            &event(EventKind::Create(CreateKind::Any), &[]),
            &name
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_read_after_a_pause_or_at_the_ceiling() {
        let start = Instant::now();
        let mut burst = Burst::new(start);
        assert_eq!(burst.read_at(), start + DEBOUNCE);
        burst.event(start + Duration::from_millis(200));
        assert_eq!(burst.read_at(), start + Duration::from_millis(500));
        // Events every 100 ms for ever: read at the ceiling all the same.
        let mut at = start;
        while at < start + Duration::from_secs(10) {
            at += Duration::from_millis(100);
            if at >= burst.read_at() {
                break;
            }
            burst.event(at);
        }
        assert_eq!(burst.read_at(), start + CEILING);
    }
}
