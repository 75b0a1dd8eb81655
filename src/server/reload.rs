//! Hot reload: SIGHUP or a change of the config file loads the config again, validates it
//! fully, and puts it in service; a config that does not validate, or that would leave a
//! socket still bound without the inbound control it needs, is refused, logged and
//! counted, and the running one stays.
//!
//! The file is watched through its parent directory, because editors and Kubernetes
//! ConfigMaps replace files by rename (a ConfigMap swaps a `..data` symlink), which a
//! watch on the file itself would miss. Events are debounced and a reload happens only
//! when the file's contents changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::RunningServer;
use crate::config::ConfigSource;

/// Quiet time after the last file event before the file is read.
const DEBOUNCE: Duration = Duration::from_millis(300);

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
        let (tx, changes) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok() {
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

    /// Resolves when the file's contents changed and events have settled.
    pub async fn changed(&mut self) {
        loop {
            if self.changes.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
            // Let a burst of events (write, rename, chmod, symlink swap) settle.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, self.changes.recv()).await {}
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
