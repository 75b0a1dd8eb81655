//! A real Microsoft SDK through azgate: Python's `azure-developer-devcenter` (pinned, in a
//! venv the test makes under target/sdk-venv) talks HTTPS to a `preset = "devcenter"` route
//! in front of a mock DevCenter data plane speaking AZURE.md's shapes. It creates an
//! environment (a long-running operation polled through `Operation-Location`) and lists
//! the project's environments over three pages linked by absolute `nextLink`s. The mock
//! refuses any request without azgate's token, so a request that walked around azgate —
//! carrying the SDK's placeholder credential — fails, as the control case shows.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use support::sdk::{ScriptRun, run_script};
use support::{Azgate, Body, MockUpstream, TestCa, full};

const PROJECT: &str = "contoso-web";
const ENVIRONMENT: &str = "review-42";
const API_VERSION: &str = "2024-02-01";
/// The token the SDK is given; azgate must replace it with its own.
const PLACEHOLDER: &str = "Bearer placeholder-not-a-token";
/// What the three pages of `list_all_environments` hold, in order.
const PAGES: [&[&str]; 3] = [&["dev-1", "dev-2"], &["test-1", "test-2"], &["prod-1"]];
/// A cold run installs the SDK first; that has its own deadline (support/sdk.rs).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(60);

/// One request as the mock saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    authorization: Option<String>,
    forwarded_host: Option<String>,
    forwarded_for: Option<String>,
    status: StatusCode,
}

/// A DevCenter data plane on HTTPS (so the SDK can be sent to it directly, as it is when
/// a nextLink leads around azgate). Accepts only `Authorization: Bearer {token}`.
struct MockDevCenter {
    upstream: MockUpstream,
    state: Arc<State>,
}

struct State {
    /// The mock's own base URL, for the absolute links it answers with.
    me: OnceLock<String>,
    token: String,
    seen: Mutex<Vec<Seen>>,
    polls: Mutex<u32>,
    created: Mutex<Option<Value>>,
}

impl MockDevCenter {
    async fn start(ca: &TestCa, token: &str) -> Self {
        let state = Arc::new(State {
            me: OnceLock::new(),
            token: format!("Bearer {token}"),
            seen: Mutex::default(),
            polls: Mutex::default(),
            created: Mutex::default(),
        });
        let upstream = {
            let state = state.clone();
            MockUpstream::start_tls(ca, move |request| {
                let state = state.clone();
                async move { state.answer(request).await }
            })
            .await
        };
        state.me.set(upstream.url.clone()).unwrap();
        Self { upstream, state }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl State {
    async fn answer(&self, request: Request<Incoming>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let authorization = header("authorization");
        let query = parts.uri.query().unwrap_or_default().to_string();
        let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let response = if authorization.as_deref() != Some(self.token.as_str()) {
            error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "the request carries no valid bearer token",
            )
        } else if !params.contains_key("api-version") {
            error(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "the api-version query parameter is required",
            )
        } else {
            self.route(&parts.method, parts.uri.path(), &params, &body)
        };
        self.seen.lock().unwrap().push(Seen {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            query,
            authorization,
            forwarded_host: header("x-forwarded-host"),
            forwarded_for: header("x-forwarded-for"),
            status: response.status(),
        });
        response
    }

    fn route(
        &self,
        method: &Method,
        path: &str,
        params: &HashMap<String, String>,
        body: &[u8],
    ) -> Response<Body> {
        let me = self.me.get().expect("the mock's URL");
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::PUT, ["projects", project, "users", "me", "environments", name]) => {
                let Ok(Value::Object(mut environment)) = serde_json::from_slice(body) else {
                    return error(StatusCode::BAD_REQUEST, "InvalidRequestContent", "not JSON");
                };
                environment.insert("name".into(), json!(name));
                environment.insert("provisioningState".into(), json!("Creating"));
                environment.insert("user".into(), json!("00000000-0000-0000-0000-00000000beef"));
                let environment = Value::Object(environment);
                *self.created.lock().unwrap() = Some(environment.clone());
                let operation = format!(
                    "{me}/projects/{project}/operationstatuses/op-{name}?api-version={API_VERSION}"
                );
                Response::builder()
                    .status(StatusCode::CREATED)
                    .header("content-type", "application/json")
                    .header("operation-location", &operation)
                    .header("location", &operation)
                    .body(full(environment.to_string()))
                    .unwrap()
            }
            (&Method::GET, ["projects", project, "operationstatuses", id]) => {
                let mut polls = self.polls.lock().unwrap();
                *polls += 1;
                let status = if *polls == 1 { "Running" } else { "Succeeded" };
                ok(json!({
                    "id": format!("/projects/{project}/operationstatuses/{id}"),
                    "name": id,
                    "status": status,
                }))
            }
            (&Method::GET, ["projects", _, "users", "me", "environments", name]) => {
                match self.created.lock().unwrap().clone() {
                    Some(mut environment) if environment["name"] == *name => {
                        environment["provisioningState"] = json!("Succeeded");
                        ok(environment)
                    }
                    _ => error(StatusCode::NOT_FOUND, "EnvironmentNotFound", name),
                }
            }
            (&Method::GET, ["projects", project, "environments"]) => {
                let page: usize = params
                    .get("$skipToken")
                    .and_then(|token| token.parse().ok())
                    .unwrap_or(1);
                let Some(names) = PAGES.get(page - 1) else {
                    return error(StatusCode::BAD_REQUEST, "InvalidSkipToken", "no such page");
                };
                let value: Vec<Value> = names
                    .iter()
                    .map(|name| {
                        json!({
                            "name": name,
                            "environmentType": "Dev",
                            "catalogName": "main",
                            "environmentDefinitionName": "webapp",
                            "provisioningState": "Succeeded",
                        })
                    })
                    .collect();
                let mut list = json!({ "value": value });
                if page < PAGES.len() {
                    let next = page + 1;
                    list["nextLink"] = json!(format!(
                        "{me}/projects/{project}/environments?api-version={API_VERSION}&$skipToken={next}"
                    ));
                }
                ok(list)
            }
            _ => error(StatusCode::NOT_FOUND, "NotFound", path),
        }
    }
}

fn ok(body: Value) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json; charset=utf-8")
        .body(full(body.to_string()))
        .unwrap()
}

/// An error as the data plane answers it: the code in the body and in `x-ms-error-code`.
fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-ms-error-code", code)
        .body(full(
            json!({"error": {"code": code, "message": message}}).to_string(),
        ))
        .unwrap()
}

/// One run of tests/sdk/devcenter_client.py against azgate over HTTPS.
struct Drive {
    mock: MockDevCenter,
    /// `https://localhost:PORT`: the origin the SDK was given (before the route prefix).
    azgate: String,
    sdk: ScriptRun,
}

/// Starts the mock and azgate (a `devcenter` route with `route_extra` lines; its token is
/// a static credential known only to azgate and the mock) and runs the SDK through it.
async fn drive(route_extra: &str) -> Drive {
    let ca = TestCa::new();
    let token = format!("azgate-{}", uuid::Uuid::new_v4());
    let mock = MockDevCenter::start(&ca, &token).await;
    let (cert, key) = ca.server_cert();
    std::fs::write(ca.dir.path().join("server.pem"), cert).unwrap();
    std::fs::write(ca.dir.path().join("server.key"), key).unwrap();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"2s\"\n\
         [server.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n\
         [admin]\nlisten = \"\"\n\
         [credentials.devcenter]\ntype = \"static\"\nheader = \"Authorization\"\n\
         value = \"Bearer {token}\"\n\
         [[routes]]\nprefix = \"/dc\"\npreset = \"devcenter\"\nendpoint = \"{}\"\n\
         credential = \"devcenter\"\nca_file = \"test-ca.pem\"\n{route_extra}",
        mock.upstream.url
    );
    let gw = Azgate::start_with(&config, ca.dir.path(), &Default::default()).await;
    let azgate = format!("https://localhost:{}", gw.addr.port());
    let ca_pem = ca.ca_pem_path.to_str().unwrap();
    let endpoint = format!("{azgate}/dc");
    let sdk = run_script(
        "devcenter_client.py",
        &[
            "--endpoint",
            &endpoint,
            "--ca",
            ca_pem,
            "--project",
            PROJECT,
            "--environment",
            ENVIRONMENT,
        ],
        SCRIPT_DEADLINE,
    )
    .await;
    gw.stop().await;
    Drive { mock, azgate, sdk }
}

/// The method and path of each request the SDK made, as the mock would see them: the
/// azgate origin and route prefix taken off.
fn sdk_requests(drive: &Drive) -> Vec<(String, String)> {
    let requested = drive.sdk.output["requested"].as_array().unwrap();
    requested
        .iter()
        .map(|r| {
            let url = r["url"].as_str().unwrap();
            let path = url
                .strip_prefix(&format!("{}/dc", drive.azgate))
                .unwrap_or_else(|| panic!("the SDK called {url}, not azgate's route"));
            let path = path.split('?').next().unwrap().to_string();
            (r["method"].as_str().unwrap().to_string(), path)
        })
        .collect()
}

/// Whether `seen` came through azgate: azgate's token and its forwarding headers naming
/// the origin the SDK used.
fn through_azgate(seen: &Seen, drive: &Drive, token: &str) -> bool {
    seen.authorization.as_deref() == Some(token)
        && seen.forwarded_host.as_deref() == drive.azgate.strip_prefix("https://")
        && seen.forwarded_for.as_deref() == Some("127.0.0.1")
}

#[tokio::test]
async fn the_devcenter_sdk_creates_and_pages_through_azgate_only() {
    let drive = drive("").await;
    let out = &drive.sdk.output;
    assert_eq!(
        drive.sdk.code,
        Some(0),
        "{out:#}\nstderr: {}",
        drive.sdk.stderr
    );

    // The long-running create completed: polled to Succeeded, then the final GET.
    assert_eq!(out["created"]["status"], "Succeeded", "{out:#}");
    let created = &out["created"]["environment"];
    assert_eq!(created["name"], ENVIRONMENT);
    assert_eq!(created["provisioningState"], "Succeeded");
    assert_eq!(created["catalogName"], "main");
    // All three pages.
    let listed: Vec<&str> = out["listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, PAGES.concat());

    // Every request reached the mock from azgate with azgate's token; the SDK itself only
    // ever held the placeholder and only ever called azgate.
    let seen = drive.mock.seen();
    let token = drive.mock.state.token.clone();
    for request in &seen {
        assert!(
            through_azgate(request, &drive, &token),
            "a request did not come through azgate: {request:?}"
        );
        assert_eq!(request.status.as_u16() / 100, 2, "{request:?}");
    }
    for request in out["requested"].as_array().unwrap() {
        assert_eq!(request["authorization"], PLACEHOLDER, "{request}");
    }
    // The polling URL and the nextLinks the SDK followed were azgate's: the SDK asked azgate
    // for exactly the paths the mock saw, in order.
    let env_path = format!("/projects/{PROJECT}/users/me/environments/{ENVIRONMENT}");
    let poll_path = format!("/projects/{PROJECT}/operationstatuses/op-{ENVIRONMENT}");
    let list_path = format!("/projects/{PROJECT}/environments");
    let expected: Vec<(String, String)> = [
        ("PUT", &env_path),
        ("GET", &poll_path),
        ("GET", &poll_path),
        ("GET", &env_path),
        ("GET", &list_path),
        ("GET", &list_path),
        ("GET", &list_path),
    ]
    .iter()
    .map(|(method, path)| (method.to_string(), path.to_string()))
    .collect();
    let mock_saw: Vec<(String, String)> = seen
        .iter()
        .map(|s| (s.method.to_string(), s.path.clone()))
        .collect();
    assert_eq!(mock_saw, expected, "{seen:#?}");
    assert_eq!(sdk_requests(&drive), expected, "{out:#}");
    // Pages two and three were asked for by the tokens in the rewritten nextLinks.
    let skip_tokens: Vec<Option<String>> = seen[4..]
        .iter()
        .map(|s| {
            form_urlencoded::parse(s.query.as_bytes())
                .find(|(k, _)| k == "$skipToken")
                .map(|(_, v)| v.into_owned())
        })
        .collect();
    assert_eq!(
        skip_tokens,
        [None, Some("2".to_string()), Some("3".to_string())]
    );
    assert!(
        seen.iter()
            .all(|s| s.query.contains("api-version=2024-02-01")),
        "{seen:#?}"
    );
}

#[tokio::test]
async fn without_body_link_rewriting_the_sdk_walks_out_on_page_two_and_is_refused() {
    // The control: the preset's default turned off by hand, as before issue 15.
    let drive = drive("rewrite_body_links = false\n").await;
    let out = &drive.sdk.output;
    assert_eq!(
        drive.sdk.code,
        Some(1),
        "the SDK should have failed: {out:#}\nstderr: {}",
        drive.sdk.stderr
    );
    // Headers are rewritten regardless: the create still completes through azgate.
    assert_eq!(out["created"]["status"], "Succeeded", "{out:#}");
    assert!(out.get("listed").is_none(), "{out:#}");
    let error = &out["error"];
    assert_eq!(error["type"], "ClientAuthenticationError", "{out:#}");
    assert_eq!(error["status"], 401);
    assert_eq!(error["error_code"], "Unauthorized");
    let page_two = error["url"].as_str().unwrap();
    assert!(
        page_two.starts_with(&format!(
            "{}/projects/{PROJECT}/environments?",
            drive.mock.upstream.url
        )),
        "page two should have gone to the mock directly: {page_two}"
    );

    let seen = drive.mock.seen();
    let token = drive.mock.state.token.clone();
    let (last, before) = seen.split_last().expect("requests");
    assert_eq!(before.len(), 5, "{seen:#?}");
    assert!(
        before.iter().all(|s| through_azgate(s, &drive, &token)),
        "{seen:#?}"
    );
    // Page two came straight from the SDK, with its placeholder, and was refused.
    assert_eq!(last.path, format!("/projects/{PROJECT}/environments"));
    assert_eq!(last.authorization.as_deref(), Some(PLACEHOLDER));
    assert_eq!(last.forwarded_host, None);
    assert_eq!(last.status, StatusCode::UNAUTHORIZED);
}
