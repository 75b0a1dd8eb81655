//! The command line: `azgate serve` (here), `azgate check` (`check.rs`), `azgate token`
//! (`token.rs`), and `azgate health` (`health.rs`, the probe a container image runs
//! without any shell tools).

mod check;
mod health;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigSource};
use crate::{logging, server};
pub use check::{ProbeReport, describe, probe_credentials};

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
    /// Fetch the credential NAME and print the bare token (or key) on stdout; with
    /// --video or --project, a read-only viewer token for that video or project.
    Token {
        /// The credential's name in the config.
        name: String,
        /// Config file [default: $AZGATE_CONFIG, then ./proxy.toml, then a built-in default]
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print a read-only viewer token for this video instead (a video_indexer credential).
        #[arg(long, value_name = "ID", value_parser = token::video_indexer_id, conflicts_with = "project")]
        video: Option<String>,
        /// Print a read-only viewer token for this project instead (a video_indexer credential).
        #[arg(long, value_name = "ID", value_parser = token::video_indexer_id)]
        project: Option<String>,
    },
    /// GET URL; exit 0 on a 2xx answer, 1 otherwise (a container health check that needs
    /// no shell tools). Proxy variables are ignored.
    Health {
        /// What to ask, e.g. http://127.0.0.1:9090/healthz
        url: String,
        /// Give up after this long, connection included.
        #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = health::health_timeout)]
        timeout: Duration,
    },
}

/// Parses the process arguments and runs the command.
pub fn main() -> ExitCode {
    crate::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, probe } => check::check(ConfigSource::resolve(config), probe),
        Command::Serve { config } => serve(ConfigSource::resolve(config)),
        Command::Token {
            name,
            config,
            video,
            project,
        } => {
            let viewer = token::viewer_ask(video, project);
            token::token(ConfigSource::resolve(config), &name, viewer)
        }
        Command::Health { url, timeout } => health::health(&url, timeout),
    }
}

fn load(source: &ConfigSource) -> Result<Config, ExitCode> {
    source.load().map_err(|err| {
        eprintln!("{err}");
        eprintln!("azgate: the config has {} problem(s)", err.problems.len());
        ExitCode::from(EXIT_CONFIG)
    })
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
        // Watching starts before the listeners announce themselves: a change made as soon
        // as the server is up is seen.
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
