//! `azgate check`: validates the config and prints what it describes (listeners,
//! credentials, the route table, what presets filled in); with `--probe` it also fetches
//! one token per credential and shows where it came from and when it expires, never the
//! token.

use std::process::ExitCode;

use super::{load, runtime};
use crate::config::{Config, ConfigSource, CredentialConfig, VendRouteConfig, VideoIndexerAuth};
use crate::credentials::CredentialSet;
use crate::env::Env;
use crate::logging;
use crate::trace::Settings as TraceSettings;

pub(super) fn check(source: ConfigSource, probe: bool) -> ExitCode {
    let config = match load(&source) {
        Ok(config) => config,
        Err(code) => return code,
    };
    print!("{}", describe(&config));
    for warning in &config.warnings {
        eprintln!("warning: {}: {warning}", config.file);
    }
    match TraceSettings::resolve(&config.telemetry, &Env::process()) {
        Ok(Some(settings)) => {
            println!("telemetry: {}", settings.describe());
            for warning in &settings.warnings {
                eprintln!("warning: telemetry: {warning}");
            }
        }
        Ok(None) => println!(
            "telemetry: no OTLP endpoint ([telemetry] otlp_endpoint, OTEL_EXPORTER_OTLP_ENDPOINT): no spans are exported"
        ),
        Err(why) => {
            eprintln!("telemetry: {why}");
            return ExitCode::from(super::EXIT_CONFIG);
        }
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
    if config.routes.is_empty() && config.vend_routes.is_empty() {
        out.push_str("  (none: every request gets 404 route_not_found)\n");
        return out;
    }
    let credential_cell = |name: &str, note: &str| {
        let kind = config.credentials.get(name).map_or("?", |c| c.kind());
        format!("{name} ({kind}{note})")
    };
    let forwarding = config.routes.iter().map(|r| {
        let mut upstream = r.upstream.to_string().trim_end_matches('/').to_string();
        if !r.strip_prefix {
            upstream.push_str(" (prefix kept)");
        }
        let credential = match &r.credential {
            Some(name) if r.scoped_tokens => credential_cell(name, ", scoped_tokens"),
            Some(name) => credential_cell(name, ""),
            None => "none".to_string(),
        };
        let methods = r.methods.as_ref().map_or("any".to_string(), |m| {
            m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",")
        });
        [r.prefix.clone(), upstream, credential, methods]
    });
    // A vending route answers itself: its "upstream" is the credential it vends for.
    let vending = config.vend_routes.iter().map(|r| {
        let methods = if r.cors_origins.is_empty() {
            "GET"
        } else {
            "GET,OPTIONS"
        };
        [
            r.prefix.clone(),
            format!("vend {}", r.credential),
            credential_cell(&r.credential, ""),
            methods.to_string(),
        ]
    });
    let rows: Vec<[String; 4]> = forwarding.chain(vending).collect();
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
    if !config.vend_routes.is_empty() {
        out.push_str("\nvending routes:\n");
        for route in &config.vend_routes {
            out.push_str(&describe_vending(config, route));
        }
    }
    out
}

/// What a vending route hands out and its options, e.g.
/// `/vi-tokens = vend vi: restricted viewer tokens (ARM account); GET account,
/// projects/{id}, videos/{id}; max_entries 10000; max_concurrent_fetches 8; embed_url
/// https://www.videoindexer.ai; CORS none`.
fn describe_vending(config: &Config, route: &VendRouteConfig) -> String {
    let tokens = match config.credentials.get(&route.credential) {
        Some(CredentialConfig::VideoIndexer(vi)) => match vi.auth {
            VideoIndexerAuth::Arm { .. } => "restricted viewer tokens (ARM account)",
            VideoIndexerAuth::Classic { .. } => "allowEdit=false tokens (classic account)",
        },
        _ => "viewer tokens",
    };
    let mut parts = vec![
        tokens.to_string(),
        "GET account, projects/{id}, videos/{id}".to_string(),
        format!("max_entries {}", route.max_entries),
        format!("max_concurrent_fetches {}", route.max_concurrent_fetches),
    ];
    parts.push(format!("embed_url {}", route.embed_url));
    if let Some(keys) = &route.api_keys {
        parts.push(format!("{} route key(s)", keys.len()));
    }
    parts.push(if route.cors_origins.is_empty() {
        "CORS none".to_string()
    } else {
        format!("CORS {}", route.cors_origins.join(", "))
    });
    format!(
        "  {} = vend {}: {}\n",
        route.prefix,
        route.credential,
        parts.join("; ")
    )
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
    if route.rewrite_body_links {
        parts.push(format!(
            "body links rewritten (JSON up to {} bytes)",
            route.rewrite_body_limit
        ));
    }
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
