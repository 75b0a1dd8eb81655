//! No secret reaches a log line, an error body, a probe report or `Debug` output: a whole
//! scenario runs under a capturing subscriber at TRACE level and every secret value of it
//! is searched for.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::{Response, StatusCode};
use support::entra::{MockEntra, aadsts_error, v2_token};
use support::logs::LogCapture;
use support::video_indexer::{MockVideoIndexer, token_string};
use support::{Azgate, MockUpstream, client, full};

const SECRETS: &[&str] = &[
    "CLIENT-SECRET-VALUE",
    "BROKEN-SECRET-VALUE",
    "ENTRA-TOKEN-VALUE",
    "VI-TOKEN-VALUE",
    "VI-SUBSCRIPTION-KEY-VALUE",
    "APIM-KEY-VALUE",
    "STATIC-BEARER-VALUE",
    "CLIENT-BEARER-VALUE",
    "CLIENT-ACCESS-TOKEN-VALUE",
    "CLIENT-GATEWAY-KEY-VALUE",
];

fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{secret} appears in {what}:\n{text}"
        );
    }
}

// Current-thread runtime: every task runs under the scoped subscriber.
#[tokio::test(flavor = "current_thread")]
async fn a_full_scenario_leaks_no_secret() {
    let capture = LogCapture::default();
    let _guard = capture.install_text(tracing::Level::TRACE);

    let entra = MockEntra::start().await;
    entra.respond_with(|call, n| {
        if call.form.get("client_secret").map(String::as_str) == Some("BROKEN-SECRET-VALUE") {
            aadsts_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided.",
            )
        } else {
            v2_token(&format!("ENTRA-TOKEN-VALUE-{n}"), 3599)
        }
    });
    let vi = MockVideoIndexer::start().await;
    vi.respond_with(|_, n| token_string(&format!("VI-TOKEN-VALUE-{n}")));
    // Refuses the first bearer token once, to exercise the 401 replay.
    let refused = Arc::new(Mutex::new(false));
    let upstream = {
        let refused = refused.clone();
        MockUpstream::start(move |request| {
            let refused = refused.clone();
            async move {
                let refuse = request.uri().path().starts_with("/arm")
                    && !std::mem::replace(&mut *refused.lock().unwrap(), true);
                if refuse {
                    return Response::builder()
                        .status(StatusCode::UNAUTHORIZED)
                        .body(full("expired"))
                        .unwrap();
                }
                support::echo(request).await
            }
        })
        .await
    };
    let text = support::config_text(&format!(
        r#"
        [credentials.arm]
        type = "client_secret"
        tenant = "contoso"
        client_id = "app-1"
        client_secret = "${{ARM_SECRET}}"
        scope = "https://management.azure.com/.default"
        token_url = "{entra}/contoso/oauth2/v2.0/token"
        [credentials.broken]
        type = "client_secret"
        tenant = "contoso"
        client_id = "app-2"
        client_secret = "BROKEN-SECRET-VALUE"
        scope = "https://management.azure.com/.default"
        token_url = "{entra}/contoso/oauth2/v2.0/token"
        [credentials.vi]
        type = "video_indexer"
        location = "trial"
        account_id = "acc-1"
        subscription_key = "VI-SUBSCRIPTION-KEY-VALUE"
        api_url = "{vi}"
        [credentials.apim]
        type = "subscription_key"
        key = "APIM-KEY-VALUE"
        [credentials.pat]
        type = "static"
        header = "Authorization"
        value = "Bearer STATIC-BEARER-VALUE"
        [[routes]]
        prefix = "/arm"
        upstream = "{up}/arm"
        credential = "arm"
        [[routes]]
        prefix = "/broken"
        upstream = "{up}"
        credential = "broken"
        [[routes]]
        prefix = "/vi"
        upstream = "{vi}"
        credential = "vi"
        [[routes]]
        prefix = "/apim"
        upstream = "{up}"
        credential = "apim"
        [[routes]]
        prefix = "/pat"
        upstream = "{up}"
        credential = "pat"
        "#,
        entra = entra.url,
        vi = vi.url,
        up = upstream.url,
    ));
    let env = HashMap::from([("ARM_SECRET", "CLIENT-SECRET-VALUE")]);
    let gw = Azgate::start_with(&text, std::path::Path::new("."), &env).await;

    let c = client();
    let mut bodies = String::new();
    for path in [
        "/arm/x",
        "/arm/y",
        "/broken/x",
        "/vi/trial/Accounts/acc-1/Videos",
        "/apim/x",
        "/pat/x",
        "/nowhere",
    ] {
        let response = c
            .post(format!(
                "{}{path}?accessToken=CLIENT-ACCESS-TOKEN-VALUE&name=clip",
                gw.url
            ))
            .header("authorization", "Bearer CLIENT-BEARER-VALUE")
            .header("x-azgate-key", "CLIENT-GATEWAY-KEY-VALUE")
            .header("ocp-apim-subscription-key", "CLIENT-BEARER-VALUE")
            .body("payload")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let headers = format!("{:?}", response.headers());
        let body = response.text().await.unwrap();
        if status.as_u16() >= 400 || path == "/nowhere" {
            // azgate's own answers (and the upstream's errors) carry no secret.
            assert_clean(
                &format!("the response to {path}"),
                &format!("{headers}\n{body}"),
            );
        }
        bodies.push_str(&body);
    }
    // The echo upstream saw the injected credentials, so the scenario really used them.
    assert!(
        bodies.contains("ENTRA-TOKEN-VALUE-2"),
        "the 401 replay used a fresh token"
    );
    assert!(bodies.contains("APIM-KEY-VALUE") && bodies.contains("STATIC-BEARER-VALUE"));
    assert!(bodies.contains("accessToken=VI-TOKEN-VALUE-1"));

    let gateway = gw.into_server();
    let debug = format!("{:?}", gateway.gateway.load());
    assert!(
        debug.contains("arm") && debug.len() > 500,
        "the Debug output is real"
    );
    assert_clean("Debug of the gateway", &debug);

    let config = azgate::config::parse(&text, "t.toml", std::path::Path::new("."), &|name| {
        env.get(name).map(|v| v.to_string())
    })
    .unwrap();
    assert_clean("Debug of the config", &format!("{config:?}"));
    let report = azgate::cli::probe_credentials(&config, &azgate::env::Env::process()).await;
    assert!(report.text.contains("FAILED") && report.text.contains("ok, expires in"));
    assert_clean("the probe report", &report.text);

    gateway.shutdown();
    gateway.wait().await;
    let logs = capture.text();
    assert!(
        logs.contains("token fetched") && logs.contains("AADSTS7000215"),
        "the logs are real"
    );
    assert!(logs.contains("replaying once with a new one"));
    assert_clean("the logs", &logs);
}
