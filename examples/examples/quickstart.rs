//! cachestack in one minute, with no server: a memory cache over a file cache, a slow function
//! that becomes fast, an invalidation, and the stats.
//!
//! ```text
//! cargo run -p cachestack-examples --example quickstart
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cachestack::{cached, invalidate, Cache, CacheRegistry, FileBackend, MemoryBackend, TieredCache};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// Stands in for a database table of user names.
static NAMES: Mutex<Option<HashMap<u64, String>>> = Mutex::new(None);

/// A slow lookup: a database or a remote API in real life.
#[cached(ttl = "10m", key = "user:<id>")]
fn get_user(id: u64) -> Option<User> {
    std::thread::sleep(Duration::from_millis(300));
    let names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    let name = names.as_ref().and_then(|n| n.get(&id).cloned()).unwrap_or_else(|| format!("user-{id}"));
    Some(User { id, name })
}

/// Writes the user, then removes its cached entry (only if the write succeeded).
#[invalidate(key = "user:<id>")]
fn rename_user(id: u64, name: &str) -> Result<(), String> {
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    names.get_or_insert_with(HashMap::new).insert(id, name.to_string());
    Ok(())
}

/// Async functions work the same way; errors are never cached.
#[cached(ttl = "1h")]
async fn daily_report(day: u32) -> Result<String, std::io::Error> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(format!("report for day {day}"))
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    println!("{what:<52} {:>10.1?}", start.elapsed());
    out
}

/// Memory (L1, answers hits without serialising) over files (L2, survives restarts).
fn memory_over_file(dir: &std::path::Path) -> cachestack::Result<Cache> {
    let stack =
        TieredCache::builder().layer(MemoryBackend::with_capacity(10_000)).layer(FileBackend::open(dir)?).build()?;
    Ok(Cache::new(stack))
}

#[tokio::main]
async fn main() -> cachestack::Result<()> {
    let dir = std::env::temp_dir().join("cachestack-quickstart");
    let cache = memory_over_file(&dir)?;
    cache.clear().await?; // start cold, so the demo shows a first slow call
    CacheRegistry::global().set_default(cache.clone());
    println!("default cache: memory over files in {}\n", dir.display());

    // Sync functions are fine inside an async program (and on plain threads).
    let user = tokio::task::spawn_blocking(|| {
        let before = timed("get_user(7), first call: runs the body", || get_user(7));
        println!("  -> {before:?}");
        timed("get_user(7), again: from the memory layer", || get_user(7));
        timed("rename_user(7, \"Ada\"): invalidates user:7", || rename_user(7, "Ada")).ok();
        timed("get_user(7) after the invalidation: runs", || get_user(7))
    })
    .await
    .expect("the demo thread panicked");
    println!("  -> {user:?}\n");

    let started = Instant::now();
    let first = daily_report(1).await;

    println!("{:<52} {:>10.1?}", "daily_report(1).await, first call: runs", started.elapsed());
    let started = Instant::now();
    let again = daily_report(1).await;
    println!("{:<52} {:>10.1?}", "daily_report(1).await, again: from memory", started.elapsed());
    assert_eq!(first.ok(), again.ok());

    let layers = cache.stats().layers;

    // A restart: a fresh memory layer is empty, the file layer still has the entries.
    CacheRegistry::global().set_default(memory_over_file(&dir)?);
    tokio::task::spawn_blocking(|| timed("get_user(7) after a \"restart\": from the file layer", || get_user(7)))
        .await
        .expect("the demo thread panicked");

    let stats = get_user_stats();
    println!(
        "\nget_user stats: {} hits, {} misses, {} waits, {} errors (hit ratio {:.0}%)",
        stats.hits,
        stats.misses,
        stats.waits,
        stats.errors,
        stats.hit_ratio() * 100.0
    );
    let report = daily_report_stats();
    println!("daily_report stats: {} hits, {} misses", report.hits, report.misses);
    println!("layers of the first stack:");
    for layer in layers {
        println!("  layer {:<8} {} hits, {} misses, {} writes", layer.name, layer.hits, layer.misses, layer.writes);
    }
    Ok(())
}
