//! Headless Chromium for tests that look at a page the way a person would: the DOM after
//! the page's scripts ran, and a screenshot. Chromium runs as a child process with a hard
//! timeout, through tokio so the in-process servers it talks to keep serving meanwhile.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Chromium gets this long to load a page, run its virtual time and exit.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// What a test prints when it cannot run for want of a browser.
pub const SKIP_NO_CHROMIUM: &str =
    "skipped: chromium not found (install the Debian package `chromium`; .ci/run does)";

/// The Chromium binary: Debian's `/usr/bin/chromium`, else `chromium` on PATH.
pub fn chromium() -> Option<PathBuf> {
    let debian = Path::new("/usr/bin/chromium");
    if debian.is_file() {
        return Some(debian.to_path_buf());
    }
    // Looking the browser up on PATH is about the test machine, not azgate's config, so it
    // reads the real environment.
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|candidate| candidate.is_file())
}

pub struct Browser {
    binary: PathBuf,
    window: (u32, u32),
}

impl Browser {
    /// `None` when Chromium is not installed.
    pub fn find() -> Option<Self> {
        chromium().map(|binary| Self {
            binary,
            window: (1280, 1000),
        })
    }

    pub fn window(mut self, width: u32, height: u32) -> Self {
        self.window = (width, height);
        self
    }

    /// The serialized DOM of `url` after `virtual_ms` of the page's (virtual) time.
    pub async fn dump_dom(&self, url: &str, virtual_ms: u64) -> String {
        let out = self.run(&["--dump-dom".to_string()], url, virtual_ms).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Saves a PNG of `url` after `virtual_ms` of the page's (virtual) time.
    pub async fn screenshot(&self, url: &str, virtual_ms: u64, png: &Path) {
        self.run(
            &[format!("--screenshot={}", png.display())],
            url,
            virtual_ms,
        )
        .await;
        let size = std::fs::metadata(png).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 0,
            "chromium wrote no screenshot to {}",
            png.display()
        );
    }

    /// Runs Chromium once on `url` and returns its stdout; panics with its stderr when it
    /// fails or outlives `BROWSER_TIMEOUT`.
    async fn run(&self, action: &[String], url: &str, virtual_ms: u64) -> Vec<u8> {
        let profile = tempfile::tempdir().expect("chromium profile dir");
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={},{}", self.window.0, self.window.1))
            .arg(format!("--virtual-time-budget={virtual_ms}"))
            .args(action)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Chromium's helpers (renderer, zygote) share its process group, so a timeout
            // can take the whole tree down by that id.
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().expect("start chromium");
        let pid = child.id();
        match tokio::time::timeout(BROWSER_TIMEOUT, child.wait_with_output()).await {
            Ok(Ok(output)) => {
                assert!(
                    output.status.success(),
                    "chromium failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                );
                output.stdout
            }
            Ok(Err(err)) => panic!("chromium: {err}"),
            Err(_) => {
                // The dropped future already killed the browser process; this ends its helpers.
                if let Some(pid) = pid {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", "--", &format!("-{pid}")])
                        .status();
                }
                panic!("chromium did not finish within {BROWSER_TIMEOUT:?} on {url}");
            }
        }
    }
}
