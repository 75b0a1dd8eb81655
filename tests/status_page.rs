//! The admin status page: `/status` is one self-contained HTML document and `/status.json`
//! the data it polls. The browser tests run headless Chromium against azgate in-process
//! and read the DOM after the page's scripts ran (routes, vending routes with their cache
//! counts, credentials with a live token countdown, the request history, the refresh
//! counter), check that data is only ever
//! inserted as text and that a failed refresh shows a banner while keeping the last data,
//! and leave a screenshot in `target/test-artifacts/status-page.png`.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Response, StatusCode};
use support::browser::{Browser, SKIP_NO_CHROMIUM};
use support::entra::{MockEntra, aadsts_error};
use support::video_indexer::{MockVideoIndexer, token_string, vi_error};
use support::{Azgate, MockUpstream, body_text, client, config_text, full};

const SUBSCRIPTION_KEY: &str = "SUPER-SECRET-SUBSCRIPTION-KEY";
const CLIENT_SECRET: &str = "SUPER-SECRET-CLIENT-SECRET";
/// What the mock Video Indexer's viewer tokens start with; never on the page.
const VIEWER_TOKEN: &str = "vi-viewer-token-";
/// Long enough for the first load and two more refreshes (every 3 s) of virtual time.
const TWO_REFRESHES_MS: u64 = 7_500;

/// A classic Video Indexer that refuses video `gone` (404), fails on video `broken` (500)
/// and hands out `vi-viewer-token-N` otherwise.
async fn video_indexer() -> MockVideoIndexer {
    let vi = MockVideoIndexer::start().await;
    vi.respond_with(|call, n| {
        if call.path.contains("/Videos/gone/") {
            vi_error(404, "BREAKDOWN_NOT_FOUND", "Video 'gone' was not found")
        } else if call.path.contains("/Videos/broken/") {
            vi_error(500, "GENERAL", "Something went wrong")
        } else {
            token_string(&format!("{VIEWER_TOKEN}{n}"))
        }
    });
    vi
}

/// azgate with three credentialed routes and one without: `vi` (a subscription key),
/// `arm` (client_secret at a mock Entra that issues hour-long tokens) and `broken`
/// (client_secret at a mock Entra that refuses the secret); and a vending route
/// `/vi-tokens` for the classic Video Indexer credential `viewer` at `vi`.
async fn gateway(
    upstream: &MockUpstream,
    good: &MockEntra,
    bad: &MockEntra,
    vi: &MockVideoIndexer,
) -> Azgate {
    let text = config_text(&format!(
        r#"
        [credentials.vi]
        type = "subscription_key"
        key = "${{VI_KEY}}"

        [credentials.viewer]
        type = "video_indexer"
        location = "trial"
        account_id = "acc-1"
        subscription_key = "${{VI_KEY}}"
        api_url = "{vi}"

        [credentials.arm]
        type = "client_secret"
        tenant = "contoso"
        client_id = "11111111-2222-3333-4444-555555555555"
        client_secret = "${{ARM_SECRET}}"
        scope = "https://management.azure.com/.default"
        authority = "{good}/"

        [credentials.broken]
        type = "client_secret"
        tenant = "contoso"
        client_id = "66666666-2222-3333-4444-555555555555"
        client_secret = "${{ARM_SECRET}}"
        scope = "https://management.azure.com/.default"
        authority = "{bad}/"

        [[routes]]
        prefix = "/vi"
        upstream = "{upstream}"
        credential = "vi"

        [[routes]]
        prefix = "/arm"
        upstream = "{upstream}"
        credential = "arm"

        [[routes]]
        prefix = "/broken"
        upstream = "{upstream}"
        credential = "broken"

        [[routes]]
        prefix = "/open"
        upstream = "{upstream}"

        [[routes]]
        prefix = "/vi-tokens"
        vend = "viewer"
        "#,
        good = good.url,
        bad = bad.url,
        upstream = upstream.url,
        vi = vi.url,
    ));
    let env = HashMap::from([("VI_KEY", SUBSCRIPTION_KEY), ("ARM_SECRET", CLIENT_SECRET)]);
    Azgate::start_with(&text, Path::new("."), &env).await
}

/// The requests the browser test sends, as (method, path and query).
const SENT: &[(&str, &str)] = &[
    ("GET", "/vi/trial/Accounts/abc/Videos?pageSize=25&skip=0"),
    ("POST", "/arm/subscriptions/sub-1/resourceGroups/rg/deploy"),
    ("GET", "/open/health"),
    ("GET", "/broken/things/7"),
    ("DELETE", "/nowhere/at/all"),
];

/// Token requests on the vending route: a miss, a hit, a refusal and an error.
const VEND_SENT: &[(&str, u16)] = &[
    ("/vi-tokens/videos/v1", 200),
    ("/vi-tokens/videos/v1", 200),
    ("/vi-tokens/videos/gone", 404),
    ("/vi-tokens/videos/broken", 502),
];

async fn send_vend_requests(gw: &Azgate) {
    for (path, want) in VEND_SENT {
        let response = client()
            .get(format!("{}{path}", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), *want, "{path}");
    }
}

async fn send_requests(gw: &Azgate) -> Vec<u16> {
    let http = client();
    let mut statuses = Vec::new();
    for (method, path) in SENT {
        let method = http::Method::from_bytes(method.as_bytes()).unwrap();
        let response = http
            .request(method, format!("{}{path}", gw.url))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    statuses
}

/// `text` as it appears in serialized HTML text content.
fn html_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The number inside the element with id `refresh-count`.
fn refresh_count(dom: &str) -> u32 {
    let marker = "id=\"refresh-count\">";
    let start = dom
        .find(marker)
        .unwrap_or_else(|| panic!("no refresh-count element in:\n{dom}"))
        + marker.len();
    let digits: String = dom[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("refresh-count is not a number in:\n{dom}"))
}

/// The rendered table body with `id`, from `<tbody id=...>` to its `</tbody>`.
fn tbody<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("<tbody id=\"{id}\">");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no {open} in:\n{dom}"));
    let end = dom[start..].find("</tbody>").expect("tbody closes") + start;
    &dom[start..end]
}

fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

#[tokio::test]
async fn status_page_is_self_contained_html_and_json_lists_routes() {
    let upstream = MockUpstream::echo().await;
    let (good, bad) = (MockEntra::start().await, MockEntra::start().await);
    let vi = video_indexer().await;
    let gw = gateway(&upstream, &good, &bad, &vi).await;
    let admin = gw.admin_url.clone().expect("admin listener");
    let http = client();

    let page = http.get(format!("{admin}/status")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let content_type = page.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.starts_with("<!doctype html>"), "{html}");
    for external in [
        "http://",
        "https://",
        "<script src",
        "<link",
        "@import",
        "url(",
        "src=\"//",
    ] {
        assert!(
            !html.to_ascii_lowercase().contains(external),
            "the page refers to an external asset ({external})"
        );
    }
    // The parts the browser test and people rely on.
    for needle in [
        "id=\"refresh-count\"",
        "fetch('status.json'",
        "role=\"alert\"",
        "<th scope=\"col\">",
    ] {
        assert!(html.contains(needle), "the page lacks {needle}");
    }
    assert!(
        !html.contains("innerHTML"),
        "data must reach the DOM as text"
    );

    let json = support::json(
        http.get(format!("{admin}/status.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let prefixes: Vec<&str> = json["routes"]
        .as_array()
        .expect("routes array")
        .iter()
        .map(|r| r["prefix"].as_str().expect("prefix"))
        .collect();
    assert_eq!(prefixes, ["/vi", "/arm", "/broken", "/open"]);
    assert_eq!(json["routes"][0]["credential"], "vi");
    assert_eq!(json["routes"][3]["credential"], serde_json::Value::Null);
    let credentials: Vec<&str> = json["credentials"]
        .as_array()
        .expect("credentials array")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    for name in ["vi", "arm", "broken"] {
        assert!(credentials.contains(&name), "{credentials:?}");
    }
    assert!(!json.to_string().contains(SUBSCRIPTION_KEY));
    assert_eq!(
        json["vend_routes"],
        serde_json::json!([{
            "prefix": "/vi-tokens", "credential": "viewer", "entries": 0, "max_entries": 10000,
            "hits": 0, "misses": 0, "refused": 0, "errors": 0,
        }])
    );

    // A miss, a hit, a refusal and an error: counted, and one token cached (not shown).
    send_vend_requests(&gw).await;
    let text = body_text(http.get(format!("{admin}/status.json"))).await;
    assert!(!text.contains(VIEWER_TOKEN), "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        json["vend_routes"],
        serde_json::json!([{
            "prefix": "/vi-tokens", "credential": "viewer", "entries": 1, "max_entries": 10000,
            "hits": 1, "misses": 1, "refused": 1, "errors": 1,
        }])
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_chromium_shows_routes_credentials_and_history() {
    let Some(browser) = Browser::find() else {
        println!("{SKIP_NO_CHROMIUM}");
        return;
    };
    let upstream = MockUpstream::echo().await;
    let (good, bad) = (MockEntra::start().await, MockEntra::start().await);
    bad.respond_with(|_, _| {
        aadsts_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided.",
        )
    });
    let vi = video_indexer().await;
    let gw = gateway(&upstream, &good, &bad, &vi).await;
    let statuses = send_requests(&gw).await;
    send_vend_requests(&gw).await;
    assert_eq!(statuses[..3], [200, 200, 200], "{statuses:?}");
    assert!(statuses[3] >= 500, "broken credential: {statuses:?}");
    assert_eq!(statuses[4], 404, "no route: {statuses:?}");
    let page = format!("{}/status", gw.admin_url.clone().expect("admin listener"));

    let dom = browser.dump_dom(&page, TWO_REFRESHES_MS).await;

    let count = refresh_count(&dom);
    assert!(count >= 2, "the page refreshed {count} times:\n{dom}");
    assert!(dom.contains("updated "), "no last-refresh time:\n{dom}");
    assert!(
        dom.contains("<div id=\"banner\" role=\"alert\" hidden=\"\">"),
        "the error banner shows although every refresh worked:\n{dom}"
    );
    assert!(dom.contains(env!("CARGO_PKG_VERSION")));

    let routes = tbody(&dom, "routes");
    for prefix in ["/vi", "/arm", "/broken", "/open"] {
        assert!(
            routes.contains(&format!("<code>{prefix}</code>")),
            "route {prefix} missing:\n{routes}"
        );
    }
    assert!(routes.contains(&upstream.url), "{routes}");
    assert!(routes.contains("none (passed through)"), "{routes}");

    assert!(
        dom.contains("<section id=\"vending\" aria-labelledby=\"vending-title\">"),
        "the vending routes section is hidden although there is one:\n{dom}"
    );
    let vending = tbody(&dom, "vend-routes");
    for cell in [
        "<code>/vi-tokens</code>",
        "<td>viewer</td>",
        // Cached tokens, of max_entries; hits, misses and refusals; errors in red.
        "<td class=\"num\"><span title=\"at most 10000\">1<span class=\"muted\"> / 10000</span></span></td>\
         <td class=\"num\">1</td><td class=\"num\">1</td><td class=\"num\">1</td>\
         <td class=\"num\"><span class=\"error\">1</span></td>",
    ] {
        assert!(vending.contains(cell), "no {cell:?} in:\n{vending}");
    }

    let credentials = tbody(&dom, "credentials");
    for name in ["vi", "arm", "broken"] {
        assert!(
            credentials.contains(&format!("<th scope=\"row\">{name}</th>")),
            "credential {name} missing:\n{credentials}"
        );
    }
    for kind in ["subscription_key", "client_secret"] {
        assert!(credentials.contains(kind), "{kind}:\n{credentials}");
    }
    // `arm` holds a token of 3599 s fetched a few (virtual) seconds ago: the countdown ran.
    assert!(
        credentials.contains("data-expires-at") && credentials.contains(">in 59m "),
        "no live expiry countdown:\n{credentials}"
    );
    assert!(
        credentials.contains(" s ago"),
        "no last refresh:\n{credentials}"
    );
    assert!(
        credentials.contains("<span class=\"error\">") && credentials.contains("AADSTS7000215"),
        "the broken credential's error is not shown in red:\n{credentials}"
    );

    let requests = tbody(&dom, "requests");
    for (method, path) in SENT {
        assert!(
            requests.contains(&html_text(path)),
            "request {method} {path} missing:\n{requests}"
        );
    }
    assert!(
        requests.find("/nowhere/at/all") < requests.find("/vi/trial"),
        "history is not newest first:\n{requests}"
    );
    assert!(requests.contains("<span class=\"pill s2xx\">200</span>"));
    assert!(requests.contains("<span class=\"pill s4xx\">404</span>"));
    assert!(requests.contains(&format!("<span class=\"pill s5xx\">{}</span>", statuses[3])));
    let sent = SENT.len() + VEND_SENT.len();
    assert!(dom.contains(&format!("last {sent}, newest first")), "{dom}");

    for secret in [SUBSCRIPTION_KEY, CLIENT_SECRET, "token-1", VIEWER_TOKEN] {
        assert!(!dom.contains(secret), "the page shows a secret: {secret}");
    }

    let png = artifacts_dir().join("status-page.png");
    let _ = std::fs::remove_file(&png);
    browser
        .window(1280, 1200)
        .screenshot(&page, TWO_REFRESHES_MS, &png)
        .await;
    println!("screenshot: {}", png.display());
    gw.stop().await;
}

/// A status.json whose every string is markup, for the escaping test.
fn hostile_status() -> serde_json::Value {
    const MARKUP: &str = "<img src=x onerror=\"document.title='pwned'\">";
    serde_json::json!({
        "version": format!("0.0.0{MARKUP}"),
        "now_ms": 1_900_000_000_000u64,
        "started_ms": 1_899_999_000_000u64,
        "uptime_seconds": 1000.0,
        "draining": false,
        "config": format!("/etc/{MARKUP}.toml"),
        "routes": [{
            "prefix": format!("/r{MARKUP}"),
            "upstream": format!("u{MARKUP}"),
            "credential": format!("c{MARKUP}"),
            "methods": [format!("GET{MARKUP}")],
            "requests": 1, "errors": 0, "p50_ms": 1.5, "p99_ms": 2.5,
        }],
        "credentials": [{
            "name": format!("n{MARKUP}"),
            "type": format!("t{MARKUP}"),
            "source": format!("s{MARKUP}"),
            "has_token": true,
            "expires_at_ms": 1_900_000_600_000u64,
            "last_refresh_ms": 1_899_999_990_000u64,
            "last_error": format!("e{MARKUP}"),
            "fetches": {"success": 1, "failure": 1},
        }],
        "vend_routes": [{
            "prefix": format!("/t{MARKUP}"),
            "credential": format!("v{MARKUP}"),
            "entries": 1, "max_entries": 10, "hits": 2, "misses": 1, "refused": 0, "errors": 0,
        }],
        "requests": [{
            "at_ms": 1_899_999_999_000u64,
            "method": format!("GET{MARKUP}"),
            "route": format!("/r{MARKUP}"),
            "path": format!("/r/<script>document.title='pwned'</script>?a=1&b={MARKUP}"),
            "status": 200, "attempts": 1, "duration_ms": 3.25,
            "request_id": format!("id{MARKUP}"),
        }],
    })
}

/// Serves azgate's page without its CSP (so escaping is all that stands between the data
/// and the DOM), a hostile `status.json` once, then 503s.
async fn hostile_admin(page: String) -> (MockUpstream, Arc<AtomicUsize>) {
    let polls = Arc::new(AtomicUsize::new(0));
    let page = Arc::new(page);
    let server = {
        let polls = polls.clone();
        MockUpstream::start(move |request| {
            let (polls, page) = (polls.clone(), page.clone());
            async move {
                let (status, content_type, body) = match request.uri().path() {
                    "/status" => (200, "text/html; charset=utf-8", page.to_string()),
                    "/status.json" if polls.fetch_add(1, Ordering::SeqCst) == 0 => {
                        (200, "application/json", hostile_status().to_string())
                    }
                    "/status.json" => (
                        503,
                        "application/json",
                        r#"{"error":{"code":"unavailable","message":"admin is restarting"}}"#
                            .to_string(),
                    ),
                    _ => (404, "text/plain", String::new()),
                };
                Response::builder()
                    .status(StatusCode::from_u16(status).unwrap())
                    .header("content-type", content_type)
                    .body(full(body))
                    .unwrap()
            }
        })
        .await
    };
    (server, polls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_inserts_data_as_text_and_keeps_it_when_a_refresh_fails() {
    let Some(browser) = Browser::find() else {
        println!("{SKIP_NO_CHROMIUM}");
        return;
    };
    let upstream = MockUpstream::echo().await;
    let (good, bad) = (MockEntra::start().await, MockEntra::start().await);
    let vi = video_indexer().await;
    let gw = gateway(&upstream, &good, &bad, &vi).await;
    let admin = gw.admin_url.clone().expect("admin listener");
    let page = body_text(client().get(format!("{admin}/status"))).await;
    gw.stop().await;
    let (server, polls) = hostile_admin(page).await;

    let dom = browser
        .dump_dom(&format!("{}/status", server.url), TWO_REFRESHES_MS)
        .await;

    assert!(
        polls.load(Ordering::SeqCst) >= 2,
        "the page did not poll again"
    );
    assert_eq!(refresh_count(&dom), 1, "only the first poll succeeded");
    assert!(
        !dom.contains("<img") && !dom.contains("<script>document"),
        "data was parsed as HTML:\n{dom}"
    );
    assert!(dom.contains("<title>azgate status</title>"), "a script ran");
    let shown = html_text("<img src=x onerror=\"document.title='pwned'\">");
    // Every string of hostile_status is on the page as text: fifteen fields, plus the
    // request path, whose query ends in the same markup.
    assert_eq!(dom.matches(&shown).count(), 16, "{dom}");
    assert!(dom.contains(&html_text(
        "/r/<script>document.title='pwned'</script>?a=1&b="
    )));

    let banner_start = dom.find("<div id=\"banner\"").expect("banner");
    let banner = &dom[banner_start..dom[banner_start..].find("</div>").unwrap() + banner_start];
    assert!(
        !banner.contains("hidden"),
        "the banner is hidden after a failed refresh:\n{banner}"
    );
    assert!(
        banner.contains("status.json answered 503")
            && banner.contains("admin is restarting")
            && banner.contains("Showing data from"),
        "{banner}"
    );
    // The last good data is still on the page under the banner.
    assert!(tbody(&dom, "routes").contains(&shown));
    assert!(tbody(&dom, "requests").contains("3.3 ms"));
}
