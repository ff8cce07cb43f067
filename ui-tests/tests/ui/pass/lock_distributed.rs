//! `lock = "distributed"` on sync and async functions, plain and `Result` returns, with and
//! without `lock_lease`. The default cache is in memory, which has no lock every process shares:
//! a call that misses counts an error in the function's stats and runs the body uncached (never
//! under a weaker lock than the one asked for).
use cachestack::cached;

#[cached(ttl = "5m", lock = "distributed")]
fn plain(id: u64) -> u64 {
    id + 1
}

#[cached(ttl = "5m", lock = "distributed", lock_lease = "3s", lock_timeout = "10s")]
async fn fallible(id: u64) -> Result<u64, cachestack::Error> {
    Ok(id + 2)
}

#[cached(lock = true)]
fn in_process(id: u64) -> u64 {
    id
}

fn main() {
    assert_eq!(plain(1), 2);
    assert_eq!(plain(1), 2);
    let stats = plain_stats();
    assert_eq!((stats.errors, stats.hits), (2, 0), "each call counted the missing lock and ran uncached");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(runtime.block_on(fallible(1)).unwrap(), 3);
    assert_eq!(fallible_stats().errors, 1);
    assert_eq!(in_process(4), 4);
}
