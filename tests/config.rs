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
        "bad.toml: credentials.u.typo: unknown key; did you mean \"type\"?",
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

/// The problem lines for `text` with variables from `env`.
fn problems_with(text: &str, env: &[(&str, &str)]) -> Vec<String> {
    match parse_with(text, &env.iter().copied().collect()) {
        Ok(_) => panic!("expected the config to be refused"),
        Err(err) => err.to_string().lines().map(str::to_string).collect(),
    }
}

#[test]
fn one_mistake_is_one_problem_naming_the_users_own_key() {
    // Each case is one mistake, and must give exactly the one line shown.
    /// Config text, variables, the one problem line expected.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        // A typo inside a credential: not also "missing key", and not also "unknown
        // credential" where it is used (by a route and by a Video Indexer `arm`).
        (
            r#"
            [credentials.arm]
            type = "client_secret"
            tenant = "t"
            client_id = "c"
            client_secrt = "s"
            scope = "https://management.azure.com/.default"
            [credentials.vi]
            type = "video_indexer"
            location = "trial"
            account_id = "a"
            arm = "arm"
            subscription_id = "s"
            resource_group = "r"
            account_name = "n"
            [[routes]]
            prefix = "/arm"
            upstream = "https://management.azure.com"
            credential = "arm"
            "#,
            &[],
            "bad.toml: credentials.arm.client_secrt: unknown key; did you mean \"client_secret\"?",
        ),
        // An empty variable names the variable, and the credential is not "unknown".
        (
            r#"
            [credentials.arm]
            type = "client_secret"
            tenant = "t"
            client_id = "c"
            client_secret = "${AZURE_CLIENT_SECRET}"
            scope = "https://management.azure.com/.default"
            [credentials.vi]
            type = "video_indexer"
            location = "trial"
            account_id = "a"
            arm = "arm"
            subscription_id = "s"
            resource_group = "r"
            account_name = "n"
            "#,
            &[("AZURE_CLIENT_SECRET", "")],
            "bad.toml: credentials.arm.client_secret: is empty: environment variable AZURE_CLIENT_SECRET is set but empty",
        ),
        // A misspelt preset: no "upstream: missing key" the user never wrote.
        (
            "[[routes]]\nprefix = \"/vi\"\npreset = \"video_indexr\"\n",
            &[],
            "bad.toml: routes[0].preset: unknown preset \"video_indexr\"; did you mean \"video_indexer\"?",
        ),
        // The upstream a preset builds from `endpoint` is reported at `endpoint`, with the
        // variable it came from.
        (
            "[[routes]]\nprefix = \"/dc\"\npreset = \"devcenter\"\nendpoint = \"https://${DC}\"\n",
            &[("DC", "https://x.devcenter.azure.com")],
            "bad.toml: routes[0].endpoint: \"https://https://x.devcenter.azure.com\" has its scheme twice; \
             write it once, as in \"https://host\" (the value comes from environment variable DC)",
        ),
        (
            "[[routes]]\nprefix = \"/a\"\nupstream = \"https://https://management.azure.com\"\n",
            &[],
            "bad.toml: routes[0].upstream: \"https://https://management.azure.com\" has its scheme twice; \
             write it once, as in \"https://host\"",
        ),
        // Unknown nested keys: a suggestion when one is close, else the valid keys.
        (
            "[server.inbound]\nalow = [\"10.0.0.0/8\"]\n",
            &[],
            "bad.toml: server.inbound.alow: unknown key; did you mean \"allow\"?",
        ),
        (
            "[[routes]]\nprefix = \"/a\"\nupstream = \"http://a\"\n[routes.retry]\nzz_top = 2\n",
            &[],
            "bad.toml: routes[0].retry.zz_top: unknown key; valid keys here: on, max_attempts, \
             max_delay, buffer, non_idempotent",
        ),
        (
            "[[routes]]\nprefix = \"/a\"\nupstream = \"http://a\"\n[routes.retry]\nmax_attemps = 2\n",
            &[],
            "bad.toml: routes[0].retry.max_attemps: unknown key; did you mean \"max_attempts\"?",
        ),
        (
            "[credentials.k]\ntype = \"subscription_key\"\nkey = \"k\"\nheadr = \"x\"\n",
            &[],
            "bad.toml: credentials.k.headr: unknown key; did you mean \"header\"?",
        ),
        (
            "[credentials.k]\ntype = \"static\"\nheader = \"x\"\nvalue = \"v\"\nzzz = 1\n",
            &[],
            "bad.toml: credentials.k.zzz: unknown key; valid keys here: type, header, value",
        ),
        (
            "[credentials.m]\ntype = \"managed_identty\"\n",
            &[],
            "bad.toml: credentials.m.type: unknown type \"managed_identty\"; did you mean \"managed_identity\"?",
        ),
        (
            "[credentials.arm]\ntype = \"default\"\nscope = \"s\"\n[[routes]]\nprefix = \"/a\"\nupstream = \"http://a\"\ncredential = \"amr\"\n",
            &[],
            "bad.toml: routes[0].credential: unknown credential \"amr\"; known: arm; did you mean \"arm\"?",
        ),
        (
            "[typo_table]\n[sever]\nlisten = \"127.0.0.1:1\"\n",
            &[],
            "bad.toml: sever: unknown key; did you mean \"server\"?",
        ),
    ];
    for (text, env, want) in cases {
        let got = problems_with(text, env);
        let got: Vec<&str> = got
            .iter()
            .map(String::as_str)
            .filter(|l| !l.contains("typo_table"))
            .collect();
        assert_eq!(got, [*want], "for:\n{text}");
    }
}

#[test]
fn an_empty_inbound_key_names_its_variable() {
    let text = "[server]\nlisten = \"0.0.0.0:8080\"\n[server.inbound]\napi_keys = [\"${AZGATE_API_KEY}\"]\n";
    // One problem, naming the variable; no second one about the listener being open.
    assert_eq!(
        problems_with(text, &[("AZGATE_API_KEY", "")]),
        [
            "bad.toml: server.inbound.api_keys[0]: is empty: environment variable AZGATE_API_KEY is set but empty"
        ]
    );
    assert_eq!(
        problems_with(text, &[("AZGATE_API_KEY", "short")]),
        [
            "bad.toml: server.inbound.api_keys[0]: too short: use at least 16 random characters \
          (value not shown) (the value comes from environment variable AZGATE_API_KEY)"
        ]
    );
    assert_eq!(
        problems_with(text, &[]),
        [
            "bad.toml: server.inbound.api_keys[0]: environment variable AZGATE_API_KEY is not set \
          (it holds a secret: set it in azgate's environment)"
        ]
    );
    // An ordinary value is offered a default.
    assert_eq!(
        problems("[server]\nlisten = \"${CONFIG_TEST_UNSET_LISTEN}\"\n"),
        [
            "bad.toml: server.listen: environment variable CONFIG_TEST_UNSET_LISTEN is not set \
          (write ${CONFIG_TEST_UNSET_LISTEN:-default} to allow a default)"
        ]
    );
}

#[test]
fn endpoint_takes_the_host_with_or_without_its_scheme() {
    for endpoint in ["x.devcenter.azure.com", "https://x.devcenter.azure.com"] {
        let config = parse_with(
            "[[routes]]\nprefix = \"/dc\"\npreset = \"devcenter\"\nendpoint = \"${DC}\"\n",
            &HashMap::from([("DC", endpoint)]),
        )
        .unwrap_or_else(|e| panic!("{endpoint}: {e}"));
        assert_eq!(
            config.routes[0].upstream.to_string(),
            "https://x.devcenter.azure.com/",
            "{endpoint}"
        );
    }
}

/// The warnings of a valid config, as `path: message` lines.
fn warnings(text: &str) -> Vec<String> {
    let config = parse_with(text, &HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
    config.warnings.iter().map(|w| w.to_string()).collect()
}

#[test]
fn access_control_that_controls_nothing_is_a_warning() {
    let got = warnings(
        r#"
        [server]
        listen = "0.0.0.0:8080"
        [server.inbound]
        api_keys = ["0123456789abcdef0123"]
        allow = ["10.0.0.0/8", "0.0.0.0/0", "::/0"]
        trusted_proxies = ["::/0"]
        [admin]
        listen = "0.0.0.0:9090"
        [admin.inbound]
        allow = ["0.0.0.0/0"]
        trusted_proxies = ["0.0.0.0/0"]
        "#,
    );
    let want = [
        "server.inbound.allow[1]: \"0.0.0.0/0\" admits every IPv4 address: this allow-list restricts nothing",
        "server.inbound.allow[2]: \"::/0\" admits every IPv6 address: this allow-list restricts nothing",
        "server.inbound.trusted_proxies[0]: \"::/0\" trusts every IPv6 peer as a proxy",
        "admin.inbound.allow[0]: \"0.0.0.0/0\" admits every IPv4 address",
        "admin.inbound.trusted_proxies[0]: \"0.0.0.0/0\" trusts every IPv4 peer as a proxy: any client can name its own address in X-Forwarded-For",
    ];
    for w in want {
        assert!(
            got.iter().any(|g| g.starts_with(w)),
            "missing {w:?} in {got:#?}"
        );
    }
    assert_eq!(got.len(), want.len(), "{got:#?}");

    // Running without inbound control on purpose is allowed, and said.
    let got = warnings("[server]\nlisten = \"0.0.0.0:8080\"\nallow_unauthenticated = true\n");
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with(
            "server.allow_unauthenticated: 0.0.0.0:8080 has no inbound access control"
        ),
        "{got:#?}"
    );
    // On loopback, or with a real control, the switch changes nothing: no warning.
    assert!(warnings("[server]\nallow_unauthenticated = true\n").is_empty());
    assert!(warnings("[server]\nlisten = \"0.0.0.0:8080\"\nallow_unauthenticated = true\n[server.inbound]\nallow = [\"10.0.0.0/8\"]\n").is_empty());
    assert!(warnings("").is_empty());
}

#[test]
fn an_allow_list_of_every_address_does_not_open_a_public_listener() {
    for allow in [r#"["0.0.0.0/0"]"#, r#"["::/0", "10.0.0.0/8"]"#] {
        let got = problems(&format!(
            "[server]\nlisten = \"0.0.0.0:8080\"\n[server.inbound]\nallow = {allow}\n"
        ));
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0].starts_with(
                "bad.toml: server.listen: 0.0.0.0:8080 is reachable from other machines"
            ) && got[0].contains("allow admits every address, so it controls nothing"),
            "{got:#?}"
        );
    }
    // With the explicit opt-out it starts, with both warnings.
    let got = warnings(
        "[server]\nlisten = \"0.0.0.0:8080\"\nallow_unauthenticated = true\n[server.inbound]\nallow = [\"0.0.0.0/0\"]\n",
    );
    assert_eq!(got.len(), 2, "{got:#?}");
}

#[test]
fn vending_routes_refuse_forwarding_keys_and_need_a_video_indexer() {
    let text = r#"
        [credentials.vi]
        type = "video_indexer"
        location = "trial"
        account_id = "a1"
        subscription_key = "k"
        [credentials.arm]
        type = "managed_identity"
        scope = "https://management.azure.com/.default"
        [[routes]]
        prefix = "/t"
        vend = "vi"
        upstream = "https://api.videoindexer.ai"
        timeout = "3s"
        max_concurrent_fetches = 0
        embed_url = "www.videoindexer.ai"
        [routes.cors]
        allow_origins = ["https://ok.example", "https://bad.example/path"]
        [[routes]]
        prefix = "/u"
        vend = "arm"
        [[routes]]
        prefix = "/v"
        vend = "nope"
        [[routes]]
        prefix = "/t"
        upstream = "https://api.videoindexer.ai"
        credential = "arm"
        scoped_tokens = true
        max_entries = 5
        [[routes]]
        prefix = "/w"
        upstream = "https://api.videoindexer.ai"
        scoped_tokens = true
    "#;
    let found = problems(text);
    let want = [
        "bad.toml: routes[0].upstream: `vend` and `upstream` exclude each other",
        "bad.toml: routes[0].timeout: does not apply to a vending route",
        "bad.toml: routes[0].max_concurrent_fetches: must be between 1 and 1000",
        "bad.toml: routes[0].embed_url: \"www.videoindexer.ai\" must be an http:// or https:// base URL",
        "bad.toml: routes[0].cors.allow_origins[1]: \"https://bad.example/path\" is not an origin",
        "bad.toml: routes[1].vend: vend needs a video_indexer credential; \"arm\" is another type",
        "bad.toml: routes[2].vend: unknown credential \"nope\"",
        "bad.toml: routes[3].max_entries: only applies to a vending route (`vend`)",
        "bad.toml: routes[3].scoped_tokens: scoped_tokens needs a video_indexer credential",
        "bad.toml: routes[3].prefix: prefix \"/t\" is used by an earlier route",
        "bad.toml: routes[4].scoped_tokens: needs a video_indexer `credential` on the route",
    ];
    for want in want {
        assert!(
            found.iter().any(|line| line.starts_with(want)),
            "missing {want:?} in:\n{}",
            found.join("\n")
        );
    }
    assert!(
        !found.iter().any(|l| l.contains("cors.allow_origins[0]")),
        "{found:#?}"
    );

    // A valid vending route parses with its defaults.
    let ok = r#"
        [credentials.vi]
        type = "video_indexer"
        location = "trial"
        account_id = "a1"
        subscription_key = "k"
        [[routes]]
        prefix = "/vi-tokens/"
        vend = "vi"
    "#;
    let config = parse_with(ok, &HashMap::new()).unwrap();
    assert!(config.routes.is_empty());
    let route = &config.vend_routes[0];
    assert_eq!(route.prefix, "/vi-tokens");
    assert_eq!(route.credential, "vi");
    assert_eq!(
        (route.max_entries, route.max_concurrent_fetches),
        (10_000, 8)
    );
    assert_eq!(route.embed_url, "https://www.videoindexer.ai");
    assert!(route.cors_origins.is_empty());
}

#[test]
fn a_log_level_that_is_no_level_is_refused_not_silently_quiet() {
    for level in ["warning", "verbose"] {
        let found = problems(&format!("[log]\nlevel = \"{level}\"\n"));
        assert!(
            found.iter().any(|l| l.starts_with(&format!(
                "bad.toml: log.level: invalid filter \"{level}\": \"{level}\" is not a level"
            ))),
            "{found:#?}"
        );
    }
    assert!(parse_with("[log]\nlevel = \"info,azgate=debug\"\n", &HashMap::new()).is_ok());
}

#[test]
fn throttle_holds_by_default_where_a_credential_is_injected() {
    let text = r#"
        [credentials.k]
        type = "subscription_key"
        key = "a-key-0123456789"
        [[routes]]
        prefix = "/with"
        upstream = "https://example.com"
        credential = "k"
        [[routes]]
        prefix = "/without"
        upstream = "https://example.com"
        [[routes]]
        prefix = "/off"
        upstream = "https://example.com"
        credential = "k"
        [routes.throttle]
        hold = false
        max_queue = 10
    "#;
    let config = parse_with(text, &HashMap::new()).unwrap();
    let holds: Vec<(bool, usize)> = config
        .routes
        .iter()
        .map(|r| (r.throttle.hold, r.throttle.max_queue))
        .collect();
    assert_eq!(holds, [(true, 1000), (false, 1000), (false, 10)]);
    let found = problems(
        "[[routes]]\nprefix = \"/a\"\nupstream = \"https://e.com\"\n[routes.throttle]\nmax_queue = 0\nholds = true\n",
    );
    assert!(
        found
            .iter()
            .any(|l| l.starts_with("bad.toml: routes[0].throttle.max_queue: must be at least 1")),
        "{found:#?}"
    );
    assert!(
        found.iter().any(|l| l.starts_with(
            "bad.toml: routes[0].throttle.holds: unknown key; did you mean \"hold\"?"
        )),
        "{found:#?}"
    );
}
