//! Entra ID token endpoint credentials (`client_secret`, `client_certificate`,
//! `workload_identity`) against the mock token endpoint: the exact form each one posts,
//! v1 and v2 responses, Entra errors, throttling, broken and silent endpoints, the signed
//! certificate assertion, and the federated token file.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azgate::credentials::{Credential, CredentialSet};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{Response, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use support::entra::{self, MockEntra};
use support::{Azgate, MockUpstream, client, full, json, seen};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
/// Characters that need form encoding, to show the secret reaches Entra intact.
const SECRET: &str = "s3cr3t~Q8+/=&value";
const SCOPE: &str = "https://management.azure.com/.default";
const RESOURCE: &str = "https://rest.media.azure.net";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Builds every credential of `text` with only `vars` as the environment.
fn credentials(text: &str, base_dir: &Path, vars: &[(&str, &str)]) -> CredentialSet {
    support::init();
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config =
        azgate::config::parse(text, "test.toml", base_dir, &|name| vars.get(name).cloned())
            .unwrap_or_else(|e| panic!("{e}"));
    CredentialSet::build(&config.credentials, &azgate::env::Env::from_map(vars))
}

fn only(set: &CredentialSet, name: &str) -> Arc<Credential> {
    set.get(name).expect("credential").clone()
}

/// A `client_secret` credential named `arm`; `extra` adds keys such as `authority`.
fn client_secret(audience: &str, extra: &str) -> String {
    format!(
        r#"
        [credentials.arm]
        type = "client_secret"
        tenant = "contoso"
        client_id = "{CLIENT_ID}"
        client_secret = "${{ARM_SECRET}}"
        {audience}
        {extra}
        "#
    )
}

fn form(fields: &[(&str, &str)]) -> HashMap<String, String> {
    fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn raw(status: u16, content_type: &str, body: &'static str) -> Response<support::Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(full(body))
        .unwrap()
}

#[tokio::test]
async fn client_secret_v2_posts_the_scope_form() {
    let mock = MockEntra::start().await;
    let text = client_secret(
        &format!(r#"scope = "{SCOPE}""#),
        &format!(r#"authority = "{}/""#, mock.url),
    );
    let set = credentials(&text, Path::new("."), &[("ARM_SECRET", SECRET)]);
    let arm = only(&set, "arm");

    assert_eq!(arm.reveal().await.unwrap(), "token-1");
    let calls = mock.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "POST");
    assert_eq!(calls[0].path, "/contoso/oauth2/v2.0/token");
    assert_eq!(
        calls[0].headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        calls[0].form,
        form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", SCOPE),
        ])
    );
    let status = arm.cache().unwrap().status();
    let expires_in = status.expires_in.unwrap().as_secs();
    assert!((3590..=3599).contains(&expires_in), "{expires_in}");

    // Cached: a second use makes no new call.
    assert_eq!(arm.reveal().await.unwrap(), "token-1");
    assert_eq!(mock.call_count(), 1);

    let described = arm.cache().unwrap().describe();
    assert!(described.contains("client_secret"), "{described}");
    assert!(described.contains("tenant contoso"), "{described}");
    assert!(
        described.contains(&format!(
            "v2 endpoint {}/contoso/oauth2/v2.0/token",
            mock.url
        )),
        "{described}"
    );
    assert!(!described.contains(SECRET), "{described}");
}

#[tokio::test]
async fn client_secret_v1_posts_the_resource_form_and_reads_string_expiry() {
    let mock = MockEntra::start().await;
    mock.respond_with(|_, _| entra::v1_token("v1-token", 1800, RESOURCE));
    let text = client_secret(
        &format!(r#"resource = "{RESOURCE}""#),
        &format!(r#"authority = "{}""#, mock.url),
    );
    let set = credentials(&text, Path::new("."), &[("ARM_SECRET", SECRET)]);
    let arm = only(&set, "arm");

    assert_eq!(arm.reveal().await.unwrap(), "v1-token");
    let calls = mock.calls();
    assert_eq!(calls[0].path, "/contoso/oauth2/token");
    assert_eq!(
        calls[0].form,
        form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("resource", RESOURCE),
        ])
    );
    let expires_in = arm.cache().unwrap().status().expires_in.unwrap().as_secs();
    assert!((1790..=1800).contains(&expires_in), "{expires_in}");
    let described = arm.cache().unwrap().describe();
    assert!(described.contains("v1 endpoint"), "{described}");
}

#[tokio::test]
async fn token_url_replaces_the_endpoint_and_keeps_the_v2_body() {
    let mock = MockEntra::start().await;
    let text = client_secret(
        &format!(r#"scope = "{SCOPE}""#),
        &format!(
            r#"token_url = "{}/adfs/oauth2/token"
            authority = "http://127.0.0.1:9""#,
            mock.url
        ),
    );
    let set = credentials(&text, Path::new("."), &[("ARM_SECRET", SECRET)]);
    assert_eq!(only(&set, "arm").reveal().await.unwrap(), "token-1");
    let calls = mock.calls();
    assert_eq!(calls[0].path, "/adfs/oauth2/token");
    assert_eq!(calls[0].form["scope"], SCOPE);
    assert!(!calls[0].form.contains_key("resource"));
}

#[tokio::test]
async fn authority_comes_from_azure_authority_host() {
    let mock = MockEntra::start().await;
    let text = client_secret(&format!(r#"scope = "{SCOPE}""#), "");
    let authority_host = format!("{}/", mock.url);
    let set = credentials(
        &text,
        Path::new("."),
        &[
            ("ARM_SECRET", SECRET),
            ("AZURE_AUTHORITY_HOST", &authority_host),
        ],
    );
    assert_eq!(only(&set, "arm").reveal().await.unwrap(), "token-1");
    assert_eq!(mock.calls()[0].path, "/contoso/oauth2/v2.0/token");
}

#[tokio::test]
async fn the_proxy_injects_the_client_secret_token() {
    let mock = MockEntra::start().await;
    let upstream = MockUpstream::echo().await;
    let text = support::config_text(&format!(
        "{}\n[[routes]]\nprefix = \"/arm\"\nupstream = \"{}\"\ncredential = \"arm\"\n",
        client_secret(
            &format!(r#"scope = "{SCOPE}""#),
            &format!(r#"authority = "{}""#, mock.url)
        ),
        upstream.url
    ));
    let gw = Azgate::start_with(
        &text,
        Path::new("."),
        &HashMap::from([("ARM_SECRET", SECRET)]),
    )
    .await;
    let response = client()
        .get(format!(
            "{}/arm/subscriptions?api-version=2022-12-01",
            gw.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echo = json(response).await;
    assert_eq!(seen(&echo, "authorization"), vec!["Bearer token-1"]);
    assert_eq!(echo["path"], "/subscriptions");
    assert_eq!(mock.call_count(), 1);
}

#[tokio::test]
async fn an_aadsts_error_becomes_credential_unavailable_without_the_secret() {
    let mock = MockEntra::start().await;
    mock.respond_with(|_, _| {
        entra::aadsts_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.",
        )
    });
    let upstream = MockUpstream::echo().await;
    let text = support::config_text(&format!(
        "{}\n[[routes]]\nprefix = \"/arm\"\nupstream = \"{}\"\ncredential = \"arm\"\n",
        client_secret(
            &format!(r#"scope = "{SCOPE}""#),
            &format!(r#"authority = "{}""#, mock.url)
        ),
        upstream.url
    ));
    let gw = Azgate::start_with(
        &text,
        Path::new("."),
        &HashMap::from([("ARM_SECRET", SECRET)]),
    )
    .await;
    let response = client()
        .get(format!("{}/arm/subscriptions", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        response.headers()["x-azgate-error"],
        "credential_unavailable"
    );
    let headers = format!("{:?}", response.headers());
    let body = response.text().await.unwrap();
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "credential_unavailable");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"arm\""), "{message}");
    assert!(
        message.contains("invalid_client: AADSTS7000215: Invalid client secret provided."),
        "{message}"
    );
    assert!(message.contains("HTTP 401"), "{message}");
    assert!(!message.contains("Trace ID"), "{message}");
    assert!(
        !body.contains(SECRET) && !headers.contains(SECRET),
        "{body}"
    );
    // The secret was sent, so its absence from the answer is not an accident.
    assert_eq!(mock.calls()[0].form["client_secret"], SECRET);
}

#[tokio::test(start_paused = true)]
async fn throttling_waits_for_retry_after() {
    let mock = MockEntra::start().await;
    mock.respond_with(|_, n| match n {
        1 => entra::throttled(120),
        n => entra::v2_token(&format!("token-{n}"), 3599),
    });
    let text = client_secret(
        &format!(r#"scope = "{SCOPE}""#),
        &format!(r#"authority = "{}""#, mock.url),
    );
    let set = credentials(&text, Path::new("."), &[("ARM_SECRET", SECRET)]);
    let arm = only(&set, "arm");

    let error = arm.reveal().await.unwrap_err().to_string();
    assert!(error.contains("AADSTS50196"), "{error}");
    assert!(error.contains("HTTP 429"), "{error}");
    assert!(error.contains("retry after 120s"), "{error}");
    assert_eq!(mock.call_count(), 1);

    // Well past the cache's own first backoff (1 s), still inside Retry-After.
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(arm.reveal().await.is_err());
    assert_eq!(mock.call_count(), 1);

    tokio::time::advance(Duration::from_secs(91)).await;
    assert_eq!(arm.reveal().await.unwrap(), "token-2");
    assert_eq!(mock.call_count(), 2);
}

#[tokio::test]
async fn broken_answers_give_clear_messages() {
    let mock = MockEntra::start().await;
    let text = client_secret(
        &format!(r#"scope = "{SCOPE}""#),
        &format!(r#"authority = "{}""#, mock.url),
    );
    type Responder = fn() -> Response<support::Body>;
    let cases: [(Responder, &[&str]); 6] = [
        (
            || {
                raw(
                    500,
                    "text/html",
                    "<html><body><h1>Internal Server Error</h1></body></html>",
                )
            },
            &["HTTP 500 Internal Server Error: <html><body><h1>Internal Server Error"],
        ),
        (
            || {
                raw(
                    200,
                    "application/json",
                    r#"{"access_token":"eyJ0eXAiOi.cut"#,
                )
            },
            &["not JSON", "body not shown"],
        ),
        (
            || {
                raw(
                    200,
                    "application/json",
                    r#"{"token_type":"Bearer","expires_in":3599}"#,
                )
            },
            &["without an access_token (fields: expires_in, token_type)"],
        ),
        (
            || {
                raw(
                    200,
                    "application/json",
                    r#"{"access_token":["x"],"expires_in":3599}"#,
                )
            },
            &["access_token that is empty or not a string"],
        ),
        (
            || {
                raw(
                    200,
                    "application/json",
                    r#"{"access_token":"t","token_type":"Bearer"}"#,
                )
            },
            &["neither expires_in nor expires_on"],
        ),
        (|| raw(200, "text/plain", ""), &["not JSON: (empty body)"]),
    ];
    for (responder, wants) in cases {
        mock.respond_with(move |_, _| responder());
        let set = credentials(&text, Path::new("."), &[("ARM_SECRET", SECRET)]);
        let error = only(&set, "arm").reveal().await.unwrap_err().to_string();
        assert!(
            error.starts_with("credential \"arm\" is unavailable: "),
            "{error}"
        );
        assert!(error.contains(&mock.url), "{error}");
        for want in wants {
            assert!(error.contains(want), "{want}: {error}");
        }
        assert!(
            !error.contains("eyJ0eXAiOi") && !error.contains(SECRET),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_refused_connection_names_the_endpoint() {
    let (_refusing, port) = support::refused_port();
    let text = client_secret(
        &format!(r#"scope = "{SCOPE}""#),
        &format!(r#"authority = "http://127.0.0.1:{port}""#),
    );
    let set = credentials(&text, Path::new("."), &[("ARM_SECRET", SECRET)]);
    let error = only(&set, "arm").reveal().await.unwrap_err().to_string();
    assert!(
        error.contains(&format!(
            "cannot reach the token endpoint http://127.0.0.1:{port}/contoso/oauth2/v2.0/token"
        )),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_token_endpoint_gives_a_bounded_error() {
    // Connections complete in the kernel's backlog but nobody ever answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let text = client_secret(
        &format!(r#"scope = "{SCOPE}""#),
        &format!(r#"authority = "http://{}""#, silent.local_addr().unwrap()),
    );
    let set = credentials(&text, Path::new("."), &[("ARM_SECRET", SECRET)]);
    let started = tokio::time::Instant::now();
    let error = only(&set, "arm").reveal().await.unwrap_err().to_string();
    assert!(error.contains("did not answer within 30s"), "{error}");
    assert!(
        started.elapsed() <= Duration::from_secs(31),
        "{:?}",
        started.elapsed()
    );
}

/// A client certificate issued by a per-run CA, written with its chain and key.
struct ClientCert {
    dir: tempfile::TempDir,
    key: rcgen::KeyPair,
    leaf_der: Vec<u8>,
    ca_der: Vec<u8>,
}

fn client_cert(alg: &'static rcgen::SignatureAlgorithm) -> ClientCert {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "azgate test issuing CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "azgate-test-app");
    let leaf = params.signed_by(&key, &issuer).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem = format!("{}{}{}", leaf.pem(), ca.pem(), key.serialize_pem());
    std::fs::write(dir.path().join("app.pem"), pem).unwrap();
    ClientCert {
        dir,
        key,
        leaf_der: leaf.der().to_vec(),
        ca_der: ca.der().to_vec(),
    }
}

fn certificate_config(mock: &MockEntra, send_chain: bool) -> String {
    format!(
        r#"
        [credentials.app]
        type = "client_certificate"
        tenant = "contoso"
        client_id = "{CLIENT_ID}"
        certificate = "app.pem"
        scope = "{SCOPE}"
        send_chain = {send_chain}
        authority = "{}"
        "#,
        mock.url
    )
}

/// Verifies the assertion's signature with the certificate's public key and checks every
/// header field and claim; returns the `jti`.
fn check_assertion(
    assertion: &str,
    cert: &ClientCert,
    alg: Algorithm,
    aud: &str,
    chain: bool,
) -> String {
    // The certificate carries exactly this public key.
    let spki = rcgen::PublicKeyData::subject_public_key_info(&cert.key);
    assert!(cert.leaf_der.windows(spki.len()).any(|w| w == spki));

    let header = jsonwebtoken::decode_header(assertion).unwrap();
    assert_eq!(header.alg, alg);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let thumbprint = {
        use sha2::Digest;
        sha2::Sha256::digest(&cert.leaf_der).to_vec()
    };
    assert_eq!(
        header.x5t_s256.as_deref(),
        Some(URL_SAFE_NO_PAD.encode(thumbprint).as_str())
    );
    let want_chain = chain.then(|| {
        vec![
            STANDARD.encode(&cert.leaf_der),
            STANDARD.encode(&cert.ca_der),
        ]
    });
    assert_eq!(header.x5c, want_chain);

    let key = match alg {
        Algorithm::PS256 => DecodingKey::from_rsa_der(cert.key.public_key_raw()),
        _ => DecodingKey::from_ec_der(cert.key.public_key_raw()),
    };
    let mut validation = Validation::new(alg);
    validation.set_audience(&[aud]);
    validation.set_issuer(&[CLIENT_ID]);
    validation.sub = Some(CLIENT_ID.to_string());
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &validation)
        .unwrap_or_else(|e| panic!("assertion does not verify: {e}"))
        .claims;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (nbf, iat, exp) = (
        claims["nbf"].as_u64().unwrap(),
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(nbf, iat);
    assert!(now.abs_diff(iat) <= 5, "iat {iat}, now {now}");
    assert!(exp > nbf && exp - nbf <= 600, "nbf {nbf}, exp {exp}");
    let jti = claims["jti"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(jti).unwrap().get_version_num(), 4);
    jti.to_string()
}

/// Two fetches (the second forced as after an upstream 401) and their assertions.
async fn two_assertions(mock: &MockEntra, cert: &ClientCert, send_chain: bool) -> Vec<String> {
    let set = credentials(&certificate_config(mock, send_chain), cert.dir.path(), &[]);
    let app = only(&set, "app");
    let first = app.authorize().await.unwrap();
    assert_eq!(
        app.refuse(&first, http::StatusCode::UNAUTHORIZED),
        azgate::credentials::Refusal::Replay
    );
    app.authorize().await.unwrap();
    assert_eq!(app.reveal().await.unwrap(), "token-2");

    let calls = mock.calls();
    assert_eq!(calls.len(), 2);
    calls
        .into_iter()
        .map(|mut call| {
            assert_eq!(call.path, "/contoso/oauth2/v2.0/token");
            let assertion = call.form.remove("client_assertion").expect("assertion");
            assert_eq!(
                call.form,
                form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", CLIENT_ID),
                    ("client_assertion_type", JWT_BEARER),
                    ("scope", SCOPE),
                ])
            );
            assertion
        })
        .collect()
}

#[tokio::test]
async fn certificate_assertion_rsa_with_chain() {
    let mock = MockEntra::start().await;
    let cert = client_cert(&rcgen::PKCS_RSA_SHA256);
    let aud = format!("{}/contoso/oauth2/v2.0/token", mock.url);
    let assertions = two_assertions(&mock, &cert, true).await;
    let jtis: Vec<String> = assertions
        .iter()
        .map(|a| check_assertion(a, &cert, Algorithm::PS256, &aud, true))
        .collect();
    assert_ne!(jtis[0], jtis[1]);
}

#[tokio::test]
async fn certificate_assertion_ec_without_chain() {
    let mock = MockEntra::start().await;
    let cert = client_cert(&rcgen::PKCS_ECDSA_P256_SHA256);
    let aud = format!("{}/contoso/oauth2/v2.0/token", mock.url);
    let assertions = two_assertions(&mock, &cert, false).await;
    let jtis: Vec<String> = assertions
        .iter()
        .map(|a| check_assertion(a, &cert, Algorithm::ES256, &aud, false))
        .collect();
    assert_ne!(jtis[0], jtis[1]);
}

#[tokio::test]
async fn an_unusable_certificate_key_is_reported_without_calling_entra() {
    let mock = MockEntra::start().await;
    let cert = client_cert(&rcgen::PKCS_ECDSA_P384_SHA384);
    let set = credentials(&certificate_config(&mock, false), cert.dir.path(), &[]);
    let app = only(&set, "app");
    let error = app.reveal().await.unwrap_err().to_string();
    assert!(error.contains("app.pem"), "{error}");
    assert!(error.contains("cannot sign assertions"), "{error}");
    assert!(error.contains("EC P-256"), "{error}");
    assert!(app.cache().unwrap().describe().contains("unusable key"));
    assert_eq!(mock.call_count(), 0);
}

fn workload_env<'a>(mock: &'a MockEntra, token_file: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AZURE_TENANT_ID", "contoso"),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_FEDERATED_TOKEN_FILE", token_file),
        ("AZURE_AUTHORITY_HOST", mock.url.as_str()),
    ]
}

const WORKLOAD: &str = r#"
[credentials.wi]
type = "workload_identity"
scope = "https://management.azure.com/.default"
"#;

#[tokio::test]
async fn workload_identity_exchanges_the_file_and_rereads_it() {
    let mock = MockEntra::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "federated-1\n").unwrap();
    let token_file_text = token_file.display().to_string();
    let set = credentials(WORKLOAD, dir.path(), &workload_env(&mock, &token_file_text));
    let wi = only(&set, "wi");

    let first = wi.authorize().await.unwrap();
    let calls = mock.calls();
    assert_eq!(calls[0].path, "/contoso/oauth2/v2.0/token");
    assert_eq!(
        calls[0].form,
        form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", "federated-1"),
            ("scope", SCOPE),
        ])
    );

    // Kubernetes rotates the projected token; the next exchange must send the new one.
    std::fs::write(&token_file, "federated-2").unwrap();
    assert_eq!(
        wi.refuse(&first, http::StatusCode::UNAUTHORIZED),
        azgate::credentials::Refusal::Replay
    );
    assert_eq!(wi.reveal().await.unwrap(), "token-2");
    assert_eq!(mock.calls()[1].form["client_assertion"], "federated-2");

    let described = wi.cache().unwrap().describe();
    assert!(described.contains(&token_file_text), "{described}");
    assert!(!described.contains("federated-2"), "{described}");
}

#[tokio::test]
async fn workload_identity_config_keys_win_over_the_environment() {
    let mock = MockEntra::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token.jwt"), "from-config-file").unwrap();
    let text = format!(
        r#"
        [credentials.wi]
        type = "workload_identity"
        scope = "{SCOPE}"
        tenant = "fabrikam"
        client_id = "config-client"
        token_file = "token.jwt"
        authority = "{}"
        "#,
        mock.url
    );
    let env = [
        ("AZURE_TENANT_ID", "contoso"),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/token"),
        ("AZURE_AUTHORITY_HOST", "http://127.0.0.1:9"),
    ];
    let set = credentials(&text, dir.path(), &env);
    assert_eq!(only(&set, "wi").reveal().await.unwrap(), "token-1");
    let call = &mock.calls()[0];
    assert_eq!(call.path, "/fabrikam/oauth2/v2.0/token");
    assert_eq!(call.form["client_id"], "config-client");
    assert_eq!(call.form["client_assertion"], "from-config-file");
    assert_eq!(call.form["scope"], SCOPE);
}

#[tokio::test]
async fn workload_identity_names_what_is_missing() {
    let mock = MockEntra::start().await;
    let dir = tempfile::tempdir().unwrap();

    let set = credentials(WORKLOAD, dir.path(), &[]);
    let error = only(&set, "wi").reveal().await.unwrap_err().to_string();
    assert!(
        error.contains("workload identity is not configured"),
        "{error}"
    );
    for var in [
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
    ] {
        assert!(error.contains(var), "{var}: {error}");
    }

    let set = credentials(
        WORKLOAD,
        dir.path(),
        &[
            ("AZURE_TENANT_ID", "contoso"),
            ("AZURE_CLIENT_ID", CLIENT_ID),
        ],
    );
    let wi = only(&set, "wi");
    let error = wi.reveal().await.unwrap_err().to_string();
    assert!(error.contains("AZURE_FEDERATED_TOKEN_FILE"), "{error}");
    assert!(
        !error.contains("AZURE_TENANT_ID") && !error.contains("AZURE_CLIENT_ID"),
        "{error}"
    );
    assert!(wi.cache().unwrap().describe().contains("not configured"));

    let missing: PathBuf = dir.path().join("no-such-token");
    let missing_text = missing.display().to_string();
    let set = credentials(WORKLOAD, dir.path(), &workload_env(&mock, &missing_text));
    let error = only(&set, "wi").reveal().await.unwrap_err().to_string();
    assert!(
        error.contains(&format!(
            "cannot read the federated token file \"{missing_text}\""
        )),
        "{error}"
    );

    assert_eq!(mock.call_count(), 0);
}
