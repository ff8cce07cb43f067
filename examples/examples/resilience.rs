//! Resilience with no server: a flaky price service behind `#[cached]` keeps answering when it
//! is down (fail-safe) or slow (soft timeout), a stock level is refreshed before it expires
//! (refresh-ahead), and every call says how it was served (`x-cache`).
//!
//! The cache runs on a manual clock, so the example moves time forward instead of waiting.
//!
//! ```text
//! cargo run -p cachestack-examples --example resilience
//! ```

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use cachestack::{cached, Cache, CacheRegistry, CallStatus, ManualClock, MemoryBackend, Timeout};

/// The pricing service's failures.
#[derive(Debug, Clone, PartialEq)]
enum PriceError {
    Down,
    TimedOut(Duration),
}

/// `hard_timeout` returns `Err(PriceError::from(Timeout))`.
impl From<Timeout> for PriceError {
    fn from(timeout: Timeout) -> Self {
        PriceError::TimedOut(timeout.duration())
    }
}

static SERVICE_DOWN: AtomicBool = AtomicBool::new(false);
static SERVICE_SLOW: AtomicBool = AtomicBool::new(false);
static PRICE_CALLS: AtomicU32 = AtomicU32::new(0);

/// A remote pricing service: sometimes down, sometimes slow.
#[cached(
    cache = "shop",
    key = "price:<sku>",
    ttl = "1m",
    stale_if_error = "1h",
    stale_throttle = "10s",
    timeout = "100ms",
    hard_timeout = "2s",
    jitter = "10%"
)]
async fn price(sku: String) -> Result<u64, PriceError> {
    let call = PRICE_CALLS.fetch_add(1, SeqCst);
    if SERVICE_SLOW.load(SeqCst) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if SERVICE_DOWN.load(SeqCst) {
        return Err(PriceError::Down);
    }
    Ok(sku.len() as u64 * 100 + u64::from(call))
}

static STOCK_CALLS: AtomicU32 = AtomicU32::new(0);

/// A hot key: refreshed in the background once 80% of its TTL has passed, so readers never wait.
#[cached(cache = "shop", key = "stock:<sku>", ttl = "1m", refresh_ahead = "80%", stale_while_revalidate = "30s")]
fn stock(sku: u32) -> u32 {
    1000 - sku - STOCK_CALLS.fetch_add(1, SeqCst)
}

fn show<T: std::fmt::Debug>(what: &str, (value, status): (T, CallStatus)) {
    println!("{what:<52} x-cache: {:<6} {value:?}", status.as_str());
}

#[tokio::main]
async fn main() {
    let clock = Arc::new(ManualClock::new());
    let cache = Cache::new(MemoryBackend::with_capacity(10_000)).with_clock(clock.clone());
    CacheRegistry::global().register("shop", cache.clone());
    let sku = || "abc".to_string();

    println!("-- fail-safe: stale_if_error = \"1h\", stale_throttle = \"10s\"");
    show("first call: the service answers", price_with_status(sku()).await);
    show("second call: from the cache", price_with_status(sku()).await);
    clock.advance(Duration::from_secs(61));
    SERVICE_DOWN.store(true, SeqCst);
    let before = PRICE_CALLS.load(SeqCst);
    show("expired, and the service is down: stale", price_with_status(sku()).await);
    show("still down: stale, the service is left alone", price_with_status(sku()).await);
    println!("{:<52} {}", "calls to the service while down", PRICE_CALLS.load(SeqCst) - before);

    println!("-- soft timeout: timeout = \"100ms\"");
    SERVICE_DOWN.store(false, SeqCst);
    SERVICE_SLOW.store(true, SeqCst);
    clock.advance(Duration::from_secs(11));
    show("back but slow: stale after 100ms", price_with_status(sku()).await);
    cache.background_idle().await; // the slow call finishes in the background
    SERVICE_SLOW.store(false, SeqCst);
    show("the slow call's value, stored meanwhile", price_with_status(sku()).await);

    println!("-- refresh-ahead: refresh_ahead = \"80%\"");
    show("first read", stock_with_status(7));
    clock.advance(Duration::from_secs(50));
    show("after 50 s: a hit that refreshes in the background", stock_with_status(7));
    cache.background_idle().await;
    clock.advance(Duration::from_secs(30));
    show("after 80 s: still a hit, the refreshed value", stock_with_status(7));

    let stats = cache.compute_stats();
    println!(
        "-- stats: {} hits, {} misses, {} stale, {} refreshes, {} failures absorbed",
        stats.hits, stats.misses, stats.stale, stats.refreshes, stats.failures_absorbed
    );
}
