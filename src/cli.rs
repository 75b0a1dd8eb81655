//! The command line: `azgate serve`, `azgate check`, `azgate token`, and `azgate health`
//! (the probe a container image runs without any shell tools).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigSource};
use crate::credentials::CredentialSet;
use crate::env::Env;
use crate::{logging, server};

/// Exit status for an invalid config.
pub const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "azgate",
    version,
    about = "Authenticating reverse proxy for Azure REST APIs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve {
        /// Config file [default: $AZGATE_CONFIG, then ./proxy.toml, then a built-in default]
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate the config and print the route table.
    Check {
        /// Config file [default: $AZGATE_CONFIG, then ./proxy.toml, then a built-in default]
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Also fetch one token per credential and print its source and expiry (never the token).
        #[arg(long)]
        probe: bool,
    },
    /// Fetch the credential NAME and print the bare token (or key) on stdout.
    Token {
        /// The credential's name in the config.
        name: String,
        /// Config file [default: $AZGATE_CONFIG, then ./proxy.toml, then a built-in default]
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// GET URL; exit 0 on a 2xx answer, 1 otherwise (a container health check that needs
    /// no shell tools). Proxy variables are ignored.
    Health {
        /// What to ask, e.g. http://127.0.0.1:9090/healthz
        url: String,
        /// Give up after this long, connection included.
        #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = health_timeout)]
        timeout: Duration,
    },
}

/// Parses the process arguments and runs the command.
pub fn main() -> ExitCode {
    crate::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, probe } => check(ConfigSource::resolve(config), probe),
        Command::Serve { config } => serve(ConfigSource::resolve(config)),
        Command::Token { name, config } => token(ConfigSource::resolve(config), &name),
        Command::Health { url, timeout } => health(&url, timeout),
    }
}

fn load(source: &ConfigSource) -> Result<Config, ExitCode> {
    source.load().map_err(|err| {
        eprintln!("{err}");
        eprintln!("azgate: the config has {} problem(s)", err.problems.len());
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check(source: ConfigSource, probe: bool) -> ExitCode {
    let config = match load(&source) {
        Ok(config) => config,
        Err(code) => return code,
    };
    print!("{}", describe(&config));
    for warning in &config.warnings {
        eprintln!("warning: {}: {warning}", config.file);
    }
    if !probe {
        return ExitCode::SUCCESS;
    }
    logging::init_quiet();
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let report = runtime.block_on(probe_credentials(&config, &Env::process()));
    print!("{}", report.text);
    if report.all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What `check --probe` found.
pub struct ProbeReport {
    pub text: String,
    pub all_ok: bool,
}

/// Fetches one token per credential (concurrently) and describes each: source and time
/// to expiry, or why it failed. Never the token.
pub async fn probe_credentials(config: &Config, env: &Env) -> ProbeReport {
    let credentials = CredentialSet::build(&config.credentials, env);
    let probes = credentials.iter().map(|credential| async move {
        let result = credential.authorize().await;
        let source = credential.cache().map_or_else(
            || "fixed value from the config".to_string(),
            |c| c.describe(),
        );
        let outcome = match (&result, credential.cache()) {
            (Ok(_), Some(cache)) => {
                let left = cache.status().expires_in.unwrap_or_default();
                format!(
                    "ok, expires in {}",
                    humantime::format_duration(whole_seconds(left))
                )
            }
            (Ok(_), None) => "ok".to_string(),
            (Err(err), _) => format!("FAILED: {}", err.reason),
        };
        let tried = credential.cache().map(|c| c.tried()).unwrap_or_default();
        (
            [credential.name().to_string(), source, outcome],
            tried,
            result.is_ok(),
        )
    });
    let results = futures_util::future::join_all(probes).await;
    let all_ok = results.iter().all(|r| r.2);
    let mut text = String::from("\nprobe:\n");
    if results.is_empty() {
        text.push_str("  (no credentials)\n");
    } else {
        let rows: Vec<[String; 3]> = results.iter().map(|r| r.0.clone()).collect();
        text.push_str(&table(&["NAME", "SOURCE", "RESULT"], &rows));
    }
    let steps: Vec<[String; 4]> = results
        .iter()
        .flat_map(|([name, ..], tried, _)| tried.iter().map(move |step| step_row(name, step)))
        .collect();
    if !steps.is_empty() {
        text.push_str("\nsources tried (default chain):\n");
        text.push_str(&table(&["NAME", "SOURCE", "OUTCOME", "WHY"], &steps));
    }
    ProbeReport { text, all_ok }
}

/// One source a chained credential looked at. A failure's reason is already in the
/// RESULT column, so it is not printed twice.
fn step_row(name: &str, step: &crate::credentials::token::SourceStep) -> [String; 4] {
    use crate::credentials::token::StepOutcome;
    let why = match step.outcome {
        StepOutcome::Unavailable => step.reason.clone().unwrap_or_default(),
        StepOutcome::Failed => "set up here but failed (RESULT above); the chain stops".into(),
        StepOutcome::Used => String::new(),
    };
    [
        name.to_string(),
        step.source.to_string(),
        step.outcome.as_str().to_string(),
        why,
    ]
}

fn whole_seconds(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs(d.as_secs())
}

/// `azgate token NAME`: needs only NAME's variables (and its `arm` credential's); a
/// problem elsewhere in the file does not stop it.
fn token(source: ConfigSource, name: &str) -> ExitCode {
    let subset = match source.load_credential(name) {
        Ok(subset) => subset,
        Err(err) => {
            eprintln!("{err}");
            eprintln!(
                "azgate: credential \"{name}\" has {} problem(s)",
                err.problems.len()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    logging::init_quiet();
    let credentials = CredentialSet::build(&subset.credentials, &Env::process());
    let Some(credential) = credentials.get(name) else {
        eprintln!(
            "azgate: no credential named \"{name}\" in {}; known: {}",
            source.display_name(),
            if subset.known.is_empty() {
                "none".to_string()
            } else {
                subset.known.join(", ")
            }
        );
        return ExitCode::FAILURE;
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(credential.reveal()) {
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("azgate: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Bytes of an unhealthy answer's body read for the message: `/readyz` says there why it
/// is not ready, and a health check must not wait on a large body.
const HEALTH_BODY_READ: usize = 1024;

fn health_timeout(text: &str) -> Result<Duration, String> {
    match crate::config::parse_duration(text)? {
        d if d.is_zero() => Err("must be greater than zero".to_string()),
        d => Ok(d),
    }
}

/// `azgate health URL`: one line on stdout when healthy, on stderr otherwise.
fn health(url: &str, timeout: Duration) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let outcome = runtime.block_on(async {
        // reqwest's own timeout covers the exchange; this one also bounds DNS and body reads.
        tokio::time::timeout(timeout, probe_health(url, timeout))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer from {url} within {}",
                    humantime::format_duration(timeout)
                ))
            })
    });
    match outcome {
        Ok(line) => {
            println!("azgate health: {line}");
            ExitCode::SUCCESS
        }
        Err(line) => {
            eprintln!("azgate health: {line}");
            ExitCode::FAILURE
        }
    }
}

async fn probe_health(url: &str, timeout: Duration) -> Result<String, String> {
    let target = reqwest::Url::parse(url).map_err(|e| format!("\"{url}\" is not a URL: {e}"))?;
    if !matches!(target.scheme(), "http" | "https") {
        return Err(format!("\"{url}\" is not an http(s) URL"));
    }
    // No proxy variables: a probe goes straight to the address it names, also inside a
    // container whose environment sets HTTPS_PROXY for the upstream traffic.
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("azgate-health/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let mut response = client
        .get(target)
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {}", error_chain(&e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(format!("{url} answered {status}"));
    }
    let mut body = Vec::new();
    while body.len() < HEALTH_BODY_READ {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(HEALTH_BODY_READ);
    Err(format!(
        "{url} answered {status}: {}",
        crate::credentials::token::snippet(&String::from_utf8_lossy(&body))
    ))
}

/// An error and its causes on one line ("… : tcp connect error: Connection refused").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(err) => {
            eprintln!("azgate: cannot start the async runtime: {err}");
            None
        }
    }
}

fn serve(source: ConfigSource) -> ExitCode {
    let config = match load(&source) {
        Ok(config) => config,
        Err(code) => return code,
    };
    logging::init(&config.log);
    // Measured on one pinned core: a current-thread runtime was no faster than the
    // multi-thread one with its single worker (bench/README.md), so one code path it is.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("azgate: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        tracing::info!(config = %config.file, version = env!("CARGO_PKG_VERSION"), "starting azgate");
        if source == ConfigSource::Embedded {
            tracing::info!(
                "no config file (-c, $AZGATE_CONFIG or ./proxy.toml): using the built-in default, \
                 /arm -> https://management.azure.com with the `default` credential (after `az login`)"
            );
        }
        let mut signals = server::shutdown::Signals::install();
        let running = match server::start(config, crate::env::Env::process()).await {
            Ok(running) => running,
            // Unusable TLS files are a config problem (`check` reports them too), unless
            // they changed between validation and start; a taken port is not.
            Err(err) if err.is_config() => {
                tracing::error!("{err}");
                return ExitCode::from(EXIT_CONFIG);
            }
            Err(err) => {
                tracing::error!("{err}");
                return ExitCode::FAILURE;
            }
        };
        let mut watcher = match &source {
            ConfigSource::File(path) => match server::reload::ConfigWatcher::new(path) {
                Ok(watcher) => Some(watcher),
                Err(err) => {
                    tracing::warn!("{err}; the config reloads on SIGHUP only");
                    None
                }
            },
            ConfigSource::Embedded => None,
        };
        let signal = loop {
            let file_changed = async {
                match &mut watcher {
                    Some(watcher) => watcher.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                request = signals.next() => match request {
                    server::shutdown::Request::Shutdown(signal) => break signal,
                    server::shutdown::Request::Reload => {
                        tracing::info!("SIGHUP received: reloading the config and the TLS files");
                        if let Some(watcher) = &mut watcher {
                            watcher.mark_loaded();
                        }
                        let _ = server::reload::reload(&source, &running);
                        if let Err(err) = running.reload_tls() {
                            tracing::warn!("TLS reload failed; the previous certificate stays: {err}");
                        }
                    }
                },
                () = file_changed => {
                    tracing::info!("the config file changed: reloading");
                    let _ = server::reload::reload(&source, &running);
                }
            }
        };
        tracing::info!("{signal} received: shutting down (send it again to stop at once)");
        running.shutdown();
        let stop_now = running.shutdown_handle();
        let waiting = running.wait();
        tokio::pin!(waiting);
        let drained = loop {
            tokio::select! {
                drained = &mut waiting => break drained,
                request = signals.next() => match request {
                    server::shutdown::Request::Shutdown(again) => {
                        tracing::warn!("{again} received again: stopping now, cutting what is in flight");
                        stop_now.shutdown_now();
                    }
                    server::shutdown::Request::Reload => {
                        tracing::info!("SIGHUP ignored: shutting down");
                    }
                },
            }
        };
        // Cut requests are a failed shutdown for whoever watches the exit status.
        if drained.cut > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// What `check` prints: listeners, credentials and the route table.
pub fn describe(config: &Config) -> String {
    let mut out = String::new();
    out.push_str(&format!("config: {} (valid)\n", config.file));
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    out.push_str(&format!(
        "proxy listener: {scheme}://{}",
        config.server.listen
    ));
    match &config.server.tls {
        Some(tls) if tls.client_ca.is_some() => out.push_str(" (mTLS)\n"),
        _ => out.push('\n'),
    }
    let inbound = &config.server.inbound;
    if !inbound.api_keys.is_empty() || !inbound.allow.is_empty() {
        out.push_str(&format!(
            "inbound: {} key(s), {} allowed range(s), {} trusted proxy range(s)\n",
            inbound.api_keys.len(),
            inbound.allow.len(),
            inbound.trusted_proxies.len()
        ));
    }
    match config.admin.listen {
        Some(addr) => out.push_str(&format!("admin listener: http://{addr}\n")),
        None => out.push_str("admin listener: disabled\n"),
    }
    out.push_str("\ncredentials:\n");
    if config.credentials.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let rows: Vec<[String; 2]> = config
            .credentials
            .iter()
            .map(|(name, c)| [name.clone(), c.kind().to_string()])
            .collect();
        out.push_str(&table(&["NAME", "TYPE"], &rows));
    }

    out.push_str("\nroutes:\n");
    if config.routes.is_empty() {
        out.push_str("  (none: every request gets 404 route_not_found)\n");
        return out;
    }
    let rows: Vec<[String; 4]> = config
        .routes
        .iter()
        .map(|r| {
            let mut upstream = r.upstream.to_string().trim_end_matches('/').to_string();
            if !r.strip_prefix {
                upstream.push_str(" (prefix kept)");
            }
            let credential = match &r.credential {
                Some(name) => {
                    let kind = config.credentials.get(name).map_or("?", |c| c.kind());
                    format!("{name} ({kind})")
                }
                None => "none".to_string(),
            };
            let methods = r.methods.as_ref().map_or("any".to_string(), |m| {
                m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",")
            });
            [r.prefix.clone(), upstream, credential, methods]
        })
        .collect();
    out.push_str(&table(
        &["PREFIX", "UPSTREAM", "CREDENTIAL", "METHODS"],
        &rows,
    ));
    let expanded: Vec<String> = config
        .routes
        .iter()
        .filter_map(|route| {
            route
                .preset
                .map(|preset| expand_preset(config, route, preset))
        })
        .collect();
    if !expanded.is_empty() {
        out.push_str("\npresets:\n");
        for line in expanded {
            out.push_str(&line);
        }
    }
    out
}

/// What a preset filled in for a route (explicit keys included, as they win).
fn expand_preset(
    config: &Config,
    route: &crate::config::RouteConfig,
    preset: crate::config::presets::Preset,
) -> String {
    let mut parts = vec![format!(
        "upstream {}",
        route.upstream.to_string().trim_end_matches('/')
    )];
    if !route.set_headers.is_empty() {
        let headers: Vec<String> = route
            .set_headers
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
            .collect();
        parts.push(format!("headers {}", headers.join(", ")));
    }
    if !route.set_query.is_empty() {
        let query: Vec<String> = route
            .set_query
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        parts.push(format!(
            "query {} (when the client sends none)",
            query.join("&")
        ));
    }
    if let Some(name) = &route.credential
        && let Some(audience) = config.credentials.get(name).and_then(|c| c.audience())
    {
        let audience = match audience {
            crate::config::Audience::Scope(s) => format!("scope {s}"),
            crate::config::Audience::Resource(r) => format!("resource {r}"),
        };
        parts.push(format!("credential {name} with {audience}"));
    }
    parts.push(format!(
        "timeout {}",
        humantime::format_duration(route.timeout)
    ));
    parts.push(format!("max_body {} bytes", route.max_body));
    parts.push(format!(
        "retry {} attempts, max_delay {}",
        route.retry.max_attempts,
        humantime::format_duration(route.retry.max_delay)
    ));
    format!(
        "  {} = {}: {}\n",
        route.prefix,
        preset.name(),
        parts.join("; ")
    )
}

fn table<const N: usize>(headers: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = headers.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::from("  ");
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}
