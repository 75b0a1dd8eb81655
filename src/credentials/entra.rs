//! Entra ID token endpoint sources: `client_secret`, `client_certificate` and
//! `workload_identity`.
//!
//! All three POST a client-credentials form to `{authority}/{tenant}/oauth2/v2.0/token`
//! (v2, with `scope`) or `{authority}/{tenant}/oauth2/token` (v1, with `resource`) through
//! one [`TokenEndpoint`], and differ only in how the application proves who it is: a
//! secret, a JWT signed with the certificate's key, or the federated token Kubernetes
//! writes to a file.

mod assertion;
mod endpoint;

use std::path::PathBuf;

use super::token::{FetchError, FetchFuture, TokenSource};
use crate::config::{
    Audience, ClientCertificateConfig, ClientSecretConfig, WorkloadIdentityConfig,
};
use crate::env::Env;
use crate::secret::Secret;
use assertion::AssertionSigner;
use endpoint::{TokenEndpoint, authority};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// `type = "client_secret"`.
pub struct ClientSecret {
    client_id: String,
    tenant: String,
    secret: Secret,
    endpoint: TokenEndpoint,
}

impl ClientSecret {
    pub fn new(config: &ClientSecretConfig, env: &Env) -> Self {
        Self {
            client_id: config.app.client_id.clone(),
            tenant: config.app.tenant.clone(),
            secret: config.client_secret.clone(),
            endpoint: TokenEndpoint::for_app(&config.app, &config.audience, env),
        }
    }
}

impl TokenSource for ClientSecret {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let proof = [("client_secret", self.secret.expose())];
            self.endpoint.request(&self.client_id, &proof).await
        })
    }

    fn describe(&self) -> String {
        format!(
            "client_secret (tenant {}, app {}, {})",
            self.tenant,
            short_id(&self.client_id),
            self.endpoint.describe()
        )
    }
}

/// `type = "client_certificate"`: each request carries a freshly signed JWT assertion.
pub struct ClientCertificate {
    client_id: String,
    tenant: String,
    certificate_path: PathBuf,
    endpoint: TokenEndpoint,
    /// Built once; an unusable key or certificate is reported by every `fetch`, because
    /// building a credential cannot fail.
    signer: Result<AssertionSigner, String>,
}

impl ClientCertificate {
    pub fn new(config: &ClientCertificateConfig, env: &Env) -> Self {
        let signer = AssertionSigner::new(config).map_err(|reason| {
            format!(
                "the certificate file \"{}\" cannot sign assertions: {reason}",
                config.certificate_path.display()
            )
        });
        Self {
            client_id: config.app.client_id.clone(),
            tenant: config.app.tenant.clone(),
            certificate_path: config.certificate_path.clone(),
            endpoint: TokenEndpoint::for_app(&config.app, &config.audience, env),
            signer,
        }
    }
}

impl TokenSource for ClientCertificate {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let signer = self.signer.as_ref().map_err(FetchError::new)?;
            let assertion = signer.sign(&self.endpoint.url, &self.client_id)?;
            let proof = [
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", assertion.as_str()),
            ];
            self.endpoint.request(&self.client_id, &proof).await
        })
    }

    fn describe(&self) -> String {
        let key = match &self.signer {
            Ok(signer) => signer.key.algorithm(),
            Err(_) => "unusable key",
        };
        format!(
            "client_certificate (tenant {}, app {}, certificate {}, {key}, {})",
            self.tenant,
            short_id(&self.client_id),
            self.certificate_path.display(),
            self.endpoint.describe()
        )
    }
}

/// `type = "workload_identity"`: the federated token that Kubernetes projects into a file
/// is exchanged for an Entra token. Unset keys come from the variables the AKS webhook
/// injects.
pub struct WorkloadIdentity {
    /// `Err` names what is missing; the `default` chain shows it as the reason it skipped
    /// this source.
    setup: Result<Workload, String>,
}

struct Workload {
    client_id: String,
    tenant: String,
    token_file: PathBuf,
    endpoint: TokenEndpoint,
}

impl WorkloadIdentity {
    pub fn new(config: &WorkloadIdentityConfig, env: &Env) -> Self {
        let tenant = config.tenant.clone().or_else(|| env.get("AZURE_TENANT_ID"));
        let client_id = config
            .client_id
            .clone()
            .or_else(|| env.get("AZURE_CLIENT_ID"));
        let token_file = config
            .token_file
            .clone()
            .or_else(|| env.get("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from));
        let setup = match (tenant, client_id, token_file) {
            (Some(tenant), Some(client_id), Some(token_file)) => {
                let authority = authority(config.authority.as_deref(), env);
                let url = format!("{authority}/{tenant}/oauth2/v2.0/token");
                let audience = Audience::Scope(config.audience.scope());
                Ok(Workload {
                    endpoint: TokenEndpoint::new(url, &audience),
                    client_id,
                    tenant,
                    token_file,
                })
            }
            (tenant, client_id, token_file) => {
                let missing: Vec<&str> = [
                    (tenant.is_none(), "the tenant (`tenant` or AZURE_TENANT_ID)"),
                    (
                        client_id.is_none(),
                        "the client id (`client_id` or AZURE_CLIENT_ID)",
                    ),
                    (
                        token_file.is_none(),
                        "the federated token file (`token_file` or AZURE_FEDERATED_TOKEN_FILE)",
                    ),
                ]
                .into_iter()
                .filter_map(|(absent, what)| absent.then_some(what))
                .collect();
                Err(format!(
                    "workload identity is not configured: missing {}",
                    missing.join(", ")
                ))
            }
        };
        Self { setup }
    }
}

impl TokenSource for WorkloadIdentity {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let setup = self
                .setup
                .as_ref()
                .map_err(|missing| FetchError::new(missing).unavailable())?;
            // Kubernetes rewrites the file before the token in it expires: read it for
            // every exchange so an expired federated token is never sent.
            let contents = tokio::fs::read_to_string(&setup.token_file)
                .await
                .map_err(|e| {
                    FetchError::new(format!(
                        "cannot read the federated token file \"{}\": {e}",
                        setup.token_file.display()
                    ))
                })?;
            let assertion = contents.trim();
            if assertion.is_empty() {
                return Err(FetchError::new(format!(
                    "the federated token file \"{}\" is empty",
                    setup.token_file.display()
                )));
            }
            let proof = [
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", assertion),
            ];
            setup.endpoint.request(&setup.client_id, &proof).await
        })
    }

    fn describe(&self) -> String {
        match &self.setup {
            Ok(setup) => format!(
                "workload_identity (tenant {}, app {}, token file {}, {})",
                setup.tenant,
                short_id(&setup.client_id),
                setup.token_file.display(),
                setup.endpoint.describe()
            ),
            Err(missing) => format!("workload_identity ({missing})"),
        }
    }
}

/// Enough of a client id to recognise it in a status line.
fn short_id(id: &str) -> String {
    match id.char_indices().nth(8) {
        Some((at, _)) => format!("{}…", &id[..at]),
        None => id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_shortened() {
        assert_eq!(short_id("12345678-aaaa-bbbb"), "12345678…");
        assert_eq!(short_id("12345678"), "12345678");
        assert_eq!(short_id("ééééééééé"), "éééééééé…");
    }
}
