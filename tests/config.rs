//! Config validation: every problem reported at once with its key path, interpolation,
//! unknown keys, and secrets kept out of messages.

mod support;

use std::collections::HashMap;
use std::path::Path;

use azgate::config;

fn parse_with(
    text: &str,
    env: &HashMap<&str, &str>,
) -> Result<config::Config, config::ConfigError> {
    support::init();
    let lookup = |name: &str| env.get(name).map(|v| v.to_string());
    config::parse(text, "bad.toml", Path::new("."), &lookup)
}

fn problems(text: &str) -> Vec<String> {
    match parse_with(text, &HashMap::new()) {
        Ok(_) => panic!("expected the config to be refused"),
        Err(err) => err.to_string().lines().map(str::to_string).collect(),
    }
}

#[test]
fn every_problem_is_reported_with_file_and_key_path() {
    let text = r#"
        [server]
        listen = "localhost:80"
        shutdown_grace = "soon"
        lisen = "typo"
        public_url = "gw.contoso.com"

        [admin]
        listen = "nope"

        [log]
        format = "xml"
        level = "info,[bad"

        [bogus]
        x = 1

        [credentials.arm]
        type = "client_secret"
        tenant = "t"

        [credentials.k]
        type = "subscription_key"
        key = "${MISSING_KEY}"
        value = "x"

        [credentials.s]
        type = "static"
        header = "bad header"

        [credentials.t]
        type = "magic"

        [credentials.u]
        typo = 1

        [credentials.v]
        type = "static"
        header = "authorization"
        value = "Bearer TOP-SECRET\u0001"

        [[routes]]
        prefix = "vi"
        upstream = "ftp://x"
        credential = "vi2"
        methods = ["GET", "FE TCH"]
        timeout = "0s"
        set_headers = { "Host" = "x", "x-ok" = "1" }
        ca_file = "does-not-exist.pem"
        strip_prefx = true

        [[routes]]
        prefix = "/a"
        upstream = "http://x"

        [[routes]]
        prefix = "/a/"
        upstream = "http://y"

        [[routes]]
        upstream = 5
    "#;
    let got = problems(text);
    let expected = [
        "bad.toml: server.listen: invalid address \"localhost:80\"",
        "bad.toml: server.shutdown_grace: invalid duration \"soon\"",
        "bad.toml: server.lisen: unknown key",
        "bad.toml: server.public_url: invalid URL",
        "bad.toml: admin.listen: invalid address \"nope\"",
        "bad.toml: log.format: unknown format \"xml\"",
        "bad.toml: log.level: invalid filter",
        "bad.toml: bogus: unknown key",
        "bad.toml: credentials.arm.client_id: missing key",
        "bad.toml: credentials.arm: missing `scope`",
        "bad.toml: credentials.arm.client_secret: missing key",
        "bad.toml: credentials.k.key: environment variable MISSING_KEY is not set",
        "bad.toml: credentials.k.value: does not apply to type \"subscription_key\"",
        "bad.toml: credentials.s.header: \"bad header\" is not a valid header name",
        "bad.toml: credentials.s.value: missing key",
        "bad.toml: credentials.t.type: unknown type \"magic\"",
        "bad.toml: credentials.u: missing key `type`",
        "bad.toml: credentials.v.value: contains characters not allowed in a header value",
        "bad.toml: routes[0].prefix: prefix \"vi\" must start with '/'",
        "bad.toml: routes[0].upstream: upstream \"ftp://x\" must be an http:// or https:// URL",
        "bad.toml: routes[0].credential: unknown credential \"vi2\"; known: arm, k, s, t, u, v",
        "bad.toml: routes[0].methods[1]: \"FE TCH\" is not an HTTP method",
        "bad.toml: routes[0].timeout: must be greater than zero",
        "bad.toml: routes[0].set_headers.Host: \"Host\" is managed by azgate",
        "bad.toml: routes[0].ca_file: cannot read",
        "bad.toml: routes[0].strip_prefx: unknown key",
        "bad.toml: routes[2].prefix: prefix \"/a\" is used by an earlier route",
        "bad.toml: routes[3].upstream: invalid type: integer `5`, expected a string",
    ];
    for want in expected {
        assert!(
            got.iter().any(|line| line.starts_with(want)),
            "missing {want:?} in:\n{}",
            got.join("\n")
        );
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "unexpected extra problems:\n{}",
        got.join("\n")
    );
    assert!(
        !got.join("\n").contains("TOP-SECRET"),
        "a secret was echoed"
    );
}

#[test]
fn interpolation_fills_values_and_fallbacks() {
    let env = HashMap::from([
        ("UPSTREAM_HOST", "127.0.0.1:9000"),
        ("APIM_KEY", "k-from-env"),
    ]);
    let config = parse_with(
        r#"
        [server]
        listen = "${LISTEN:-127.0.0.1:8181}"
        [credentials.apim]
        type = "subscription_key"
        key = "${APIM_KEY}"
        [[routes]]
        prefix = "${PREFIX:-/apim}"
        upstream = "http://${UPSTREAM_HOST}/base"
        credential = "apim"
        "#,
        &env,
    )
    .unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8181");
    assert_eq!(config.routes[0].prefix, "/apim");
    assert_eq!(
        config.routes[0].upstream.to_string(),
        "http://127.0.0.1:9000/base"
    );
    match &config.credentials["apim"] {
        config::CredentialConfig::SubscriptionKey { key, .. } => assert_eq!(key, "k-from-env"),
        other => panic!("{other:?}"),
    }
    assert!(
        !format!("{config:?}").contains("k-from-env"),
        "Debug output shows a secret"
    );
}

#[test]
fn defaults_apply_when_keys_are_omitted() {
    let config = parse_with(
        "[[routes]]\nprefix = \"/x/\"\nupstream = \"https://example.com\"\n",
        &HashMap::new(),
    )
    .unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        config.admin.listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9090")
    );
    assert_eq!(
        config.server.shutdown_grace,
        std::time::Duration::from_secs(30)
    );
    let route = &config.routes[0];
    assert_eq!(route.prefix, "/x");
    assert!(route.strip_prefix);
    assert!(route.methods.is_none());
    assert_eq!(route.timeout, std::time::Duration::from_secs(120));
    let disabled = parse_with("[admin]\nlisten = \"\"\n", &HashMap::new()).unwrap();
    assert!(disabled.admin.listen.is_none());
}

#[test]
fn invalid_toml_is_one_clear_problem() {
    let got = problems("[server\nlisten = 1");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("bad.toml: not valid TOML"), "{got:?}");
    assert!(got[0].contains("line 1"), "{got:?}");
}

#[test]
fn sections_of_the_wrong_shape_are_reported() {
    let got = problems("credentials = 1\nroutes = \"x\"\n[server]\nlisten = 8080\n");
    assert!(
        got.iter()
            .any(|l| l.contains("credentials: must be a table")),
        "{got:?}"
    );
    assert!(
        got.iter().any(|l| l.contains("routes: must be an array")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|l| l.contains("server.listen: invalid type: integer")),
        "{got:?}"
    );
}

#[test]
fn ca_file_must_hold_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    support::init();
    let err = config::parse(
        "[[routes]]\nprefix = \"/\"\nupstream = \"https://x\"\nca_file = \"empty.pem\"\n",
        "f.toml",
        dir.path(),
        &|_| None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("routes[0].ca_file: "), "{err}");
    assert!(
        err.to_string().contains("holds no PEM certificate"),
        "{err}"
    );
}

#[test]
fn retry_defaults_global_table_and_route_overrides() {
    let config = parse_with(
        r#"
        [retry]
        max_attempts = 5
        buffer = "2MiB"
        [[routes]]
        prefix = "/a"
        upstream = "http://a"
        [[routes]]
        prefix = "/b"
        upstream = "http://b"
        [routes.retry]
        on = [429, 503]
        max_delay = "5s"
        non_idempotent = true
        "#,
        &HashMap::new(),
    )
    .unwrap();
    let a = &config.routes[0].retry;
    assert_eq!(
        (a.max_attempts, a.buffer, a.on.clone()),
        (5, 2 << 20, vec![429, 504])
    );
    assert_eq!(a.max_delay, std::time::Duration::from_secs(30));
    assert!(!a.non_idempotent);
    let b = &config.routes[1].retry;
    assert_eq!(
        (b.max_attempts, b.buffer, b.on.clone()),
        (5, 2 << 20, vec![429, 503])
    );
    assert_eq!(b.max_delay, std::time::Duration::from_secs(5));
    assert!(b.non_idempotent);
    let plain = parse_with("", &HashMap::new()).unwrap();
    assert_eq!(plain.retry.max_attempts, 4);
    assert_eq!(plain.retry.buffer, 1 << 20);
}

#[test]
fn retry_values_are_checked() {
    let got = problems(
        r#"
        [retry]
        max_attempts = 0
        buffer = "1GiB"
        [[routes]]
        prefix = "/a"
        upstream = "http://a"
        [routes.retry]
        on = [401, 200, 429]
        max_delay = "0s"
        retries = 3
        "#,
    );
    for want in [
        "bad.toml: retry.max_attempts: must be between 1 (no retries) and 10",
        "bad.toml: retry.buffer: must be at most 64MiB",
        "bad.toml: routes[0].retry.on[0]: 401 is answered by refreshing the token",
        "bad.toml: routes[0].retry.on[1]: 200 is not an error status",
        "bad.toml: routes[0].retry.max_delay: must be greater than zero",
        "bad.toml: routes[0].retry.retries: unknown key",
    ] {
        assert!(
            got.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in:\n{}",
            got.join("\n")
        );
    }
    assert_eq!(got.len(), 6, "{}", got.join("\n"));
}
