//! The real `azgate serve` binary as a child process: its JSON log lines collected from
//! stderr, the listener addresses read from them, and signals sent to it. For what only a
//! process shows: signals, exit status, process limits, file watching.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `azgate serve`, killed when dropped.
pub struct Serve {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    /// Every line read so far (`lines` hands each out once; this keeps them all).
    pub seen: Vec<String>,
    /// `http://ADDR` of the proxy listener.
    pub proxy: String,
    /// `http://ADDR` of the admin listener, when the config has one.
    pub admin: Option<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Runs `azgate serve -c config` (the config must set `[log] format = "json"`) and
    /// waits for its listener lines.
    pub fn start(config: &Path) -> Self {
        Self::start_under(config, None)
    }

    /// The same, with `vars` added to the process environment.
    pub fn start_with_env(config: &Path, vars: &[(&str, String)]) -> Self {
        Self::spawn(config, None, vars)
    }

    /// The same, run by `sh -c "<shell>; exec azgate serve -c config"`, e.g. with
    /// `ulimit -n 256` to lower the process's open-files limit first.
    pub fn start_under(config: &Path, shell: Option<&str>) -> Self {
        Self::spawn(config, shell, &[])
    }

    fn spawn(config: &Path, shell: Option<&str>, vars: &[(&str, String)]) -> Self {
        let binary = env!("CARGO_BIN_EXE_azgate");
        let mut command = match shell {
            Some(prefix) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("{prefix}; exec \"$0\" serve -c \"$1\""))
                    .arg(binary)
                    .arg(config);
                c
            }
            None => {
                let mut c = Command::new(binary);
                c.args(["serve", "-c"]).arg(config);
                c
            }
        };
        command.envs(vars.iter().map(|(k, v)| (*k, v.as_str())));
        let mut child = command
            .env_remove("AZGATE_CONFIG")
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn azgate");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut serve = Serve {
            child,
            lines,
            seen: Vec::new(),
            proxy: String::new(),
            admin: None,
        };
        let wants_admin = std::fs::read_to_string(config)
            .map(|text| !text.contains("listen = \"\""))
            .unwrap_or(true);
        while serve.proxy.is_empty() || (wants_admin && serve.admin.is_none()) {
            let line = serve.next_line(Duration::from_secs(10));
            let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let addr = event["addr"].as_str().map(|a| format!("http://{a}"));
            let message = event["message"].as_str().unwrap_or_default();
            if message.starts_with("proxy listening") {
                serve.proxy = addr.expect("addr");
            } else if message.starts_with("admin listening") {
                serve.admin = addr;
            }
        }
        serve
    }

    fn next_line(&mut self, limit: Duration) -> String {
        let line = self.lines.recv_timeout(limit).unwrap_or_else(|_| {
            panic!(
                "no log line within {limit:?}; so far:\n{}",
                self.seen.join("\n")
            )
        });
        self.seen.push(line.clone());
        line
    }

    /// Waits (real time, at most `limit`) for a log line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str, limit: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next_line(left.max(Duration::from_millis(1)));
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Collects the lines logged so far.
    pub fn drain_lines(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// Sends `signal` (`TERM`, `HUP`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Waits (real time, at most `limit`) for the process to exit.
    pub fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
