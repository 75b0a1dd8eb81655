//! The deployment files, tested without a Docker engine: `azgate health` (what the image's
//! HEALTHCHECK runs), every config under deploy/ and the one inside the Kubernetes
//! ConfigMap passing `azgate check`, and the image's ENTRYPOINT + CMD started the way the
//! Dockerfile would (its container paths mapped back to the files it copies) answering its
//! health check and draining to exit 0 on SIGTERM.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use support::{Azgate, MockUpstream, client, full};
use tokio::process::Command;

/// What the configs' required variables are set to in these tests: long enough for an
/// inbound key, and obviously not a real one.
const DUMMY: &str = "dummy-value-for-azgate-tests-0123456789";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary with an empty environment, except proxy variables pointing nowhere: nothing
/// here may depend on the caller's environment, and `health` must ignore proxies.
fn azgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_azgate"));
    cmd.env_clear()
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("http_proxy", "http://127.0.0.1:9")
        .env("ALL_PROXY", "http://127.0.0.1:9")
        .kill_on_drop(true);
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn run(cmd: &mut Command) -> Output {
    tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("the command finished within 20 s")
        .expect("the command ran")
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free port on every interface, as the image's config binds 0.0.0.0.
fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------
// azgate health
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_0_on_a_running_azgates_healthz() {
    let azgate_server = Azgate::start("").await;
    let url = format!("{}/healthz", azgate_server.admin_url.as_ref().unwrap());
    let out = run(azgate().args(["health", &url])).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert_eq!(
        stdout,
        format!("azgate health: {url} answered 200 OK\n"),
        "one line on stdout"
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    azgate_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_1_on_a_non_2xx_answer_and_shows_why() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let upstream = MockUpstream::start(move |request| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let status = if request.uri().path() == "/moved" {
                StatusCode::FOUND
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            Response::builder()
                .status(status)
                .header("location", "/healthz")
                .body(full(
                    "{\"status\":\"draining\",\n \"reason\":\"SIGTERM received\"}",
                ))
                .unwrap()
        }
    })
    .await;

    let url = format!("{}/readyz", upstream.url);
    let out = run(azgate().args(["health", &url])).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr,
        format!(
            "azgate health: {url} answered 503 Service Unavailable: \
             {{\"status\":\"draining\", \"reason\":\"SIGTERM received\"}}\n"
        ),
        "one line, the body's reason included"
    );

    // A redirect is not followed: a probe answers for the address it was given.
    let out = run(azgate().args(["health", &format!("{}/moved", upstream.url)])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("302 Found"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2, "one request per probe");
}

#[tokio::test]
async fn health_exits_1_quickly_on_a_closed_port() {
    let url = format!("http://127.0.0.1:{}/healthz", closed_port());
    let started = Instant::now();
    let out = run(azgate().args(["health", &url, "--timeout", "3s"])).await;
    let elapsed = started.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert!(
        stderr.starts_with(&format!("azgate health: cannot reach {url}: "))
            && stderr.contains("refused")
            && stderr.lines().count() == 1,
        "{stderr}"
    );
}

#[tokio::test]
async fn health_gives_up_after_its_timeout() {
    // Accepts the connection, never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/healthz", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let started = Instant::now();
    let out = run(azgate().args(["health", &url, "--timeout", "300ms"])).await;
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "took {elapsed:?}"
    );
    assert!(text(&out.stderr).contains(&url), "{}", text(&out.stderr));
    hold.abort();
}

#[tokio::test]
async fn health_refuses_what_is_not_an_http_url() {
    let out = run(azgate().args(["health", "ftp://127.0.0.1/healthz"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "azgate health: \"ftp://127.0.0.1/healthz\" is not an http(s) URL\n"
    );
    let out = run(azgate().args(["health", "http://127.0.0.1:1/", "--timeout", "0s"])).await;
    assert_eq!(out.status.code(), Some(2), "a usage error, from clap");
    assert!(text(&out.stderr).contains("must be greater than zero"));
}

// ---------------------------------------------------------------------------------------
// The configs under deploy/
// ---------------------------------------------------------------------------------------

/// Every `.toml` under deploy/, and the proxy.toml inside the Kubernetes ConfigMap
/// (written into `scratch`), in a stable order.
fn deploy_configs(scratch: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "toml") {
                out.push(path);
            }
        }
    }
    let mut configs = Vec::new();
    walk(&repo().join("deploy"), &mut configs);
    configs.sort();
    let configmap = std::fs::read_to_string(repo().join("deploy/kubernetes/configmap.yaml"))
        .expect("deploy/kubernetes/configmap.yaml");
    let embedded = scratch.join("configmap-proxy.toml");
    std::fs::write(&embedded, block_scalar(&configmap, "proxy.toml")).unwrap();
    configs.push(embedded);
    configs
}

/// The text of a YAML literal block (`key: |`), dedented: enough YAML for a ConfigMap's
/// data entry, without a YAML parser.
fn block_scalar(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines();
    let header = format!("{key}: |");
    lines
        .by_ref()
        .find(|line| line.trim() == header)
        .unwrap_or_else(|| panic!("no `{header}` block in the ConfigMap"));
    let body: Vec<&str> = lines
        .take_while(|line| line.trim().is_empty() || line.starts_with("    "))
        .collect();
    let indent = body
        .iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .expect("a non-empty block");
    let mut text: String = body
        .iter()
        .map(|line| format!("{}\n", line.get(indent..).unwrap_or("")))
        .collect();
    text.truncate(text.trim_end().len() + 1);
    text
}

/// Variables a config requires: `${NAME}` without a `:-fallback`.
fn required_variables(config: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = config;
    while let Some(at) = rest.find("${") {
        let inner = &rest[at + 2..];
        let end = inner.find('}').expect("a closed ${…}");
        let expr = &inner[..end];
        if !expr.contains(":-") {
            names.insert(expr.to_string());
        }
        rest = &inner[end..];
    }
    names
}

#[tokio::test]
async fn every_config_under_deploy_passes_check() {
    let scratch = tempfile::tempdir().unwrap();
    let configs = deploy_configs(scratch.path());
    let names: Vec<String> = configs
        .iter()
        .map(|p| p.strip_prefix(repo()).unwrap_or(p).display().to_string())
        .collect();
    for want in ["deploy/docker/proxy.toml", "deploy/demo/proxy.toml"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    for path in &configs {
        let config = std::fs::read_to_string(path).unwrap();
        let variables = required_variables(&config);
        let mut cmd = azgate();
        cmd.arg("check").arg("-c").arg(path);
        for name in &variables {
            cmd.env(name, DUMMY);
        }
        let out = run(&mut cmd).await;
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{} with {variables:?} set:\n{stdout}{}",
            path.display(),
            text(&out.stderr)
        );
        assert!(stdout.contains("(valid)"), "{stdout}");
        // Each listens beyond loopback, so each must show its inbound control.
        assert!(
            stdout.contains("proxy listener: http://0.0.0.0:")
                && stdout.contains("inbound: 1 key(s)"),
            "{}:\n{stdout}",
            path.display()
        );
        assert!(
            stdout.contains("admin listener: http://0.0.0.0:"),
            "{stdout}"
        );
    }
}

#[test]
fn the_configmap_block_is_read_whole() {
    let yaml = "data:\n  proxy.toml: |\n    [server]\n    listen = \"x\"\n\n    [admin]\n      nested = 1\nkind: X\n";
    assert_eq!(
        block_scalar(yaml, "proxy.toml"),
        "[server]\nlisten = \"x\"\n\n[admin]\n  nested = 1\n"
    );
    assert_eq!(
        required_variables("a = \"${A}\"\nb = \"${B:-x}\"\nc = \"x${C}y${A}\""),
        BTreeSet::from(["A".to_string(), "C".to_string()])
    );
}

// ---------------------------------------------------------------------------------------
// The image's command line
// ---------------------------------------------------------------------------------------

/// What the Dockerfile's final stage runs: ENTRYPOINT + CMD, the HEALTHCHECK command, and
/// where its COPY lines put repository files.
struct Image {
    command: Vec<String>,
    healthcheck: Vec<String>,
    /// Container path -> repository path, for `COPY <repo path> <container path>`.
    copies: HashMap<String, PathBuf>,
    /// Container paths filled from an earlier build stage (`COPY --from=…`).
    built: BTreeSet<String>,
    exposed: BTreeSet<u16>,
}

impl Image {
    fn from_dockerfile() -> Self {
        let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
        let joined = text.replace("\\\n", " ");
        let instructions: Vec<&str> = joined
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let last_from = instructions
            .iter()
            .rposition(|l| l.starts_with("FROM "))
            .expect("a FROM");
        let json = |rest: &str| -> Vec<String> {
            serde_json::from_str(rest.trim())
                .unwrap_or_else(|e| panic!("not an exec-form JSON array ({e}): {rest}"))
        };
        let mut image = Image {
            command: Vec::new(),
            healthcheck: Vec::new(),
            copies: HashMap::new(),
            built: BTreeSet::new(),
            exposed: BTreeSet::new(),
        };
        let (mut entrypoint, mut cmd) = (Vec::new(), Vec::new());
        for line in &instructions[last_from + 1..] {
            let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
            match word {
                "ENTRYPOINT" => entrypoint = json(rest),
                "CMD" => cmd = json(rest),
                "HEALTHCHECK" => {
                    let (_, command) = rest.split_once(" CMD ").expect("HEALTHCHECK … CMD [...]");
                    image.healthcheck = json(command);
                }
                "EXPOSE" => image
                    .exposed
                    .extend(rest.split_whitespace().map(|p| p.parse::<u16>().unwrap())),
                "COPY" => {
                    let parts: Vec<&str> = rest.split_whitespace().collect();
                    let dest = parts.last().unwrap().to_string();
                    if parts[0].starts_with("--from=") {
                        image.built.insert(dest);
                    } else {
                        image
                            .copies
                            .insert(dest, repo().join(parts[parts.len() - 2]));
                    }
                }
                _ => {}
            }
        }
        image.command = entrypoint.into_iter().chain(cmd).collect();
        image
    }

    /// A command line of the image, run on this machine: the built binary for the one the
    /// build stage produced, repository files for copied ones.
    fn local(&self, args: &[String]) -> Command {
        let program = &args[0];
        assert!(
            self.built.contains(program),
            "{program} is not the binary the build stage copies in"
        );
        let mut cmd = azgate();
        for arg in &args[1..] {
            match self.copies.get(arg) {
                Some(path) => cmd.arg(path),
                None => cmd.arg(arg),
            };
        }
        cmd
    }
}

/// Kills the child if the test fails half-way.
struct Child(tokio::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("still running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_entrypoint_serves_answers_its_healthcheck_and_drains_on_sigterm() {
    let image = Image::from_dockerfile();
    assert_eq!(
        image.command,
        [
            "/usr/local/bin/azgate",
            "serve",
            "-c",
            "/etc/azgate/proxy.toml"
        ]
    );
    assert_eq!(
        image.copies.get("/etc/azgate/proxy.toml"),
        Some(&repo().join("deploy/docker/proxy.toml"))
    );
    assert_eq!(image.exposed, BTreeSet::from([8080, 9090]));
    // The health check asks the admin port the image's config listens on by default.
    let healthz = image.healthcheck.last().unwrap().clone();
    assert_eq!(healthz, "http://127.0.0.1:9090/healthz");
    let config = std::fs::read_to_string(repo().join("deploy/docker/proxy.toml")).unwrap();
    assert!(config.contains("listen = \"0.0.0.0:${AZGATE_ADMIN_PORT:-9090}\""));
    assert!(config.contains("listen = \"0.0.0.0:${AZGATE_PORT:-8080}\""));

    // Other tests run beside this one: free ports instead of 8080 and 9090, through the
    // variables the image's config reads.
    let (port, admin_port) = (free_port(), free_port());
    let logs = tempfile::NamedTempFile::new().unwrap();
    // The image's `default` credential finds an App Service-style identity endpoint: a
    // mock, so readiness (which fetches the first token) never reaches for a real one.
    let identity = support::identity::MockIdentity::start().await;
    let mut serve = image.local(&image.command);
    serve
        .env("IDENTITY_ENDPOINT", format!("{}/msi/token", identity.url))
        .env("IDENTITY_HEADER", "deploy-test-header")
        .env("AZGATE_API_KEY", DUMMY)
        .env("AZGATE_PORT", port.to_string())
        .env("AZGATE_ADMIN_PORT", admin_port.to_string())
        .env("AZGATE_DRAIN_DELAY", "2s")
        .stdout(Stdio::null())
        .stderr(logs.reopen().unwrap());
    let mut child = Child(serve.spawn().expect("azgate serve"));
    let logs_text = || std::fs::read_to_string(logs.path()).unwrap_or_default();

    let mut healthcheck = image.healthcheck.clone();
    *healthcheck.last_mut().unwrap() = healthz.replace(":9090/", &format!(":{admin_port}/"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = run(&mut image.local(&healthcheck)).await;
        if out.status.success() {
            assert!(text(&out.stdout).contains("answered 200 OK"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the health check never passed: {}\nlogs:\n{}",
            text(&out.stderr),
            logs_text()
        );
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "azgate exited:\n{}",
            logs_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The inbound control that allows 0.0.0.0 holds: no key, no service. With the key a
    // request gets as far as routing (no route: nothing leaves this machine).
    let proxy = SocketAddr::from(([127, 0, 0, 1], port));
    let http = client();
    let refused = http
        .get(format!("http://{proxy}/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let routed = http
        .get(format!("http://{proxy}/nowhere"))
        .header("x-azgate-key", DUMMY)
        .send()
        .await
        .unwrap();
    assert_eq!(routed.status(), StatusCode::NOT_FOUND);
    assert_eq!(routed.headers()["x-azgate-error"], "route_not_found");
    // Ready once the first token is in: the first probe starts its fetch.
    let readyz = format!("http://127.0.0.1:{admin_port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get(&readyz).send().await.unwrap().status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "never ready:\n{}", logs_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(identity.call_count(), 1);

    // SIGTERM: /readyz turns 503 at once while the proxy still serves for drain_delay,
    // then azgate exits 0.
    let terminated = Instant::now();
    sigterm(&child.0);
    let mut drained = false;
    while terminated.elapsed() < Duration::from_millis(1500) {
        let out = run(azgate().args(["health", &readyz])).await;
        if out.status.code() == Some(1) && text(&out.stderr).contains("503") {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        drained,
        "/readyz never said 503 while draining:\n{}",
        logs_text()
    );
    let still = http
        .get(format!("http://{proxy}/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        still.status(),
        StatusCode::UNAUTHORIZED,
        "still serving during drain_delay"
    );
    let status = tokio::time::timeout(Duration::from_secs(15), child.0.wait())
        .await
        .unwrap_or_else(|_| panic!("azgate did not exit after SIGTERM:\n{}", logs_text()))
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", logs_text());
    assert!(
        terminated.elapsed() >= Duration::from_secs(2),
        "exited before drain_delay"
    );
}

#[tokio::test]
async fn image_config_refuses_to_start_without_an_api_key() {
    // The safe default: the image's 0.0.0.0 listener exists only with its key.
    let image = Image::from_dockerfile();
    let out = run(&mut image.local(&image.command)).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("server.inbound.api_keys[0]") && stderr.contains("AZGATE_API_KEY"),
        "{stderr}"
    );
    let out = run(image.local(&image.command).env("AZGATE_API_KEY", "short")).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("too short")
            && text(&out.stderr).contains("environment variable AZGATE_API_KEY"),
        "{}",
        text(&out.stderr)
    );
    // Set but empty (`-e AZGATE_API_KEY=` or an empty line in .env): named as well, and
    // the one problem, not a second one about the open listener.
    let out = run(image.local(&image.command).env("AZGATE_API_KEY", "")).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "server.inbound.api_keys[0]: is empty: environment variable AZGATE_API_KEY is set but empty"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("the config has 1 problem(s)"), "{stderr}");
}

#[test]
fn dockerignore_admits_what_the_dockerfile_copies() {
    // No image is built here, so a context that lacks a file would only show in a real
    // build: check the ignore file against the COPY lines instead.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(rules.first(), Some(&"*"), "everything is excluded first");
    let admitted: Vec<&str> = rules
        .iter()
        .filter_map(|r| r.strip_prefix('!'))
        .map(|r| r.trim_end_matches('/'))
        .collect();
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let mut copied = Vec::new();
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        if parts[0].starts_with("--from=") {
            continue;
        }
        copied.extend(
            parts[..parts.len() - 1]
                .iter()
                .map(|s| s.trim_end_matches('/')),
        );
    }
    assert!(
        copied.contains(&"src") && copied.contains(&"Cargo.lock"),
        "{copied:?}"
    );
    for source in copied {
        assert!(
            admitted
                .iter()
                .any(|a| source == *a || source.starts_with(&format!("{a}/"))),
            "{source} is copied but .dockerignore keeps it out of the context"
        );
        assert!(repo().join(source).exists(), "{source} does not exist");
    }
    assert!(
        !admitted
            .iter()
            .any(|a| a.starts_with("target") || *a == ".env")
    );
}
