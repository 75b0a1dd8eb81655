//! `default`: the first source that yields a token, in the order the Azure SDKs use —
//! environment (`AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH`), workload
//! identity, managed identity (a quick probe), Azure CLI. The winner is remembered; when
//! none works, the error says why each one failed.

use std::path::Path;
use std::sync::Mutex;

use super::azure_cli::AzureCli;
use super::entra::{ClientCertificate, ClientSecret, WorkloadIdentity};
use super::managed_identity::ManagedIdentity;
use super::token::{FetchError, FetchFuture, TokenSource};
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
    chosen: Mutex<Option<usize>>,
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
            chosen: Mutex::new(None),
        }
    }

    fn chosen(&self) -> Option<usize> {
        *self.chosen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TokenSource for DefaultChain {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            if let Some(i) = self.chosen() {
                let candidate = &self.candidates[i];
                return candidate
                    .chosen
                    .as_ref()
                    .unwrap_or(&candidate.probe)
                    .fetch()
                    .await;
            }
            let mut reasons = Vec::new();
            for (i, candidate) in self.candidates.iter().enumerate() {
                match candidate.probe.fetch().await {
                    Ok(token) => {
                        tracing::info!("default credential: using {}", candidate.name);
                        *self.chosen.lock().unwrap_or_else(|p| p.into_inner()) = Some(i);
                        return Ok(token);
                    }
                    Err(err) => reasons.push(format!("{}: {}", candidate.name, err.message)),
                }
            }
            Err(FetchError::new(format!(
                "no credential source worked ({})",
                reasons.join("; ")
            )))
        })
    }

    fn describe(&self) -> String {
        match self.chosen() {
            Some(i) => format!(
                "default, using {}: {}",
                self.candidates[i].name,
                self.candidates[i].probe.describe()
            ),
            None => "default (environment, workload identity, managed identity, Azure CLI; none chosen yet)"
                .to_string(),
        }
    }
}

/// `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` with `AZURE_CLIENT_SECRET` or
/// `AZURE_CLIENT_CERTIFICATE_PATH`.
fn environment(audience: &Audience, env: &Env) -> Box<dyn TokenSource> {
    let (Some(tenant), Some(client_id)) = (env.get("AZURE_TENANT_ID"), env.get("AZURE_CLIENT_ID"))
    else {
        return Unavailable::boxed("AZURE_TENANT_ID and AZURE_CLIENT_ID are not both set");
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
            Err(message) => {
                Unavailable::boxed(&format!("AZURE_CLIENT_CERTIFICATE_PATH: {message}"))
            }
        };
    }
    Unavailable::boxed("neither AZURE_CLIENT_SECRET nor AZURE_CLIENT_CERTIFICATE_PATH is set")
}

fn workload_identity(audience: &Audience, env: &Env) -> Box<dyn TokenSource> {
    if env.get("AZURE_FEDERATED_TOKEN_FILE").is_none() {
        return Unavailable::boxed("AZURE_FEDERATED_TOKEN_FILE is not set");
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

/// A source that is not configured in this environment, with the reason.
struct Unavailable(String);

impl Unavailable {
    fn boxed(reason: &str) -> Box<dyn TokenSource> {
        Box::new(Self(reason.to_string()))
    }
}

impl TokenSource for Unavailable {
    fn fetch(&self) -> FetchFuture<'_> {
        let reason = self.0.clone();
        Box::pin(async move { Err(FetchError::new(reason)) })
    }

    fn describe(&self) -> String {
        format!("unavailable: {}", self.0)
    }
}
