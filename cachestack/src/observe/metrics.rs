//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`): what
//! Rust libraries emit to, and a no-op until the application installs a recorder (a Prometheus
//! exporter, an OpenTelemetry bridge...).
//!
//! Two kinds of samples:
//!
//! - **Counters and gauges, exported from the counters cachestack keeps anyway** by [`export`]:
//!   call it right before your exporter renders (or on a timer). The hit path stays as it is,
//!   thread-striped counters and nothing shared: `export` reads them and publishes their totals
//!   (`Counter::absolute`). [`export_every`] does it on a timer, for recorders that push.
//! - **Latency histograms, recorded as things happen**: every store operation through the
//!   [`Observe`](crate::layer::Observe) layer, and every `#[cached]` call that the in-process
//!   cache did not answer (hits are not timed: they take nanoseconds).
//!
//! Every label value is bounded: cache names, store names, function paths, operation names and
//! outcomes. Keys never appear in labels.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `cachestack_hits_total` | cache, layer | lookups a store (a tier of a stack) answered |
//! | `cachestack_misses_total` | cache, layer | lookups it did not |
//! | `cachestack_writes_total` | cache, layer | entries written |
//! | `cachestack_deletes_total` | cache, layer | delete calls |
//! | `cachestack_errors_total` | cache, layer | failed operations, unusable stored values |
//! | `cachestack_evictions_total` | cache, layer | entries evicted for size |
//! | `cachestack_backfills_total` | cache, layer | entries copied up from a slower tier |
//! | `cachestack_entries` (gauge) | cache, layer | entries held, when the store can tell |
//! | `cachestack_function_hits_total` | cache, function | calls answered from the cache |
//! | `cachestack_function_misses_total` | cache, function | calls that computed (or waited) |
//! | `cachestack_function_waits_total` | cache, function | single-flight waits |
//! | `cachestack_function_errors_total` | cache, function | cache failures in calls |
//! | `cachestack_function_stale_total` | cache, function | stale values served |
//! | `cachestack_function_refreshes_total` | cache, function | background refreshes |
//! | `cachestack_function_in_flight` (gauge) | cache, function | computations running |
//! | `cachestack_operation_duration_seconds` (histogram) | cache, layer, op, outcome | store operations |
//! | `cachestack_call_duration_seconds` (histogram) | cache, function, outcome | `#[cached]` calls past the in-process cache |
//! | `cachestack_backplane_messages_total` | channel, outcome | [backplane](crate::backplane) messages `sent`, `received`, `dropped` |
//! | `cachestack_backplane_reconnects_total` | channel | subscriptions established again after a failure |
//! | `cachestack_backplane_recovery_clears_total` | channel | in-process layers cleared after a lost subscription |
//!
//! `layer` is the store's name (`memory`, `redis`, `file`, ...); for a stack, each tier's.
//! `function` is a `#[cached]` function's path (`my_app::users::get_user`), or
//! `Cache::get_or_compute` for the resilience engine's calls on a cache. `cache` is the name
//! the cache is registered under (`default` for the default cache).
//!
//! ```
//! # #[cfg(feature = "metrics")] {
//! #[cachestack::cached]
//! fn double(n: u64) -> u64 { n * 2 }
//!
//! double(1);
//! double(1);
//! cachestack::metrics::export(); // publishes the totals to the installed recorder, if any
//! # }
//! ```

use std::time::Duration;

use ::metrics::{counter, gauge, histogram, Label};

use crate::registry::{CacheRegistry, DEFAULT_NAME};
use crate::store::BackendStats;

/// Store lookups answered, per cache and layer.
pub const HITS: &str = "cachestack_hits_total";
/// Store lookups not answered.
pub const MISSES: &str = "cachestack_misses_total";
/// Entries written.
pub const WRITES: &str = "cachestack_writes_total";
/// Delete calls.
pub const DELETES: &str = "cachestack_deletes_total";
/// Failed store operations and unusable stored values.
pub const ERRORS: &str = "cachestack_errors_total";
/// Entries evicted to respect a size bound.
pub const EVICTIONS: &str = "cachestack_evictions_total";
/// Entries copied into a faster tier.
pub const BACKFILLS: &str = "cachestack_backfills_total";
/// Entries held (gauge).
pub const ENTRIES: &str = "cachestack_entries";
/// Calls answered from the cache, per cache and function.
pub const FUNCTION_HITS: &str = "cachestack_function_hits_total";
/// Calls that computed or waited for a computation.
pub const FUNCTION_MISSES: &str = "cachestack_function_misses_total";
/// Calls that waited for another call computing the same key (single flight).
pub const FUNCTION_WAITS: &str = "cachestack_function_waits_total";
/// Cache failures met by calls.
pub const FUNCTION_ERRORS: &str = "cachestack_function_errors_total";
/// Calls answered with a stale value.
pub const FUNCTION_STALE: &str = "cachestack_function_stale_total";
/// Background refreshes started.
pub const FUNCTION_REFRESHES: &str = "cachestack_function_refreshes_total";
/// Computations running now (gauge).
pub const FUNCTION_IN_FLIGHT: &str = "cachestack_function_in_flight";
/// Backplane messages, per channel and outcome (`sent`, `received`, `dropped`).
pub const BACKPLANE_MESSAGES: &str = "cachestack_backplane_messages_total";
/// Backplane subscriptions established again after a failure.
pub const BACKPLANE_RECONNECTS: &str = "cachestack_backplane_reconnects_total";
/// In-process layers cleared after a lost backplane subscription.
pub const BACKPLANE_RECOVERY_CLEARS: &str = "cachestack_backplane_recovery_clears_total";
/// Latency of store operations (histogram, seconds).
pub const OPERATION_DURATION: &str = "cachestack_operation_duration_seconds";
/// Latency of `#[cached]` calls the in-process cache did not answer (histogram, seconds).
pub const CALL_DURATION: &str = "cachestack_call_duration_seconds";

/// The `function` label of the resilience engine's calls (`Cache::get_or_compute`).
pub const GET_OR_COMPUTE: &str = "Cache::get_or_compute";

/// Publishes the counters of every registered cache (per store, per tier of a stack, and of
/// `Cache::get_or_compute`) and of every `#[cached]` function in the binary to the installed
/// recorder, as totals. Cheap (a walk of the registry and the manifest): call it before each
/// scrape. Without a recorder it does nothing useful and costs little.
pub fn export() {
    for (name, cache) in CacheRegistry::global().named_caches() {
        export_store(&name, &cache.backend().stats());
        let compute = cache.compute_stats();
        let labels = function_labels(&name, GET_OR_COMPUTE);
        counter!(FUNCTION_HITS, labels.iter()).absolute(compute.hits);
        counter!(FUNCTION_MISSES, labels.iter()).absolute(compute.misses);
        counter!(FUNCTION_WAITS, labels.iter()).absolute(compute.waited);
        counter!(FUNCTION_ERRORS, labels.iter()).absolute(compute.cache_errors);
        counter!(FUNCTION_STALE, labels.iter()).absolute(compute.stale);
        counter!(FUNCTION_REFRESHES, labels.iter()).absolute(compute.refreshes);
        gauge!(FUNCTION_IN_FLIGHT, labels.iter()).set(compute.running as f64);
    }
    if let Some(backplane) = CacheRegistry::global().backplane() {
        export_backplane(&backplane);
    }
    for function in crate::manifest().functions {
        let Some(stats) = function.stats else { continue };
        let labels = function_labels(function.cache.unwrap_or(DEFAULT_NAME), stats.name);
        counter!(FUNCTION_HITS, labels.iter()).absolute(stats.hits);
        counter!(FUNCTION_MISSES, labels.iter()).absolute(stats.misses);
        counter!(FUNCTION_WAITS, labels.iter()).absolute(stats.waits);
        counter!(FUNCTION_ERRORS, labels.iter()).absolute(stats.errors);
        gauge!(FUNCTION_IN_FLIGHT, labels.iter()).set(stats.in_flight as f64);
    }
}

/// Calls [`export`] every `interval` on cachestack's runtime, for recorders that push (an
/// OpenTelemetry bridge, StatsD) rather than render on a scrape. Stops when the handle is
/// aborted. Fails only when cachestack's runtime cannot start.
///
/// ```
/// # #[cfg(feature = "metrics")] {
/// let exporting = cachestack::metrics::export_every(std::time::Duration::from_secs(10)).unwrap();
/// exporting.abort();
/// # }
/// ```
pub fn export_every(interval: Duration) -> crate::Result<tokio::task::JoinHandle<()>> {
    let handle = crate::rt::handle()?;
    Ok(handle.spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            export();
        }
    }))
}

/// A store's counters, or each tier's for a stack.
fn export_store(cache: &str, stats: &BackendStats) {
    if !stats.layers.is_empty() {
        for layer in &stats.layers {
            export_store(cache, layer);
        }
        return;
    }
    let labels = [Label::new("cache", cache.to_owned()), Label::new("layer", stats.name.clone())];
    counter!(HITS, labels.iter()).absolute(stats.hits);
    counter!(MISSES, labels.iter()).absolute(stats.misses);
    counter!(WRITES, labels.iter()).absolute(stats.writes);
    counter!(DELETES, labels.iter()).absolute(stats.deletes);
    counter!(ERRORS, labels.iter()).absolute(stats.errors);
    counter!(EVICTIONS, labels.iter()).absolute(stats.evictions);
    counter!(BACKFILLS, labels.iter()).absolute(stats.backfills);
    if let Some(entries) = stats.entries {
        gauge!(ENTRIES, labels.iter()).set(entries as f64);
    }
}

/// The global registry's backplane counters.
fn export_backplane(backplane: &crate::Backplane) {
    let stats = backplane.stats();
    let channel = Label::new("channel", backplane.channel().to_owned());
    for (outcome, n) in [("sent", stats.sent), ("received", stats.received), ("dropped", stats.dropped)] {
        let labels = [channel.clone(), Label::new("outcome", outcome)];
        counter!(BACKPLANE_MESSAGES, labels.iter()).absolute(n);
    }
    let labels = [channel];
    counter!(BACKPLANE_RECONNECTS, labels.iter()).absolute(stats.reconnects);
    counter!(BACKPLANE_RECOVERY_CLEARS, labels.iter()).absolute(stats.recovery_clears);
}

fn function_labels(cache: &str, function: &str) -> [Label; 2] {
    [Label::new("cache", cache.to_owned()), Label::new("function", function.to_owned())]
}

/// Records one store operation's latency (the [`Observe`](crate::layer::Observe) layer).
pub(crate) fn operation(cache: &str, layer: &str, op: &'static str, outcome: &'static str, took: Duration) {
    let labels = [
        Label::new("cache", cache.to_owned()),
        Label::new("layer", layer.to_owned()),
        Label::new("op", op),
        Label::new("outcome", outcome),
    ];
    histogram!(OPERATION_DURATION, labels.iter()).record(took);
}

/// Records the latency of a `#[cached]` call past the in-process cache.
pub(crate) fn call(cache: &str, function: &'static str, outcome: &'static str, took: Duration) {
    let labels =
        [Label::new("cache", cache.to_owned()), Label::new("function", function), Label::new("outcome", outcome)];
    histogram!(CALL_DURATION, labels.iter()).record(took);
}
