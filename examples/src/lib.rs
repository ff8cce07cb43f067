//! Shared code of the server examples (`redis`, `postgres`, `memcached`, `object_store`): the same cached
//! function run against whichever cache the example registers under the name `"demo"`.

use std::time::{Duration, Instant};

use cachestack::{cached, CacheRegistry};

/// A product price, as a slow pricing service would return it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Price {
    /// Stock-keeping unit.
    pub sku: String,
    /// Price in cents.
    pub cents: u64,
}

/// A slow lookup cached in the registry's `"demo"` cache; errors are never cached.
#[cached(cache = "demo", ttl = "1m", key = "price:<sku>", on_cache_error = "propagate")]
pub async fn price(sku: &str) -> Result<Price, cachestack::Error> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(Price { sku: sku.to_string(), cents: 100 * sku.len() as u64 })
}

/// Registers `url` as the cache `"demo"`, then shows a miss, a hit, an invalidation and the stats.
/// Cache errors propagate here (`on_cache_error = "propagate"`), so an unreachable server is a
/// clear error instead of a silently uncached run.
pub async fn run_demo(url: &str) -> Result<(), cachestack::Error> {
    let cache = CacheRegistry::global().register_url("demo", url)?;
    println!("cache: {}", cachestack::redact_url(url));
    cache.clear().await?;

    let started = Instant::now();
    let first = price("sku-123").await?;
    println!("{:<44} {:>10.1?}  {first:?}", "price(\"sku-123\"), first call: runs", started.elapsed());
    let started = Instant::now();
    let again = price("sku-123").await?;
    println!("{:<44} {:>10.1?}", "price(\"sku-123\"), again: from the cache", started.elapsed());
    assert_eq!(first, again);

    assert!(price_invalidate("sku-123").await?, "the entry was cached");
    println!("price_invalidate(\"sku-123\"): removed");
    let stats = price_stats();
    println!("price stats: {} hits, {} misses, {} errors", stats.hits, stats.misses, stats.errors);
    let backend = cache.stats();
    println!(
        "backend {}: {} hits, {} misses, {} writes, {} errors",
        backend.name, backend.hits, backend.misses, backend.writes, backend.errors
    );
    if stats.hits != 1 || stats.errors != 0 {
        return Err(cachestack::Error::config(format!("expected one hit and no errors, got {stats:?}")));
    }
    Ok(())
}

/// The URL from environment variable `var` (or `default`), with `option` appended to its query so
/// the example keeps to its own table or namespace.
pub fn url_from_env(var: &str, default: &str, option: &str) -> String {
    let base = std::env::var(var).ok().filter(|u| !u.is_empty()).unwrap_or_else(|| default.to_string());
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}{option}")
}
