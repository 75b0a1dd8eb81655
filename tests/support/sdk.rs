//! Real Azure SDKs for tests: a Python venv under `target/sdk-venv` holding pinned packages
//! from PyPI, made by the first test that needs it and made again when the pins change (the
//! pins are written to `target/sdk-venv/.pins`, as .ci/run does for its venv), and the
//! driver scripts of `tests/sdk/` run in it with a deadline. Nothing but the package
//! registry is contacted, and only while installing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The packages and every dependency they pull in, pinned: Microsoft's Deployment
/// Environments client and the azure-core it is tested with.
pub const PINS: &[&str] = &[
    "azure-developer-devcenter==1.0.0",
    "azure-core==1.41.0",
    "isodate==0.7.2",
    "typing_extensions==4.16.0",
    "requests==2.34.2",
    "urllib3==2.8.0",
    "idna==3.21",
    "charset-normalizer==3.5.3",
    "certifi==2026.10.19.post1",
];

/// How long making the venv may take (a cold install takes a few seconds). pip itself
/// gives up on an unreachable index sooner: 15 s per connection, one retry.
const INSTALL_DEADLINE: Duration = Duration::from_secs(240);

/// The venv's Python, installing the pinned packages first when needed. Panics with what
/// went wrong (no python3, PyPI unreachable) so the test says why it could not run.
pub fn python() -> PathBuf {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(|| ensure_venv(&venv_dir()))
        .clone()
        .unwrap_or_else(|why| panic!("the Python SDK venv is not usable: {why}"))
}

/// `target/sdk-venv`, beside the `tmp` dir Cargo gives integration tests (so it follows
/// CARGO_TARGET_DIR).
fn venv_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .join("sdk-venv")
}

fn ensure_venv(venv: &Path) -> Result<PathBuf, String> {
    // Test binaries run as separate processes (nextest runs each test in its own): one
    // makes the venv while the others wait, instead of each deleting the other's.
    // The lock is a directory (made atomically); one left by a killed process is taken
    // over once it is older than an install may take.
    let lock = venv.with_extension("lock");
    let gave_up = Instant::now() + 2 * INSTALL_DEADLINE;
    loop {
        match std::fs::create_dir(&lock) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let age = std::fs::metadata(&lock)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|modified| modified.elapsed().ok());
                if age.is_some_and(|age| age > INSTALL_DEADLINE) {
                    let _ = std::fs::remove_dir(&lock);
                } else if Instant::now() >= gave_up {
                    return Err(format!("{lock:?} stayed locked by another test process"));
                } else {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            Err(e) => return Err(format!("locking {lock:?}: {e}")),
        }
    }
    let made = make_venv(venv);
    let _ = std::fs::remove_dir(&lock);
    made
}

fn make_venv(venv: &Path) -> Result<PathBuf, String> {
    let pins = PINS.join(" ");
    let python = venv.join("bin").join("python");
    let pins_file = venv.join(".pins");
    if std::fs::read_to_string(&pins_file).ok().as_deref() == Some(pins.as_str()) && python.exists()
    {
        return Ok(python);
    }
    eprintln!("installing {pins} into {}", venv.display());
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(venv);
    run_bounded(
        "python3 -m venv",
        Command::new("python3").arg("-m").arg("venv").arg(venv),
        Duration::from_secs(60),
    )?;
    run_bounded(
        "pip install (is PyPI reachable?)",
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--no-input"])
            .args(["--disable-pip-version-check", "--only-binary=:all:"])
            .args(["--timeout", "15", "--retries", "1"])
            .args(PINS),
        INSTALL_DEADLINE.saturating_sub(started.elapsed()),
    )?;
    // Written last: a venv without it is half made and is made again.
    std::fs::write(&pins_file, &pins).map_err(|e| format!("writing {pins_file:?}: {e}"))?;
    eprintln!("installed in {:.1} s", started.elapsed().as_secs_f64());
    Ok(python)
}

/// Runs `command` to its end within `limit`; its output goes to temp files (no pipe to
/// fill up) and is quoted when it fails.
fn run_bounded(what: &str, command: &mut Command, limit: Duration) -> Result<(), String> {
    let out = tempfile::tempfile().map_err(|e| e.to_string())?;
    let err = tempfile::tempfile().map_err(|e| e.to_string())?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(err.try_clone().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    if status.is_some_and(|s| s.success()) {
        return Ok(());
    }
    let said = [out, err].map(read_all).join("");
    let tail: String = said
        .lines()
        .rev()
        .take(15)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    Err(match status {
        Some(status) => format!("{what} failed ({status}):\n{tail}"),
        None => format!("{what} did not finish within {limit:?}:\n{tail}"),
    })
}

fn read_all(mut file: std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut text);
    text
}

/// What a driver script did: its exit code (`None` when a signal ended it), its stdout
/// parsed as one JSON object, and its stderr.
pub struct ScriptRun {
    pub code: Option<i32>,
    pub output: serde_json::Value,
    pub stderr: String,
}

/// Runs `tests/sdk/<script>` with `args` in the venv, killed at `deadline`. Proxy
/// variables are removed: the SDK must reach azgate on loopback and nothing else.
pub async fn run_script(script: &str, args: &[&str], deadline: Duration) -> ScriptRun {
    let python = tokio::task::spawn_blocking(python)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let mut command = tokio::process::Command::new(python);
    command.arg(&path).args(args).kill_on_drop(true);
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    ] {
        command.env_remove(name);
    }
    command
        .env("NO_PROXY", "*")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let run = tokio::time::timeout(deadline, command.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {deadline:?}"))
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    let output = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}); exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
            run.status.code()
        )
    });
    ScriptRun {
        code: run.status.code(),
        output,
        stderr,
    }
}
