//! The HTTP response cache (`cachestack::http::HttpCacheLayer`, feature `tower`) in front of a
//! real axum server bound to 127.0.0.1:0, driven by a real HTTP client (reqwest): `x-cache`
//! headers and handler runs, HEAD, request and response `Cache-Control`, `Vary`, statuses, the
//! body limit, single flight under 1000 concurrent requests, stale-if-error,
//! stale-while-revalidate, and a `mem | redis` stack (`CACHESTACK_TEST_REDIS_URL`).
//!
//! Freshness runs on the cache's `ManualClock` (no sleeps); concurrency is synchronised on the
//! engine's counters and a semaphore the handler waits on.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use axum::Router;
use cachestack::http::HttpCacheLayer;
use cachestack::{Cache, ComputeOptions, ManualClock, MemoryBackend};
use cachestack_tests::sync::{within_guard, yield_until};
use tokio::sync::Semaphore;

const BIG: usize = 64 * 1024;
const LIMIT: usize = 1024;

/// What the handler did: runs per path, a switch that makes `/flaky` fail, a gate `/gated`
/// waits at.
struct Handlers {
    runs: Mutex<HashMap<String, usize>>,
    failing: AtomicBool,
    gate: Semaphore,
}

impl Default for Handlers {
    fn default() -> Self {
        Handlers { runs: Mutex::default(), failing: AtomicBool::new(false), gate: Semaphore::new(0) }
    }
}

impl Handlers {
    fn runs(&self, path: &str) -> usize {
        self.runs.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn run(&self, path: &str) -> usize {
        let mut runs = self.runs.lock().unwrap();
        let n = runs.entry(path.to_string()).or_default();
        *n += 1;
        *n
    }
}

fn response(status: StatusCode, headers: &[(&'static str, &'static str)], body: impl Into<Body>) -> Response<Body> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    for (name, value) in headers {
        response.headers_mut().append(*name, HeaderValue::from_static(value));
    }
    response
}

/// One handler for every path; what it answers depends on the path.
async fn handle(handlers: Arc<Handlers>, request: Request<Body>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let n = handlers.run(&path);
    let ok = |headers: &[(&'static str, &'static str)]| response(StatusCode::OK, headers, format!("{path} #{n}"));
    match path.as_str() {
        "/method" => response(StatusCode::OK, &[], request.method().to_string()),
        "/no-store" => ok(&[("cache-control", "no-store")]),
        "/private" => ok(&[("cache-control", "private, max-age=60")]),
        "/max-age" => ok(&[("cache-control", "public, max-age=10")]),
        "/s-maxage" => ok(&[("cache-control", "max-age=100, s-maxage=5")]),
        "/vary-star" => ok(&[("vary", "*")]),
        "/vary-cookie" => ok(&[("vary", "cookie")]),
        "/lang" => {
            let lang = request.headers().get("accept-language").map(|v| v.to_str().unwrap().to_string());
            let body = format!("hello {} #{n}", lang.unwrap_or_default());
            response(StatusCode::OK, &[("vary", "Accept-Language")], body)
        }
        "/missing" => response(StatusCode::NOT_FOUND, &[], format!("no #{n}")),
        "/big" => {
            let chunks = (0..BIG / 4096).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![b'a' + i as u8; 4096])));
            response(StatusCode::OK, &[], Body::from_stream(futures_util::stream::iter(chunks)))
        }
        "/big-declared" => response(StatusCode::OK, &[], vec![b'z'; BIG]),
        "/flaky" if handlers.failing.load(SeqCst) => response(StatusCode::SERVICE_UNAVAILABLE, &[], "down"),
        "/gated" => {
            handlers.gate.acquire().await.unwrap().forget();
            ok(&[])
        }
        _ => ok(&[("x-served-by", "handler")]),
    }
}

/// A server on loopback behind the layer, with a client for it.
struct Server {
    base: String,
    client: reqwest::Client,
    handlers: Arc<Handlers>,
    cache: Cache,
    clock: Arc<ManualClock>,
}

/// What a request got.
#[derive(Debug)]
struct Got {
    status: StatusCode,
    x_cache: String,
    age: Option<u64>,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

impl Server {
    /// Serves the handlers behind `layer(cache)`, the cache in memory on a manual clock.
    async fn start(layer: impl FnOnce(Cache) -> HttpCacheLayer) -> Server {
        let clock = Arc::new(ManualClock::new());
        let cache = Cache::new(MemoryBackend::with_capacity(10_000)).with_clock(clock.clone());
        Self::start_with(cache, clock, layer).await
    }

    async fn start_with(cache: Cache, clock: Arc<ManualClock>, layer: impl FnOnce(Cache) -> HttpCacheLayer) -> Server {
        let handlers = Arc::new(Handlers::default());
        let state = handlers.clone();
        let app = Router::new()
            .fallback(move |request: Request<Body>| handle(state.clone(), request))
            .layer(layer(cache.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        // reqwest is built without a TLS provider of its own (plain HTTP here; ring for the rest).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Server { base, client: reqwest::Client::new(), handlers, cache, clock }
    }

    async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Got {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = within_guard(request.send()).await.unwrap();
        let headers = response.headers().clone();
        let x_cache = headers.get("x-cache").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let age = headers.get("age").map(|v| v.to_str().unwrap().parse().unwrap());
        let status = response.status();
        let body = within_guard(response.bytes()).await.unwrap();
        Got { status, x_cache, age, headers, body }
    }

    async fn get(&self, path: &str) -> Got {
        self.send(Method::GET, path, &[]).await
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}

fn options(ttl: u64) -> ComputeOptions {
    ComputeOptions::builder().ttl(Duration::from_secs(ttl)).build().unwrap()
}

fn plain(cache: Cache) -> HttpCacheLayer {
    HttpCacheLayer::new(cache, options(60))
}

/// The body and `x-cache` of a response.
fn seen(got: &Got) -> (&str, &str) {
    (std::str::from_utf8(&got.body).unwrap(), got.x_cache.as_str())
}

#[tokio::test]
async fn miss_then_hit_runs_the_handler_once() {
    let s = Server::start(plain).await;
    let first = s.get("/page?a=1").await;
    assert_eq!((first.status, seen(&first)), (StatusCode::OK, ("/page #1", "MISS")));
    assert_eq!(first.age, None, "no Age on a miss");
    s.advance(7);
    let second = s.get("/page?a=1").await;
    assert_eq!(seen(&second), ("/page #1", "HIT"));
    assert_eq!(second.age, Some(7), "Age counts from the store time on the cache's clock");
    assert_eq!(second.headers["content-length"], "8");
    assert_eq!(s.handlers.runs("/page"), 1);

    // Another query is another entry; POST is not cached and carries no x-cache.
    assert_eq!(seen(&s.get("/page?a=2").await), ("/page #2", "MISS"));
    let post = s.send(Method::POST, "/page?a=1", &[]).await;
    assert_eq!((seen(&post).0, post.headers.contains_key("x-cache")), ("/page #3", false));
    assert_eq!(seen(&s.get("/page?a=1").await), ("/page #1", "HIT"));
}

#[tokio::test]
async fn head_shares_the_get_entry() {
    let s = Server::start(plain).await;
    // A cold HEAD asks the handler for the GET response, and fills the entry.
    let head = s.send(Method::HEAD, "/method", &[]).await;
    assert_eq!((head.status, head.x_cache.as_str(), head.body.len()), (StatusCode::OK, "MISS", 0));
    assert_eq!(head.headers["content-length"], "3");
    let get = s.get("/method").await;
    assert_eq!(seen(&get), ("GET", "HIT"));
    let head = s.send(Method::HEAD, "/method", &[]).await;
    assert_eq!((head.x_cache.as_str(), head.body.len()), ("HIT", 0));
    assert_eq!(head.headers["content-length"], "3");
    assert_eq!(s.handlers.runs("/method"), 1);
}

#[tokio::test]
async fn request_cache_control_no_store_bypasses_and_no_cache_refreshes() {
    let s = Server::start(plain).await;
    assert_eq!(seen(&s.get("/page").await), ("/page #1", "MISS"));
    // no-store: the handler answers; the cache is neither read nor written.
    let bypass = s.send(Method::GET, "/page", &[("cache-control", "no-store")]).await;
    assert_eq!(seen(&bypass), ("/page #2", "MISS"));
    assert_eq!(seen(&s.get("/page").await), ("/page #1", "HIT"));
    // no-cache (and Pragma: no-cache): the handler answers and its response replaces the entry.
    let refreshed = s.send(Method::GET, "/page", &[("cache-control", "no-cache")]).await;
    assert_eq!(seen(&refreshed), ("/page #3", "MISS"));
    assert_eq!(seen(&s.get("/page").await), ("/page #3", "HIT"));
    let pragma = s.send(Method::GET, "/page", &[("pragma", "no-cache")]).await;
    assert_eq!(seen(&pragma), ("/page #4", "MISS"));
    assert_eq!(seen(&s.get("/page").await), ("/page #4", "HIT"));
    assert_eq!(s.handlers.runs("/page"), 4);
}

#[tokio::test]
async fn response_no_store_private_and_vary_star_are_not_stored() {
    let s = Server::start(plain).await;
    for path in ["/no-store", "/private", "/vary-star", "/vary-cookie"] {
        assert_eq!(seen(&s.get(path).await), (format!("{path} #1").as_str(), "MISS"), "{path}");
        assert_eq!(seen(&s.get(path).await), (format!("{path} #2").as_str(), "MISS"), "{path}");
    }
}

#[tokio::test]
async fn max_age_s_maxage_and_the_default_ttl_set_freshness() {
    let s = Server::start(plain).await;
    for path in ["/max-age", "/s-maxage", "/default"] {
        assert_eq!(seen(&s.get(path).await).1, "MISS");
    }
    s.advance(4);
    for path in ["/max-age", "/s-maxage", "/default"] {
        assert_eq!(seen(&s.get(path).await).1, "HIT", "{path} at 4 s");
    }
    // s-maxage=5 wins over max-age=100 (a shared cache).
    s.advance(2);
    assert_eq!(seen(&s.get("/s-maxage").await), ("/s-maxage #2", "MISS"));
    assert_eq!(seen(&s.get("/max-age").await), ("/max-age #1", "HIT"));
    // max-age=10 wins over the layer's 60 s.
    s.advance(5);
    assert_eq!(seen(&s.get("/max-age").await), ("/max-age #2", "MISS"));
    assert_eq!(seen(&s.get("/default").await), ("/default #1", "HIT"));
    // The layer's TTL: 60 s.
    s.advance(50);
    assert_eq!(seen(&s.get("/default").await), ("/default #2", "MISS"));
}

#[tokio::test]
async fn configured_vary_headers_get_an_entry_per_value() {
    let s = Server::start(|cache| plain(cache).vary([header::ACCEPT_LANGUAGE])).await;
    let lang = |l| [("accept-language", l)];
    assert_eq!(seen(&s.send(Method::GET, "/lang", &lang("en")).await), ("hello en #1", "MISS"));
    assert_eq!(seen(&s.send(Method::GET, "/lang", &lang("fr")).await), ("hello fr #2", "MISS"));
    assert_eq!(seen(&s.send(Method::GET, "/lang", &lang("en")).await), ("hello en #1", "HIT"));
    assert_eq!(seen(&s.send(Method::GET, "/lang", &lang("fr")).await), ("hello fr #2", "HIT"));
    assert_eq!(seen(&s.get("/lang").await), ("hello  #3", "MISS"));
    assert_eq!(s.handlers.runs("/lang"), 3);

    // Without the header configured, a response that varies on it is not stored.
    let unconfigured = Server::start(plain).await;
    for n in 1..=2 {
        let got = unconfigured.send(Method::GET, "/lang", &lang("en")).await;
        assert_eq!(seen(&got), (format!("hello en #{n}").as_str(), "MISS"));
    }
}

#[tokio::test]
async fn only_configured_statuses_are_stored() {
    let s = Server::start(plain).await;
    let first = s.get("/missing").await;
    assert_eq!((first.status, seen(&first)), (StatusCode::NOT_FOUND, ("no #1", "MISS")));
    assert_eq!(seen(&s.get("/missing").await), ("no #2", "MISS"));

    let with_404 = Server::start(|cache| plain(cache).statuses([StatusCode::OK, StatusCode::NOT_FOUND])).await;
    assert_eq!(seen(&with_404.get("/missing").await), ("no #1", "MISS"));
    let second = with_404.get("/missing").await;
    assert_eq!((second.status, seen(&second)), (StatusCode::NOT_FOUND, ("no #1", "HIT")));
}

#[tokio::test]
async fn a_body_over_the_limit_passes_through_whole_and_is_not_stored() {
    let s = Server::start(|cache| plain(cache).max_body_bytes(LIMIT)).await;
    let expected: Vec<u8> = (0..BIG / 4096).flat_map(|i| vec![b'a' + i as u8; 4096]).collect();
    for _ in 0..2 {
        let got = s.get("/big").await;
        assert_eq!((got.status, got.x_cache.as_str()), (StatusCode::OK, "MISS"));
        assert_eq!(got.body.len(), BIG);
        assert!(got.body[..] == expected[..], "the streamed body arrives complete and in order");
        let declared = s.get("/big-declared").await;
        assert_eq!((declared.x_cache.as_str(), declared.body.len()), ("MISS", BIG));
        assert!(declared.body.iter().all(|b| *b == b'z'));
    }
    assert_eq!((s.handlers.runs("/big"), s.handlers.runs("/big-declared")), (2, 2));
    // A small body is stored as usual.
    s.get("/page").await;
    assert_eq!(s.get("/page").await.x_cache, "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_for_a_cold_url_run_the_handler_once() {
    const N: usize = 1000;
    let s = Arc::new(Server::start(plain).await);
    let requests: Vec<_> = (0..N)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.get("/gated").await })
        })
        .collect();
    // Every request but the handler's own waits for its response (single flight).
    let cache = s.cache.clone();
    within_guard(yield_until(move || cache.compute_stats().waiting == N - 1)).await;
    assert_eq!(s.handlers.runs("/gated"), 1);
    s.handlers.gate.add_permits(N);

    let mut statuses: HashMap<String, usize> = HashMap::new();
    for request in requests {
        let got = within_guard(request).await.unwrap();
        assert_eq!((got.status, seen(&got).0), (StatusCode::OK, "/gated #1"));
        *statuses.entry(got.x_cache).or_default() += 1;
    }
    assert_eq!(s.handlers.runs("/gated"), 1, "one handler execution");
    assert_eq!(statuses, HashMap::from([("MISS".to_string(), 1), ("HIT".to_string(), N - 1)]));
    assert_eq!(s.cache.compute_stats().waited, (N - 1) as u64);
}

#[tokio::test]
async fn stale_if_error_answers_a_failing_handler_with_the_old_response() {
    let options = ComputeOptions::builder()
        .ttl(Duration::from_secs(10))
        .stale_if_error(Duration::from_secs(3600))
        .stale_throttle(Duration::from_secs(5))
        .build()
        .unwrap();
    let s = Server::start(|cache| HttpCacheLayer::new(cache, options)).await;
    assert_eq!(seen(&s.get("/flaky").await), ("/flaky #1", "MISS"));
    s.advance(11);
    s.handlers.failing.store(true, SeqCst);
    let stale = s.get("/flaky").await;
    assert_eq!((stale.status, seen(&stale)), (StatusCode::OK, ("/flaky #1", "STALE")));
    assert_eq!(stale.age, Some(11));
    // Within stale_throttle the handler is not asked again.
    assert_eq!(seen(&s.get("/flaky").await), ("/flaky #1", "STALE"));
    assert_eq!(s.handlers.runs("/flaky"), 2);
    // Recovered, past the throttle: a fresh response.
    s.handlers.failing.store(false, SeqCst);
    s.advance(6);
    assert_eq!(seen(&s.get("/flaky").await), ("/flaky #3", "MISS"));
    assert_eq!(seen(&s.get("/flaky").await), ("/flaky #3", "HIT"));

    // Without a stored response the failure reaches the client.
    s.handlers.failing.store(true, SeqCst);
    let failed = s.get("/flaky?other").await;
    assert_eq!((failed.status, seen(&failed)), (StatusCode::SERVICE_UNAVAILABLE, ("down", "MISS")));
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let options = ComputeOptions::builder()
        .ttl(Duration::from_secs(10))
        .stale_while_revalidate(Duration::from_secs(60))
        .build()
        .unwrap();
    let s = Server::start(|cache| HttpCacheLayer::new(cache, options)).await;
    assert_eq!(seen(&s.get("/page").await), ("/page #1", "MISS"));
    s.advance(11);
    assert_eq!(seen(&s.get("/page").await), ("/page #1", "STALE"));
    within_guard(s.cache.background_idle()).await;
    assert_eq!(s.handlers.runs("/page"), 2, "one background refresh");
    assert_eq!(seen(&s.get("/page").await), ("/page #2", "HIT"));
    // Past both windows: a plain miss.
    s.advance(100);
    assert_eq!(seen(&s.get("/page").await), ("/page #3", "MISS"));
}

#[tokio::test]
async fn a_memory_over_redis_stack_serves_another_process_view_from_redis() {
    let Some(redis) = cachestack_tests::server_url("CACHESTACK_TEST_REDIS_URL", "redis") else { return };
    // Under this run's prefix: tests/servers.sh removes the run's keys at exit.
    let namespace = match std::env::var("CACHESTACK_TEST_REDIS_RUN") {
        Ok(run) if !run.is_empty() => cachestack_tests::conformance::unique_namespace(&format!("{run}-http")),
        _ => cachestack_tests::conformance::unique_namespace("http"),
    };
    let sep = if redis.contains('?') { '&' } else { '?' };
    let url = format!("mem://?max_entries=100 | {redis}{sep}namespace={namespace}&timeout=5s");
    let stack = |clock: &Arc<ManualClock>| Cache::from_url(&url).unwrap().with_clock(clock.clone());

    let clock = Arc::new(ManualClock::new());
    let first = Server::start_with(stack(&clock), clock.clone(), plain).await;
    assert_eq!(seen(&first.get("/page?x=1").await), ("/page #1", "MISS"));
    assert_eq!(seen(&first.get("/page?x=1").await), ("/page #1", "HIT"));

    // A second server with its own memory tier finds the response in Redis.
    let second = Server::start_with(stack(&clock), clock.clone(), plain).await;
    clock.advance(Duration::from_secs(3));
    let got = second.get("/page?x=1").await;
    assert_eq!((seen(&got), got.age), (("/page #1", "HIT"), Some(3)));
    assert_eq!(got.headers["x-served-by"], "handler");
    assert_eq!(second.handlers.runs("/page"), 0);
    first.cache.clear().await.unwrap();
}
