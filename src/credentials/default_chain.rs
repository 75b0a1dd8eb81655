//! `default`: the first source available here, in the order the Azure SDKs use —
//! environment (`AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH`), workload
//! identity, managed identity (a quick probe), Azure CLI.
//!
//! The chain moves past a source only when it is not set up here (variables unset, no
//! identity endpoint answering or identity not assigned, `az` missing or not logged in),
//! as `DefaultAzureCredential` does. A source that is set up and fails (a wrong
//! `AZURE_CLIENT_SECRET`: AADSTS7000215) stops the chain with its error, so requests never
//! go out quietly as another identity. The source that answered — with a token or with a
//! failure — is remembered: later fetches go to it alone, with the cache's backoff. The
//! sources looked at are kept for `check --probe` and `/status.json`.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use super::azure_cli::AzureCli;
use super::entra::{ClientCertificate, ClientSecret, WorkloadIdentity};
use super::managed_identity::ManagedIdentity;
use super::token::{FetchError, FetchFuture, SourceStep, StepOutcome, TokenSource};
use crate::config::{
    Audience, AzureCliConfig, ClientCertificateConfig, ClientSecretConfig, DefaultConfig, EntraApp,
    ManagedIdentityConfig, WorkloadIdentityConfig,
};
use crate::env::Env;
use crate::secret::Secret;

struct Candidate {
    name: &'static str,
    /// Used while the chain is still looking: for managed identity, a quick probe.
    probe: Box<dyn TokenSource>,
    /// Used once chosen, when it differs from the probe (managed identity with retries).
    chosen: Option<Box<dyn TokenSource>>,
}

pub struct DefaultChain {
    candidates: Vec<Candidate>,
    state: Mutex<ChainState>,
}

#[derive(Default)]
struct ChainState {
    /// The source the chain stopped at; later fetches use it alone.
    chosen: Option<usize>,
    /// What the last walk of the chain found, updated by later fetches of the chosen one.
    steps: Vec<SourceStep>,
}

impl DefaultChain {
    pub fn new(config: &DefaultConfig, env: &Env) -> Self {
        let audience = &config.audience;
        let candidates = vec![
            Candidate {
                name: "environment",
                probe: environment(audience, env),
                chosen: None,
            },
            Candidate {
                name: "workload identity",
                probe: workload_identity(audience, env),
                chosen: None,
            },
            Candidate {
                name: "managed identity",
                probe: Box::new(
                    ManagedIdentity::new(&managed_identity(audience, env), env).probing(),
                ),
                chosen: Some(Box::new(ManagedIdentity::new(
                    &managed_identity(audience, env),
                    env,
                ))),
            },
            Candidate {
                name: "Azure CLI",
                probe: Box::new(AzureCli::new(
                    &AzureCliConfig {
                        audience: audience.clone(),
                        tenant: None,
                        subscription: None,
                    },
                    env,
                )),
                chosen: None,
            },
        ];
        Self {
            candidates,
            state: Mutex::new(ChainState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ChainState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fetch from the source the chain already stopped at.
    async fn fetch_chosen(&self, i: usize) -> Result<super::token::Token, FetchError> {
        let candidate = &self.candidates[i];
        let source = candidate.chosen.as_ref().unwrap_or(&candidate.probe);
        let result = source.fetch().await;
        if let Some(step) = self.lock().steps.last_mut() {
            step.outcome = match &result {
                Ok(_) => StepOutcome::Used,
                Err(_) => StepOutcome::Failed,
            };
            step.reason = result.as_ref().err().map(|e| e.message.clone());
        }
        result.map_err(|err| stopped_at(candidate.name, err))
    }
}

/// The error of a source that is set up and failed: the chain stops there.
fn stopped_at(name: &str, err: FetchError) -> FetchError {
    FetchError {
        message: format!(
            "{name}: {} (the default chain stops at a source that is set up but fails)",
            err.message
        ),
        unavailable: false,
        ..err
    }
}

impl TokenSource for DefaultChain {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let chosen = self.lock().chosen;
            if let Some(i) = chosen {
                return self.fetch_chosen(i).await;
            }
            let mut steps = Vec::new();
            let mut outcome = None;
            for (i, candidate) in self.candidates.iter().enumerate() {
                let result = candidate.probe.fetch().await;
                let (step_outcome, reason) = match &result {
                    Ok(_) => (StepOutcome::Used, None),
                    Err(err) if err.unavailable => {
                        (StepOutcome::Unavailable, Some(err.message.clone()))
                    }
                    Err(err) => (StepOutcome::Failed, Some(err.message.clone())),
                };
                steps.push(SourceStep {
                    source: candidate.name,
                    outcome: step_outcome,
                    reason,
                });
                if step_outcome != StepOutcome::Unavailable {
                    outcome = Some((i, result));
                    break;
                }
            }
            let mut state = self.lock();
            let reasons: Vec<String> = steps
                .iter()
                .map(|s| format!("{}: {}", s.source, s.reason.as_deref().unwrap_or("")))
                .collect();
            state.steps = steps;
            match outcome {
                Some((i, result)) => {
                    state.chosen = Some(i);
                    let name = self.candidates[i].name;
                    match result {
                        Ok(token) => {
                            tracing::info!("default credential: using {name}");
                            Ok(token)
                        }
                        Err(err) => Err(stopped_at(name, err)),
                    }
                }
                // Nothing chosen: the next fetch walks the chain again (after `az login`).
                None => Err(FetchError::new(format!(
                    "no credential source is available ({})",
                    reasons.join("; ")
                ))),
            }
        })
    }

    fn describe(&self) -> String {
        match self.lock().chosen {
            Some(i) => format!(
                "default, using {}: {}",
                self.candidates[i].name,
                self.candidates[i].probe.describe()
            ),
            None => "default (environment, workload identity, managed identity, Azure CLI; none chosen yet)"
                .to_string(),
        }
    }

    fn tried(&self) -> Vec<SourceStep> {
        self.lock().steps.clone()
    }
}

/// `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` with `AZURE_CLIENT_SECRET` or
/// `AZURE_CLIENT_CERTIFICATE_PATH`.
fn environment(audience: &Audience, env: &Env) -> Box<dyn TokenSource> {
    let (Some(tenant), Some(client_id)) = (env.get("AZURE_TENANT_ID"), env.get("AZURE_CLIENT_ID"))
    else {
        return unavailable("AZURE_TENANT_ID and AZURE_CLIENT_ID are not both set");
    };
    let app = EntraApp {
        tenant,
        client_id,
        authority: None,
        token_url: None,
    };
    if let Some(secret) = env.get("AZURE_CLIENT_SECRET") {
        let config = ClientSecretConfig {
            app,
            client_secret: Secret::new(secret),
            audience: audience.clone(),
        };
        return Box::new(ClientSecret::new(&config, env));
    }
    if let Some(path) = env.get("AZURE_CLIENT_CERTIFICATE_PATH") {
        let path = Path::new(&path);
        return match crate::config::read_client_certificate(path) {
            Ok((chain, key_pem)) => {
                let send_chain = env
                    .get("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN")
                    .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
                let config = ClientCertificateConfig {
                    app,
                    audience: audience.clone(),
                    certificate_path: path.to_path_buf(),
                    chain,
                    key_pem,
                    send_chain,
                };
                Box::new(ClientCertificate::new(&config, env))
            }
            // Set up, but unusable: the chain stops here, as the SDKs' does.
            Err(message) => Box::new(NotUsable {
                reason: format!("AZURE_CLIENT_CERTIFICATE_PATH: {message}"),
                unavailable: false,
            }),
        };
    }
    unavailable("neither AZURE_CLIENT_SECRET nor AZURE_CLIENT_CERTIFICATE_PATH is set")
}

fn workload_identity(audience: &Audience, env: &Env) -> Box<dyn TokenSource> {
    if env.get("AZURE_FEDERATED_TOKEN_FILE").is_none() {
        return unavailable("AZURE_FEDERATED_TOKEN_FILE is not set");
    }
    let config = WorkloadIdentityConfig {
        audience: audience.clone(),
        tenant: None,
        client_id: None,
        token_file: None,
        authority: None,
    };
    Box::new(WorkloadIdentity::new(&config, env))
}

/// A user-assigned identity is chosen with `AZURE_CLIENT_ID`, and the IMDS host can be
/// moved with `AZURE_POD_IDENTITY_AUTHORITY_HOST`, as the Azure SDKs do.
fn managed_identity(audience: &Audience, env: &Env) -> ManagedIdentityConfig {
    ManagedIdentityConfig {
        audience: audience.clone(),
        client_id: env.get("AZURE_CLIENT_ID"),
        endpoint: env.get("AZURE_POD_IDENTITY_AUTHORITY_HOST").map(|host| {
            format!(
                "{}/metadata/identity/oauth2/token",
                host.trim_end_matches('/')
            )
        }),
    }
}

/// A source that cannot be used as the environment sets it up, with the reason.
struct NotUsable {
    reason: String,
    /// Not set up at all (the chain moves on), rather than set up wrongly (it stops).
    unavailable: bool,
}

/// A source not set up in this environment: the chain moves on.
fn unavailable(reason: &str) -> Box<dyn TokenSource> {
    Box::new(NotUsable {
        reason: reason.to_string(),
        unavailable: true,
    })
}

impl TokenSource for NotUsable {
    fn fetch(&self) -> FetchFuture<'_> {
        let mut err = FetchError::new(self.reason.clone());
        err.unavailable = self.unavailable;
        Box::pin(async move { Err(err) })
    }

    fn describe(&self) -> String {
        let what = if self.unavailable {
            "unavailable"
        } else {
            "misconfigured"
        };
        format!("{what}: {}", self.reason)
    }
}
