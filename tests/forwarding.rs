//! Forwarding: routing, path and query mapping, header hygiene both ways, credential
//! injection, request ids, azgate's own JSON errors, HTTP/1.1, h2c and TLS upstreams.

mod support;

use std::time::Duration;

use http::{Response, StatusCode};
use support::{Azgate, MockUpstream, TestCa, client, full, h2c_client, json, seen, status};

#[tokio::test]
async fn path_and_query_reach_the_upstream_byte_for_byte() {
    let upstream = MockUpstream::echo().await;
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/vi\"\nupstream = \"{}\"\n",
        upstream.url
    ))
    .await;
    let query = "name=a%20b&x=%2F%2f&y=1+2&empty=&flag&accessToken=client-token&utf=%C3%A9&z=a=b";
    let url = format!("{}/vi/trial/Accounts/abc/Videos?{query}", gw.url);
    let echo = json(client().get(url).send().await.unwrap()).await;
    assert_eq!(echo["path"], "/trial/Accounts/abc/Videos");
    assert_eq!(
        echo["query"],
        "name=a%20b&x=%2F%2f&y=1+2&empty=&flag&utf=%C3%A9&z=a=b"
    );
}

#[tokio::test]
async fn longest_whole_segment_prefix_wins_and_prefix_is_stripped() {
    let a = MockUpstream::echo().await;
    let b = MockUpstream::echo().await;
    let keep = MockUpstream::echo().await;
    let gw = Azgate::start(&format!(
        r#"
        [[routes]]
        prefix = "/vi"
        upstream = "{a}"
        [[routes]]
        prefix = "/vi/trial/"
        upstream = "{b}/base"
        [[routes]]
        prefix = "/keep"
        upstream = "{keep}"
        strip_prefix = false
        "#,
        a = a.url,
        b = b.url,
        keep = keep.url,
    ))
    .await;
    let c = client();
    let get = |path: &str| c.get(format!("{}{path}", gw.url)).send();

    let echo = json(get("/vi").await.unwrap()).await;
    assert_eq!(echo["path"], "/");
    assert_eq!(echo["authority"], serde_json::Value::Null);
    assert_eq!(seen(&echo, "host"), vec![a.addr.to_string()]);

    let echo = json(get("/vi/trial/Accounts").await.unwrap()).await;
    assert_eq!(echo["path"], "/base/Accounts");
    assert_eq!(seen(&echo, "host"), vec![b.addr.to_string()]);

    let echo = json(get("/vi/trials").await.unwrap()).await;
    assert_eq!(
        echo["path"], "/trials",
        "a partial segment must not match /vi/trial"
    );

    let echo = json(get("/keep/x").await.unwrap()).await;
    assert_eq!(echo["path"], "/keep/x");

    for path in ["/video", "/", "/other/vi"] {
        let response = get(path).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(response.headers()["x-azgate-error"], "route_not_found");
        let body = json(response).await;
        assert_eq!(body["error"]["code"], "route_not_found");
        assert!(
            body["error"]["request_id"]
                .as_str()
                .is_some_and(|id| id.len() == 36)
        );
    }
}

#[tokio::test]
async fn request_headers_are_cleaned_and_route_headers_added() {
    let upstream = MockUpstream::echo().await;
    let gw = Azgate::start(&format!(
        r#"
        [[routes]]
        prefix = "/ms"
        upstream = "{}"
        set_headers = {{ "x-ms-version" = "2.19", "DataServiceVersion" = "3.0" }}
        "#,
        upstream.url
    ))
    .await;
    let response = client()
        .get(format!("{}/ms/Assets", gw.url))
        .header("connection", "x-private-hop")
        .header("x-private-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("proxy-authorization", "Basic cHJveHk=")
        .header("te", "trailers")
        .header("upgrade", "h2c")
        .header("authorization", "Bearer client-supplied")
        .header("ocp-apim-subscription-key", "client-key")
        .header("x-azgate-key", "gateway-key")
        .header("x-ms-version", "2.11")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let echo = json(response).await;
    for gone in [
        "connection",
        "x-private-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "upgrade",
        "authorization",
        "ocp-apim-subscription-key",
        "x-azgate-key",
    ] {
        assert!(
            seen(&echo, gone).is_empty(),
            "{gone} reached the upstream: {echo}"
        );
    }
    assert_eq!(seen(&echo, "te"), vec!["trailers"]);
    assert_eq!(seen(&echo, "host"), vec![upstream.addr.to_string()]);
    assert_eq!(
        seen(&echo, "x-ms-version"),
        vec!["2.11"],
        "the client's own value wins"
    );
    assert_eq!(seen(&echo, "dataserviceversion"), vec!["3.0"]);
    assert_eq!(seen(&echo, "accept"), vec!["application/json"]);
}

#[tokio::test]
async fn response_hop_by_hop_headers_are_removed() {
    let upstream = MockUpstream::start(|_req| async {
        Response::builder()
            .header("connection", "x-upstream-hop")
            .header("x-upstream-hop", "secret-ish")
            .header("keep-alive", "timeout=99")
            .header("proxy-authenticate", "Basic")
            .header("x-ms-request-id", "up-1")
            .header("x-kept", "yes")
            .body(full("ok"))
            .unwrap()
    })
    .await;
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\n",
        upstream.url
    ))
    .await;
    let response = client().get(format!("{}/x", gw.url)).send().await.unwrap();
    let headers = response.headers().clone();
    assert_eq!(response.text().await.unwrap(), "ok");
    assert!(headers.get("x-upstream-hop").is_none());
    assert!(headers.get("proxy-authenticate").is_none());
    assert_ne!(
        headers.get("keep-alive").map(|v| v.as_bytes()),
        Some(&b"timeout=99"[..])
    );
    assert_eq!(headers["x-kept"], "yes");
    assert_eq!(headers["x-ms-request-id"], "up-1");
}

#[tokio::test]
async fn credentials_replace_what_the_client_sent() {
    let upstream = MockUpstream::echo().await;
    let gw = Azgate::start(&format!(
        r#"
        [credentials.bearer]
        type = "static"
        header = "Authorization"
        value = "Bearer injected-token"
        [credentials.apim]
        type = "subscription_key"
        key = "primary-key"
        [credentials.custom]
        type = "subscription_key"
        key = "custom-key"
        header = "api-key"
        [[routes]]
        prefix = "/arm"
        upstream = "{u}"
        credential = "bearer"
        [[routes]]
        prefix = "/apim"
        upstream = "{u}"
        credential = "apim"
        [[routes]]
        prefix = "/custom"
        upstream = "{u}"
        credential = "custom"
        [[routes]]
        prefix = "/none"
        upstream = "{u}"
        "#,
        u = upstream.url
    ))
    .await;
    let c = client();
    let send = |path: &str| {
        c.get(format!("{}{path}?accessToken=from-client&a=1", gw.url))
            .header("authorization", "Bearer from-client")
            .header("ocp-apim-subscription-key", "from-client")
            .header("api-key", "from-client")
            .send()
    };

    let echo = json(send("/arm/subscriptions").await.unwrap()).await;
    assert_eq!(seen(&echo, "authorization"), vec!["Bearer injected-token"]);
    assert!(seen(&echo, "ocp-apim-subscription-key").is_empty());
    assert_eq!(echo["query"], "a=1");

    let echo = json(send("/apim/x").await.unwrap()).await;
    assert_eq!(
        seen(&echo, "ocp-apim-subscription-key"),
        vec!["primary-key"]
    );
    assert!(seen(&echo, "authorization").is_empty());

    let echo = json(send("/custom/x").await.unwrap()).await;
    assert_eq!(seen(&echo, "api-key"), vec!["custom-key"]);

    let echo = json(send("/none/x").await.unwrap()).await;
    assert!(seen(&echo, "authorization").is_empty());
    assert!(seen(&echo, "ocp-apim-subscription-key").is_empty());
    assert_eq!(echo["query"], "a=1");
}

#[tokio::test]
async fn request_ids_are_forwarded_and_returned() {
    let upstream = MockUpstream::echo().await;
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\n",
        upstream.url
    ))
    .await;
    let c = client();

    let response = c
        .get(format!("{}/x", gw.url))
        .header("x-ms-client-request-id", "my-id-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-ms-client-request-id"], "my-id-42");
    assert_eq!(
        seen(&json(response).await, "x-ms-client-request-id"),
        vec!["my-id-42"]
    );

    let response = c.get(format!("{}/x", gw.url)).send().await.unwrap();
    let returned = response.headers()["x-ms-client-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(uuid::Uuid::parse_str(&returned).is_ok(), "{returned}");
    assert_eq!(
        seen(&json(response).await, "x-ms-client-request-id"),
        vec![returned.as_str()]
    );

    let response = c.get(format!("{}/y", gw.url)).send().await.unwrap();
    assert_ne!(
        response.headers()["x-ms-client-request-id"]
            .to_str()
            .unwrap(),
        returned
    );
}

#[tokio::test]
async fn methods_outside_the_allow_list_get_405_with_allow() {
    let upstream = MockUpstream::echo().await;
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/ro\"\nupstream = \"{}\"\nmethods = [\"GET\", \"head\"]\n",
        upstream.url
    ))
    .await;
    let c = client();
    assert_eq!(status(c.get(format!("{}/ro/x", gw.url))).await, 200);
    assert_eq!(status(c.head(format!("{}/ro/x", gw.url))).await, 200);
    let response = c
        .post(format!("{}/ro/x", gw.url))
        .header("x-ms-client-request-id", "rid-405")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    assert_eq!(response.headers()["x-azgate-error"], "method_not_allowed");
    let body = json(response).await;
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert_eq!(body["error"]["request_id"], "rid-405");
}

#[tokio::test]
async fn unreachable_upstream_is_502_json() {
    // Bind and drop a listener to get a port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:{port}\"\n"
    ))
    .await;
    let response = client().get(format!("{}/x", gw.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.headers()["x-azgate-error"], "upstream_unreachable");
    let body = json(response).await;
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
}

#[tokio::test]
async fn slow_upstream_headers_are_504_json() {
    let upstream = MockUpstream::start(|_req| async {
        std::future::pending::<()>().await;
        Response::new(full(""))
    })
    .await;
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\ntimeout = \"300ms\"\n",
        upstream.url
    ))
    .await;
    let started = std::time::Instant::now();
    let response = client().get(format!("{}/x", gw.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(response.headers()["x-azgate-error"], "upstream_timeout");
    assert_eq!(json(response).await["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn h2c_and_http1_clients_are_both_served() {
    let upstream = MockUpstream::echo().await;
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\n",
        upstream.url
    ))
    .await;
    let h2 = h2c_client()
        .post(format!("{}/a?q=1", gw.url))
        .body("hello h2")
        .send()
        .await
        .unwrap();
    assert_eq!(h2.version(), http::Version::HTTP_2);
    let echo = json(h2).await;
    assert_eq!(echo["body"], "hello h2");
    assert_eq!(echo["query"], "q=1");
    assert_eq!(
        echo["version"], "HTTP/1.1",
        "plain upstreams are spoken to in HTTP/1.1"
    );

    let h1 = client()
        .post(format!("{}/b", gw.url))
        .body("hello h1")
        .send()
        .await
        .unwrap();
    assert_eq!(h1.version(), http::Version::HTTP_11);
    assert_eq!(json(h1).await["body"], "hello h1");
}

#[tokio::test]
async fn tls_upstream_with_private_ca_negotiates_h2() {
    let ca = TestCa::new();
    let upstream = MockUpstream::start_tls(&ca, support::echo).await;
    let text = support::config_text(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\nca_file = \"{}\"\n",
        upstream.url,
        ca.ca_pem_path.display()
    ));
    let gw = Azgate::start_with(&text, std::path::Path::new("."), &Default::default()).await;
    let echo = json(
        client()
            .post(format!("{}/secure", gw.url))
            .body("over tls")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(echo["version"], "HTTP/2.0");
    assert_eq!(echo["path"], "/secure");
    assert_eq!(echo["body"], "over tls");
    assert_eq!(
        echo["authority"],
        format!("localhost:{}", upstream.addr.port())
    );
}

#[tokio::test]
async fn tls_upstream_without_the_ca_is_refused() {
    let ca = TestCa::new();
    let upstream = MockUpstream::start_tls(&ca, support::echo).await;
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\n",
        upstream.url
    ))
    .await;
    let response = client().get(format!("{}/x", gw.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let message = json(response).await["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.to_lowercase().contains("certificate"), "{message}");
}

#[tokio::test]
async fn forwarding_headers_are_azgates_own_unless_a_trusted_proxy_sent_them() {
    let upstream = MockUpstream::echo().await;
    let routes = format!(
        "[[routes]]\nprefix = \"/on\"\nupstream = \"{u}\"\n\
         [[routes]]\nprefix = \"/off\"\nupstream = \"{u}\"\nforwarded_headers = false\n",
        u = upstream.url
    );
    let spoof = |request: reqwest::RequestBuilder| {
        request
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "api.contoso.com")
            .header("forwarded", "for=203.0.113.7")
            .header("x-real-ip", "203.0.113.7")
    };
    let c = client();

    // Nobody trusted: what the client claims is dropped, azgate says what it saw.
    let gw = Azgate::start(&routes).await;
    let echo = json(
        spoof(c.get(format!("{}/on/x", gw.url)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(seen(&echo, "x-forwarded-host"), [gw.addr.to_string()]);
    assert!(seen(&echo, "forwarded").is_empty(), "{echo}");
    assert!(seen(&echo, "x-real-ip").is_empty(), "{echo}");
    // Switched off per route: no forwarding header at all.
    let echo = json(
        spoof(c.get(format!("{}/off/x", gw.url)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    for name in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
        "x-real-ip",
    ] {
        assert!(seen(&echo, name).is_empty(), "{name}: {echo}");
    }
    gw.stop().await;

    // The client's peer (127.0.0.1) is a trusted proxy: its chain is kept and extended.
    let gw = Azgate::start(&format!(
        "[server.inbound]\ntrusted_proxies = [\"127.0.0.1\"]\n{routes}"
    ))
    .await;
    let echo = json(
        spoof(c.get(format!("{}/on/x", gw.url)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen(&echo, "x-forwarded-for"), ["203.0.113.7, 127.0.0.1"]);
    assert_eq!(seen(&echo, "x-forwarded-proto"), ["https"]);
    assert_eq!(seen(&echo, "x-forwarded-host"), ["api.contoso.com"]);
    assert_eq!(seen(&echo, "x-real-ip"), ["203.0.113.7"]);
    let echo = json(c.get(format!("{}/on/x", gw.url)).send().await.unwrap()).await;
    assert_eq!(seen(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen(&echo, "x-forwarded-proto"), ["http"]);
}
