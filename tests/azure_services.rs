//! Azure-aware routes end to end against mocks speaking AZURE.md's shapes: presets, link
//! rewriting for long-running operations and paged lists, Media Services v2 headers, a
//! Video Indexer upload streamed with its token, and subscription-key failover.

mod support;

use std::sync::{Arc, Mutex, OnceLock};

use http::{Response, StatusCode};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use support::video_indexer::MockVideoIndexer;
use support::{Azgate, MockUpstream, body_text, client, full};

/// A mock upstream whose handler knows its own base URL (for absolute links).
async fn self_aware<F>(handler: F) -> (MockUpstream, Arc<OnceLock<String>>)
where
    F: Fn(http::Request<hyper::body::Incoming>, String) -> Response<support::Body>
        + Send
        + Sync
        + 'static,
{
    let me = Arc::new(OnceLock::new());
    let handler = Arc::new(handler);
    let upstream = {
        let me = me.clone();
        MockUpstream::start(move |request| {
            let (me, handler) = (me.clone(), handler.clone());
            async move { handler(request, me.get().cloned().unwrap_or_default()) }
        })
        .await
    };
    me.set(upstream.url.clone()).unwrap();
    (upstream, me)
}

#[tokio::test]
async fn an_arm_long_running_operation_is_polled_through_azgate() {
    let polls = Arc::new(Mutex::new(0));
    let (arm, _) = {
        let polls = polls.clone();
        self_aware(move |request, me| {
            let path = request.uri().path().to_string();
            if request.method() == http::Method::PUT {
                let op = format!("{me}/subscriptions/s1/providers/Microsoft.Resources/operationstatuses/op1?api-version=2022-12-01");
                return Response::builder()
                    .status(StatusCode::CREATED)
                    .header("azure-asyncoperation", &op)
                    .header("location", &op)
                    .header("retry-after", "0")
                    .body(full(r#"{"properties":{"provisioningState":"Accepted"}}"#))
                    .unwrap();
            }
            assert!(path.ends_with("/operationstatuses/op1"), "{path}");
            let mut n = polls.lock().unwrap();
            *n += 1;
            let status = if *n < 3 { "InProgress" } else { "Succeeded" };
            Response::builder()
                .header("content-type", "application/json")
                .body(full(format!(r#"{{"status":"{status}"}}"#)))
                .unwrap()
        })
        .await
    };
    let gw = Azgate::start(&format!(
        "[credentials.arm]\ntype = \"static\"\nheader = \"Authorization\"\nvalue = \"Bearer arm-token\"\n\
         [[routes]]\nprefix = \"/arm\"\npreset = \"arm\"\nupstream = \"{}\"\ncredential = \"arm\"\n",
        arm.url
    ))
    .await;
    let c = client();
    let created = c
        .put(format!("{}/arm/subscriptions/s1/resourcegroups/rg/providers/Microsoft.Resources/deployments/d1?api-version=2022-12-01", gw.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let expected = format!(
        "{}/arm/subscriptions/s1/providers/Microsoft.Resources/operationstatuses/op1?api-version=2022-12-01",
        gw.url
    );
    assert_eq!(created.headers()["azure-asyncoperation"], expected.as_str());
    assert_eq!(created.headers()["location"], expected.as_str());
    let mut status = String::new();
    for _ in 0..5 {
        let poll: serde_json::Value = support::json(c.get(&expected).send().await.unwrap()).await;
        status = poll["status"].as_str().unwrap().to_string();
        if status == "Succeeded" {
            break;
        }
    }
    assert_eq!(status, "Succeeded");
    assert_eq!(*polls.lock().unwrap(), 3);
}

#[tokio::test]
async fn a_devcenter_operation_and_the_api_version_default() {
    let (dc, _) = self_aware(|request, me| {
        let query = request.uri().query().unwrap_or_default().to_string();
        let op = format!("{me}/projects/p1/operationstatuses/o1");
        Response::builder()
            .status(StatusCode::ACCEPTED)
            .header("operation-location", &op)
            .header("location", &op)
            .header("x-seen-query", query)
            .body(full(""))
            .unwrap()
    })
    .await;
    let gw = Azgate::start(&format!(
        "[credentials.dc]\ntype = \"static\"\nheader = \"Authorization\"\nvalue = \"Bearer dc\"\n\
         [[routes]]\nprefix = \"/dc\"\npreset = \"devcenter\"\nendpoint = \"{}\"\ncredential = \"dc\"\n",
        dc.url
    ))
    .await;
    let c = client();
    let response = c
        .put(format!(
            "{}/dc/projects/p1/users/me/environments/e1",
            gw.url
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-seen-query"], "api-version=2024-02-01");
    let expected = format!("{}/dc/projects/p1/operationstatuses/o1", gw.url);
    assert_eq!(response.headers()["operation-location"], expected.as_str());
    assert_eq!(response.headers()["location"], expected.as_str());
    let response = c
        .get(format!(
            "{}/dc/projects?api-version=2023-04-01&top=5",
            gw.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-seen-query"],
        "api-version=2023-04-01&top=5",
        "the client's own version wins"
    );
}

#[tokio::test]
async fn a_paged_list_is_followed_to_the_end_through_rewritten_next_links() {
    let (arm, _) = self_aware(|request, me| {
        let page: u32 = request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("page=")))
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let mut body = serde_json::json!({
            "value": [{"id": format!("{me}/subscriptions/s1/resourceGroups/rg{page}"), "name": format!("rg{page}")}],
        });
        if page < 3 {
            body["nextLink"] = format!("{me}/subscriptions/s1/resourcegroups?api-version=2022-12-01&page={}", page + 1).into();
        }
        Response::builder()
            .header("content-type", "application/json; charset=utf-8")
            .body(full(serde_json::to_string_pretty(&body).unwrap()))
            .unwrap()
    })
    .await;
    let gw = Azgate::start(&format!(
        // No rewrite_body_links: the preset turns it on.
        "[[routes]]\nprefix = \"/arm\"\npreset = \"arm\"\nupstream = \"{}\"\n",
        arm.url
    ))
    .await;
    let c = client();
    let mut next = Some(format!(
        "{}/arm/subscriptions/s1/resourcegroups?api-version=2022-12-01",
        gw.url
    ));
    let mut names = Vec::new();
    while let Some(url) = next.take() {
        assert!(
            url.starts_with(&gw.url),
            "a link leads away from azgate: {url}"
        );
        let response = c.get(&url).send().await.unwrap();
        let length: usize = response.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let bytes = response.bytes().await.unwrap();
        assert_eq!(
            bytes.len(),
            length,
            "Content-Length matches the rewritten body"
        );
        let page: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        for item in page["value"].as_array().unwrap() {
            names.push(item["name"].as_str().unwrap().to_string());
            assert!(
                item["id"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{}/arm/", gw.url))
            );
        }
        next = page["nextLink"].as_str().map(str::to_string);
    }
    assert_eq!(names, vec!["rg1", "rg2", "rg3"]);
}

#[tokio::test]
async fn json_rewriting_respects_its_size_limit_and_other_hosts() {
    let (upstream, _) = self_aware(|_request, me| {
        let filler = "x".repeat(2048);
        let body = serde_json::json!({"nextLink": format!("{me}/page2"), "other": "https://www.videoindexer.ai/embed/player", "filler": filler});
        Response::builder()
            .status(StatusCode::FOUND)
            .header("content-type", "application/json")
            .header("location", "https://www.videoindexer.ai/embed/player/abc")
            .header("content-location", format!("{me}/here"))
            .body(full(body.to_string()))
            .unwrap()
    })
    .await;
    let start = |limit: &str| {
        let text = format!(
            "[[routes]]\nprefix = \"/up\"\nupstream = \"{}\"\nrewrite_body_links = true\nrewrite_body_limit = \"{limit}\"\n",
            upstream.url
        );
        async move { Azgate::start(&text).await }
    };
    let c = client();
    let gw = start("1KiB").await;
    let response = c.get(format!("{}/up/list", gw.url)).send().await.unwrap();
    assert_eq!(
        response.status(),
        302,
        "redirects are passed back, not followed"
    );
    assert_eq!(
        response.headers()["location"],
        "https://www.videoindexer.ai/embed/player/abc",
        "other hosts untouched"
    );
    assert_eq!(
        response.headers()["content-location"],
        format!("{}/up/here", gw.url).as_str()
    );
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body["nextLink"],
        format!("{}/page2", upstream.url),
        "over the limit: unchanged"
    );

    let gw = start("8MiB").await;
    let response = c.get(format!("{}/up/list", gw.url)).send().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["nextLink"], format!("{}/up/page2", gw.url));
    assert_eq!(body["other"], "https://www.videoindexer.ai/embed/player");
}

/// The value of one sample line of `/metrics`, 0 when absent.
async fn metric(admin: &str, sample: &str) -> f64 {
    let text = body_text(client().get(format!("{admin}/metrics"))).await;
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(start_paused = true)]
async fn bodies_left_unrewritten_are_counted_and_warned_about_once_a_minute() {
    let (upstream, _) = self_aware(|request, me| {
        let body =
            serde_json::json!({"nextLink": format!("{me}/page2"), "filler": "x".repeat(2048)});
        let builder = Response::builder();
        let builder = match request.uri().path() {
            "/big" => builder.header("content-type", "application/json"),
            "/gz" => builder
                .header("content-type", "application/json")
                .header("content-encoding", "gzip"),
            _ => builder.header("content-type", "text/plain"),
        };
        builder.body(full(body.to_string())).unwrap()
    })
    .await;
    let logs = support::logs::LogCapture::default();
    let _guard = logs.install_json(tracing::Level::WARN);
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/up\"\nupstream = \"{}\"\nrewrite_body_links = true\nrewrite_body_limit = \"1KiB\"\n",
        upstream.url
    ))
    .await;
    let admin = gw.admin_url.clone().unwrap();
    let skipped = |reason: &str| {
        format!("azgate_link_rewrite_skipped_total{{route=\"/up\",reason=\"{reason}\"}}")
    };
    // Known from the config: present with 0 before anything happened.
    for reason in ["too_large", "compressed", "not_json"] {
        let text = body_text(client().get(format!("{admin}/metrics"))).await;
        assert!(text.contains(&format!("{} 0", skipped(reason))), "{text}");
    }
    let c = client();
    let warnings = || {
        logs.events()
            .into_iter()
            .filter(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("links in a response body were not rewritten"))
            })
            .collect::<Vec<_>>()
    };
    for _ in 0..3 {
        let body = body_text(c.get(format!("{}/up/big", gw.url))).await;
        assert!(
            body.contains(&format!("{}/page2", upstream.url)),
            "too large: unchanged"
        );
    }
    assert_eq!(metric(&admin, &skipped("too_large")).await, 3.0);
    let logged = warnings();
    assert_eq!(logged.len(), 1, "once a minute: {logged:#?}");
    assert_eq!(logged[0]["reason"], "too_large");
    assert_eq!(logged[0]["route"], "/up");
    assert_eq!(logged[0]["limit"], 1024);

    // A minute on, the next one is logged, with the count held back.
    tokio::time::advance(std::time::Duration::from_secs(61)).await;
    // A new connection: the clock jump ended the idle one.
    body_text(client().get(format!("{}/up/gz", gw.url))).await;
    let logged = warnings();
    assert_eq!(logged.len(), 2, "{logged:#?}");
    assert_eq!(logged[1]["reason"], "compressed");
    assert_eq!(logged[1]["held_back"], 2);
    assert_eq!(metric(&admin, &skipped("compressed")).await, 1.0);

    // Not JSON: counted, but nothing to warn about.
    tokio::time::advance(std::time::Duration::from_secs(61)).await;
    body_text(client().get(format!("{}/up/text", gw.url))).await;
    assert_eq!(metric(&admin, &skipped("not_json")).await, 1.0);
    assert_eq!(warnings().len(), 2);
}

#[tokio::test]
async fn media_services_v2_requests_carry_their_headers_and_metadata_links_come_back() {
    let (ms, _) = self_aware(|request, me| {
        let headers = request.headers();
        let seen = |n: &str| headers.get(n).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let body = serde_json::json!({
            "odata.metadata": format!("{me}/api/$metadata#Assets"),
            "value": [{"__metadata": {"uri": format!("{me}/api/Assets('nb%3Acid%3AUUID%3A1')")}, "Name": "clip"}],
            "seen": {"x-ms-version": seen("x-ms-version"), "dataserviceversion": seen("dataserviceversion"),
                     "maxdataserviceversion": seen("maxdataserviceversion"), "accept": seen("accept"),
                     "authorization": seen("authorization"), "path": request.uri().path()},
        });
        Response::builder()
            .header("content-type", "application/json;odata=verbose")
            .body(full(body.to_string()))
            .unwrap()
    })
    .await;
    let gw = Azgate::start(&format!(
        "[credentials.ms]\ntype = \"static\"\nheader = \"Authorization\"\nvalue = \"Bearer ms-token\"\n\
         [[routes]]\nprefix = \"/ms\"\npreset = \"media_services_v2\"\naccount = \"acct\"\nregion = \"westeurope\"\n\
         upstream = \"{}/api\"\ncredential = \"ms\"\nrewrite_body_links = true\n",
        ms.url
    ))
    .await;
    let body = support::json(
        client()
            .get(format!("{}/ms/Assets", gw.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let seen = &body["seen"];
    assert_eq!(seen["x-ms-version"], "2.19");
    assert_eq!(seen["dataserviceversion"], "3.0");
    assert_eq!(seen["maxdataserviceversion"], "3.0");
    // The preset adds Accept only when the client sent none; this client sent its own.
    assert_eq!(seen["accept"], "*/*");
    assert_eq!(seen["authorization"], "Bearer ms-token");
    assert_eq!(seen["path"], "/api/Assets");
    assert_eq!(
        body["value"][0]["__metadata"]["uri"],
        format!("{}/ms/Assets('nb%3Acid%3AUUID%3A1')", gw.url)
    );
    assert_eq!(
        body["odata.metadata"],
        format!("{}/ms/$metadata#Assets", gw.url)
    );
}

#[tokio::test]
async fn presets_expand_in_check_and_fill_credential_audiences() {
    support::init();
    let config = azgate::config::parse(
        r#"
        [credentials.arm]
        type = "default"
        [credentials.ms]
        type = "azure_cli"
        [[routes]]
        prefix = "/arm"
        preset = "arm"
        credential = "arm"
        [[routes]]
        prefix = "/ms"
        preset = "media_services_v2"
        account = "acct"
        region = "westeurope"
        credential = "ms"
        [[routes]]
        prefix = "/vi"
        preset = "video_indexer"
        "#,
        "t.toml",
        std::path::Path::new("."),
        &|_| None,
    )
    .unwrap();
    let text = azgate::cli::describe(&config);
    for part in [
        "/arm = arm: upstream https://management.azure.com; credential arm with scope https://management.azure.com/.default",
        "/ms = media_services_v2: upstream https://acct.restv2.westeurope.media.azure.net/api; headers",
        "x-ms-version: 2.19",
        "credential ms with resource https://rest.media.azure.net",
        "/vi = video_indexer: upstream https://api.videoindexer.ai",
        "max_delay 1m 10s",
    ] {
        assert!(text.contains(part), "missing {part:?} in:\n{text}");
    }
    let bad = azgate::config::parse(
        "[[routes]]\nprefix = \"/x\"\npreset = \"media_services_v2\"\n[[routes]]\nprefix = \"/y\"\npreset = \"nope\"\nupstream = \"http://a\"\n[[routes]]\nprefix = \"/z\"\nupstream = \"http://a\"\naccount = \"a\"\n",
        "t.toml",
        std::path::Path::new("."),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        bad.contains("routes[0]: preset \"media_services_v2\" needs `account` and `region`"),
        "{bad}"
    );
    assert!(
        bad.contains("routes[1].preset: unknown preset \"nope\""),
        "{bad}"
    );
    assert!(
        bad.contains("routes[2].account: only applies with a `preset`"),
        "{bad}"
    );
}

#[tokio::test]
async fn a_primary_key_refused_fails_over_to_the_secondary_until_reload() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let upstream = {
        let seen = seen.clone();
        MockUpstream::start(move |request| {
            let key = request.headers()["ocp-apim-subscription-key"]
                .to_str()
                .unwrap()
                .to_string();
            seen.lock().unwrap().push(key.clone());
            async move {
                let status = if key == "NEW-KEY-0002" {
                    StatusCode::OK
                } else {
                    StatusCode::FORBIDDEN
                };
                Response::builder().status(status).body(full("x")).unwrap()
            }
        })
        .await
    };
    let text = support::config_text(&format!(
        "[credentials.apim]\ntype = \"subscription_key\"\nkey = \"OLD-KEY-0001\"\nsecondary_key = \"NEW-KEY-0002\"\n\
         [[routes]]\nprefix = \"/apim\"\nupstream = \"{}\"\ncredential = \"apim\"\n",
        upstream.url
    ));
    let gw = Azgate::start_with(&text, std::path::Path::new("."), &Default::default()).await;
    let c = client();
    let first = c
        .post(format!("{}/apim/orders", gw.url))
        .body("order")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-azgate-attempts"], "2");
    let second = c
        .get(format!("{}/apim/orders", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    assert!(second.headers().get("x-azgate-attempts").is_none());
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["OLD-KEY-0001", "NEW-KEY-0002", "NEW-KEY-0002"]
    );
    let metrics = body_text(c.get(format!("{}/metrics", gw.admin_url.clone().unwrap()))).await;
    assert!(
        metrics.contains("azgate_key_failovers_total{credential=\"apim\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("KEY-000"));

    // A reload puts the primary back in use.
    let url = gw.url.clone();
    let server = gw.into_server();
    server
        .apply(
            azgate::config::parse(&text, "t.toml", std::path::Path::new("."), &|_| None).unwrap(),
        )
        .unwrap();
    let third = c.get(format!("{url}/apim/orders")).send().await.unwrap();
    assert_eq!(third.headers()["x-azgate-attempts"], "2");
    assert_eq!(seen.lock().unwrap()[3], "OLD-KEY-0001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_indexer_upload_streams_with_the_token_injected() {
    const TOTAL: usize = 256 << 20;
    let vi = MockVideoIndexer::start().await;
    let upload = MockUpstream::start(|request| async move {
        let query = request.uri().query().unwrap_or_default().to_string();
        let content_type = request.headers()["content-type"].to_str().unwrap().to_string();
        let mut body = request.into_body();
        let (mut len, mut hash) = (0usize, Sha256::new());
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                len += data.len();
                hash.update(&data);
            }
        }
        let digest: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Response::new(full(serde_json::json!({"query": query, "len": len, "sha256": digest, "content_type": content_type}).to_string()))
    })
    .await;
    let gw = Azgate::start(&format!(
        "[credentials.vi]\ntype = \"video_indexer\"\nlocation = \"trial\"\naccount_id = \"acc-1\"\nsubscription_key = \"VI-KEY\"\napi_url = \"{}\"\n\
         [[routes]]\nprefix = \"/vi\"\npreset = \"video_indexer\"\nupstream = \"{}\"\ncredential = \"vi\"\n",
        vi.url, upload.url
    ))
    .await;
    let boundary = "azgate-boundary-1";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip.mp4\"\r\nContent-Type: video/mp4\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let chunk = vec![0x5au8; 1 << 20];
    let parts = std::iter::once(bytes::Bytes::from(head.clone()))
        .chain((0..TOTAL / chunk.len()).map(move |_| bytes::Bytes::from(chunk.clone())))
        .chain(std::iter::once(bytes::Bytes::from(tail.clone())));
    let mut expected = Sha256::new();
    expected.update(head.as_bytes());
    for _ in 0..TOTAL >> 20 {
        expected.update(vec![0x5au8; 1 << 20]);
    }
    expected.update(tail.as_bytes());
    let expected: String = expected
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let length = head.len() + TOTAL + tail.len();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
        parts.map(Ok::<_, std::io::Error>),
    ));
    let response = client()
        .post(format!(
            "{}/vi/trial/Accounts/acc-1/Videos?name=clip&privacy=Private&accessToken=CLIENT-TOKEN",
            gw.url
        ))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("content-length", length)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = support::json(response).await;
    assert_eq!(
        seen["query"],
        "name=clip&privacy=Private&accessToken=vi-token-1"
    );
    assert_eq!(seen["len"], length);
    assert_eq!(seen["sha256"], expected);
    assert!(
        seen["content_type"]
            .as_str()
            .unwrap()
            .starts_with("multipart/form-data")
    );
    assert_eq!(vi.call_count(), 1);
}

#[test]
fn presets_whose_lists_page_by_body_links_rewrite_them_by_default() {
    support::init();
    let text = r#"
        [[routes]]
        prefix = "/arm"
        preset = "arm"
        [[routes]]
        prefix = "/dc"
        preset = "devcenter"
        endpoint = "x.devcenter.azure.com"
        [[routes]]
        prefix = "/vi"
        preset = "video_indexer"
        [[routes]]
        prefix = "/ams"
        preset = "media_services_v2"
        account = "a"
        region = "westeurope"
        [[routes]]
        prefix = "/arm-raw"
        preset = "arm"
        rewrite_body_links = false
        [[routes]]
        prefix = "/plain"
        upstream = "https://example.com"
    "#;
    let config =
        azgate::config::parse(text, "t.toml", std::path::Path::new("."), &|_| None).unwrap();
    let rewrites: Vec<(&str, bool)> = config
        .routes
        .iter()
        .map(|r| (r.prefix.as_str(), r.rewrite_body_links))
        .collect();
    assert_eq!(
        rewrites,
        [
            ("/arm", true),
            ("/dc", true),
            ("/vi", true),
            ("/ams", false),
            ("/arm-raw", false),
            ("/plain", false),
        ]
    );
}
