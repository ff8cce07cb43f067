//! A web service whose handlers call `#[cached]` functions over a `mem | redis` stack, with
//! Prometheus metrics at `/metrics` and the manifest of cached functions at `/cachestack` (an
//! HTML page; JSON with `Accept: application/json` or at `/cachestack.json`).
//!
//! Redis comes from `CACHESTACK_TEST_REDIS_URL` (set by `tests/run-all.sh`), else
//! `redis://127.0.0.1:6379/9`.
//!
//! ```text
//! cargo run -p cachestack-examples --features web --example axum_service            # serves on :3000
//! cargo run -p cachestack-examples --features web --example axum_service -- --port 8080
//! cargo run -p cachestack-examples --features web --example axum_service -- --check  # the test
//! ```
//!
//! `--check` (run by `tests/run-all.sh`) serves on a free loopback port, drives the service with
//! a real HTTP client through a scripted sequence and checks what the handlers, `/metrics` and
//! `/cachestack` answer; it exits non-zero on any difference.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cachestack::http::HttpCacheLayer;
use cachestack::{cached, invalidate, Cache, CacheRegistry, ComputeOptions, Manifest, MemoryBackend};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

#[path = "axum_service/check.rs"]
mod check;

/// The registry name of the `mem | redis` stack the functions use.
const CACHE: &str = "web";

/// A product's price, as the slow pricing database answers it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Price {
    sku: String,
    cents: u64,
    /// Which computation produced this value (1 for the first): equal numbers in two answers
    /// mean the second came from the cache.
    computation: u64,
}

/// Stands in for the pricing database.
static PRICES: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
/// How many times `get_price` ran its body.
static COMPUTATIONS: AtomicU64 = AtomicU64::new(0);
/// How many times the `/report/{year}` handler ran (the HTTP cache answers the others).
static REPORTS: AtomicU64 = AtomicU64::new(0);

/// A slow lookup, cached in memory (L1) and Redis (L2) for a minute.
#[cached(cache = "web", ttl = "1m", key = "price:<sku>")]
async fn get_price(sku: &str) -> Price {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cents = PRICES.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|p| p.get(sku).copied());
    let computation = COMPUTATIONS.fetch_add(1, SeqCst) + 1;
    Price { sku: sku.to_owned(), cents: cents.unwrap_or(100 * sku.len() as u64), computation }
}

/// Writes a new price, then removes the cached one from both tiers.
#[invalidate(cache = "web", key = "price:<sku>")]
async fn set_price(sku: &str, cents: u64) -> Result<(), String> {
    PRICES.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashMap::new).insert(sku.to_owned(), cents);
    Ok(())
}

/// An expensive report behind `/report/{year}`: the check never asks for it, and the manifest
/// lists it all the same.
#[cached(cache = "web", ttl = "1h", key = "report:<year>")]
async fn yearly_report(year: u32) -> String {
    tokio::time::sleep(Duration::from_millis(200)).await;
    format!("{year}: all prices went up")
}

/// The routes of the service proper, behind cachestack's HTTP response cache (feature `tower`):
/// GET and HEAD answers kept for 30 s (unless a response's `Cache-Control` says otherwise) in a
/// memory cache of their own, one handler run per cold URL, `x-cache: HIT | MISS | STALE`.
fn api() -> Result<Router, cachestack::Error> {
    let responses = Cache::new(MemoryBackend::with_capacity(10_000));
    let options = ComputeOptions::builder().ttl(Duration::from_secs(30)).build()?;
    let api = Router::new()
        .route("/price/{sku}", get(price_handler).put(set_price_handler))
        .route("/report/{year}", get(report_handler));
    // On the API routes only: `/metrics` and `/cachestack` stay live.
    Ok(api.layer(HttpCacheLayer::new(responses, options)))
}

/// The whole app: the API plus the admin routes.
fn app(prometheus: PrometheusHandle) -> Result<Router, cachestack::Error> {
    let admin = Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics_handler))
        .route("/cachestack", get(manifest_handler))
        .route("/cachestack.json", get(manifest_json_handler))
        .with_state(prometheus);
    Ok(api()?.merge(admin))
}

async fn price_handler(Path(sku): Path<String>) -> Response {
    json_response(serde_json::to_string(&get_price(&sku).await))
}

async fn set_price_handler(Path(sku): Path<String>, body: String) -> Response {
    let Ok(cents) = body.trim().parse::<u64>() else {
        return (StatusCode::BAD_REQUEST, "the body must be a price in cents\n").into_response();
    };
    match set_price(&sku, cents).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn report_handler(Path(year): Path<u32>) -> String {
    REPORTS.fetch_add(1, SeqCst);
    yearly_report(year).await
}

async fn index() -> &'static str {
    "cachestack example service\n\nGET /price/{sku}   PUT /price/{sku} (body: cents)   GET /report/{year}\n\
     GET /metrics       GET /cachestack (HTML, or JSON with Accept: application/json)   GET /cachestack.json\n"
}

/// Prometheus text: cachestack's counters published right before rendering.
async fn metrics_handler(State(prometheus): State<PrometheusHandle>) -> Response {
    cachestack::metrics::export();
    prometheus.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], prometheus.render()).into_response()
}

/// The manifest: JSON when the client asks for it, the HTML page otherwise.
async fn manifest_handler(headers: HeaderMap) -> Response {
    let wants_json = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| media.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    let mut response = if wants_json {
        manifest_json_handler().await
    } else {
        let headers =
            [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CONTENT_SECURITY_POLICY, Manifest::HTML_CSP)];
        (headers, cachestack::manifest().to_html()).into_response()
    };
    // One URL, two representations: caches must key on Accept.
    response.headers_mut().insert(header::VARY, header::HeaderValue::from_static("accept"));
    response
}

async fn manifest_json_handler() -> Response {
    json_response(cachestack::manifest().to_json())
}

fn json_response<E: std::fmt::Display>(json: Result<String, E>) -> Response {
    match json {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let checking = args.iter().any(|a| a == "--check");
    let port = match args.iter().position(|a| a == "--port") {
        Some(at) => args.get(at + 1).ok_or("--port needs a number")?.parse::<u16>()?,
        None => 3000,
    };

    // The recorder first: cachestack's metrics go to whatever recorder is installed.
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    // Redis keys of this example in a namespace of their own (of this test run, when there is one).
    let namespace = match std::env::var("CACHESTACK_TEST_REDIS_RUN") {
        Ok(run) if !run.is_empty() => format!("namespace={run}-axum-service"),
        _ => "namespace=cachestack-axum-service".to_owned(),
    };
    let redis = cachestack_examples::url_from_env("CACHESTACK_TEST_REDIS_URL", "redis://127.0.0.1:6379/9", &namespace);
    let cache = CacheRegistry::global().register_url(CACHE, &format!("mem://?max_entries=10000 | {redis}"))?;
    println!("cache `{CACHE}`: mem:// | {}", cachestack::redact_url(&redis));
    // A clear start. (A Redis that is down does not fail the calls: the stack absorbs it, counts
    // it and logs it; `--check` then fails on the counts.)
    cache.clear().await?;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", if checking { 0 } else { port })).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(axum::serve(listener, app(prometheus)?).into_future());
    if checking {
        let outcome = check::run(&base).await;
        server.abort();
        if let Err(failure) = outcome {
            eprintln!("axum_service --check FAILED: {failure}");
            std::process::exit(1);
        }
        println!("axum_service --check: all checks passed");
        return Ok(());
    }
    println!("serving on {base}");
    for path in ["/price/apple", "/report/2026", "/metrics", "/cachestack", "/cachestack.json"] {
        println!("  {base}{path}");
    }
    server.await??;
    Ok(())
}
