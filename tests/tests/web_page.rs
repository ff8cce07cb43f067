//! The manifest page (`Manifest::to_html`) served by a real HTTP server on loopback and rendered
//! by headless Chromium: a screenshot with no console message and no request but the page's own.
//! The screenshot is the README's: this test writes it to `docs/cachestack-page.png`.
//!
//! Chromium comes from `tests/servers.sh` (Debian's `chromium`); without it the tests fail in CI
//! and are skipped elsewhere.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use cachestack::{cached, invalidate, Cache, CacheRegistry, Manifest, MemoryBackend};
use cachestack_tests::browser::{self, png_size};

/// The screenshot's size in CSS pixels (device scale 1).
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 480;

// ------------------------------------------------------------------------------------------------
// Cached functions for the page: hit ratios of 90, 75, 25 and 0 %, one never called, two
// invalidating functions. (Key templates hold `<` and `>`: the page must escape them.)
// ------------------------------------------------------------------------------------------------

#[cached(cache = "users", ttl = "5m", key = "user:<id>")]
fn get_user(id: u64) -> String {
    format!("user-{id}")
}

#[invalidate(cache = "users", key = "user:<id>")]
fn rename_user(id: u64, name: &str) -> Result<(), String> {
    let _ = (id, name);
    Ok(())
}

#[cached(ttl = "30s", key = "fx:<from>:<to>", cache_none = false)]
fn exchange_rate(from: &str, to: &str) -> Option<u64> {
    Some((from.len() * 1000 + to.len()) as u64)
}

#[cached(ttl = "1m")]
fn search(query: &str) -> Vec<String> {
    vec![format!("results for {query}")]
}

#[cached(ttl = "10m", key = "thumb:<id>", lock = false)]
fn thumbnail(id: u64) -> Vec<u8> {
    vec![id as u8; 16]
}

#[cached(ttl = "1d", key = "report:<month>", version = 2)]
fn monthly_report(month: u32) -> String {
    format!("report {month}")
}

#[invalidate(pattern = "fx:<from>:*")]
fn rates_changed(from: &str) -> Result<(), String> {
    let _ = from;
    Ok(())
}

/// Calls that give every function its counts (once per process: the counters are global).
fn make_traffic() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        CacheRegistry::global().register("users", Cache::new(MemoryBackend::with_capacity(100)));
        for _ in 0..10 {
            assert_eq!(exchange_rate("EUR", "USD"), Some(3003));
        }
        for _ in 0..4 {
            for id in 1..=4 {
                assert_eq!(get_user(id), format!("user-{id}"));
            }
        }
        for query in ["rust", "cache", "redis", "rust"] {
            assert_eq!(search(query).len(), 1);
        }
        assert_eq!(thumbnail(1).len() + thumbnail(2).len(), 32);
    });
}

/// This file's functions in the manifest, with their traffic.
fn page_manifest() -> Manifest {
    make_traffic();
    let mut manifest = cachestack::manifest();
    manifest.functions.retain(|f| f.module == "web_page");
    manifest
}

// ------------------------------------------------------------------------------------------------
// A real HTTP server on loopback that serves one page and records every request
// ------------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Served {
    page: Arc<String>,
    csp: Option<&'static str>,
    requests: Arc<Mutex<Vec<String>>>,
}

struct Server {
    base: String,
    served: Served,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Serves `page` at `/page` (with `csp` as its Content-Security-Policy header); every other
    /// path is a 404. Every request's path is recorded.
    async fn start(page: String, csp: Option<&'static str>) -> Server {
        let served = Served { page: Arc::new(page), csp, requests: Arc::default() };
        let app = Router::new().fallback(serve).with_state(served.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { base, served, task }
    }

    fn page_url(&self) -> String {
        format!("{}/page", self.base)
    }

    fn requests(&self) -> Vec<String> {
        self.served.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(State(served): State<Served>, uri: Uri) -> Response {
    served.requests.lock().unwrap().push(uri.path().to_owned());
    if uri.path() != "/page" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut response = ([(CONTENT_TYPE, "text/html; charset=utf-8")], served.page.to_string()).into_response();
    if let Some(csp) = served.csp {
        response.headers_mut().insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    }
    response
}

// ------------------------------------------------------------------------------------------------
// The tests
// ------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_page_renders_in_chromium_without_console_messages() {
    let Some(chromium) = browser::chromium() else { return };
    let manifest = page_manifest();
    let names: Vec<&str> = manifest.functions.iter().map(|f| f.name).collect();
    assert_eq!(
        names,
        ["exchange_rate", "get_user", "monthly_report", "rates_changed", "rename_user", "search", "thumbnail"]
    );
    let page = manifest.to_html();
    assert!(page.contains("<code>user:&lt;id&gt;</code>") && page.contains("not called yet"));

    let server = Server::start(page, Some(Manifest::HTML_CSP)).await;
    let shot = browser::screenshot(&chromium, &server.page_url(), WIDTH, HEIGHT).await;
    assert!(shot.console.is_empty(), "console messages on the page: {:#?}\n{}", shot.console, shot.log);
    // The page alone: no stylesheet, script, font or image, not even /favicon.ico.
    assert_eq!(server.requests(), ["/page"]);
    assert_eq!(png_size(&shot.png), Some((WIDTH, HEIGHT)), "not a {WIDTH}x{HEIGHT} PNG");
    // A blank page compresses to about 4 KB; the table with its text and bars to much more.
    assert!(shot.png.len() > 10_000, "the screenshot looks blank ({} bytes)", shot.png.len());

    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("cachestack-page.png"), &shot.png).unwrap();
}

/// The detection above catches what it must: console errors, uncaught exceptions, and (through
/// the page's own Content-Security-Policy) anything injected that would load or run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_errors_and_blocked_resources_are_detected() {
    let Some(chromium) = browser::chromium() else { return };
    let broken = "<!doctype html><html><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\">\
                  <title>broken</title></head><body><p>broken</p><script>\
                  console.error(\"deliberate console error\"); notDefinedAnywhere();</script></body></html>";
    let server = Server::start(broken.to_owned(), None).await;
    let shot = browser::screenshot(&chromium, &server.page_url(), 400, 300).await;
    let console = shot.console.join("\n");
    assert!(console.contains("\"deliberate console error\""), "console.error missed in:\n{}", shot.log);
    assert!(console.contains("notDefinedAnywhere is not defined"), "the exception missed in:\n{}", shot.log);

    // The manifest page with an image and a script slipped in: its own CSP blocks both (no
    // request leaves) and each block is a console message.
    let injected = page_manifest()
        .to_html()
        .replace("</body>", "<img src=\"/tracker.png\"><script>document.title = \"ran\";</script></body>");
    let server = Server::start(injected, None).await;
    let shot = browser::screenshot(&chromium, &server.page_url(), 400, 300).await;
    let console = shot.console.join("\n");
    assert!(console.contains("/tracker.png") && console.contains("Content Security Policy"), "{}", shot.log);
    assert!(console.contains("inline script"), "the blocked script missed in:\n{}", shot.log);
    assert_eq!(server.requests(), ["/page"]);
}
