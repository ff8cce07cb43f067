//! Observability: metrics (a `metrics-util` test recorder), spans (a capturing `tracing`
//! layer) and the manifest, after scripted sequences of `#[cached]` calls and `Cache`
//! operations through a `memory | redis` stack on a real Redis server.
//!
//! Redis comes from `tests/servers.sh` (`CACHESTACK_TEST_REDIS_URL`); without it the stack tests
//! are skipped outside CI. The recorder is global to the process, so the tests that read it hold
//! one lock and each uses caches of its own (the label sets never overlap).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cachestack::{
    cached, Backend, Cache, CacheRegistry, FnKind, MemoryBackend, RedisBackend, RedisConfig, TieredCache, Value,
};
use cachestack_tests::conformance::unique_namespace;
use cachestack_tests::sync::spin_until;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;

const REDIS_VAR: &str = "CACHESTACK_TEST_REDIS_URL";

// ------------------------------------------------------------------------------------------------
// The test recorder
// ------------------------------------------------------------------------------------------------

/// The process's recorder, installed once.
fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().unwrap();
        snapshotter
    })
}

/// Held by the tests that read the recorder (a snapshot drains what it reads).
static RECORDER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One metric sample: `(kind, name, labels)` -> value (a histogram's number of samples).
type Samples = BTreeMap<(MetricKind, String, Vec<(String, String)>), u64>;

/// Everything recorded since the last snapshot, with `label = value` among its labels.
fn samples(snapshotter: &Snapshotter, label: &str, value: &str) -> Samples {
    let mut out = Samples::new();
    for (key, _, _, sample) in snapshotter.snapshot().into_vec() {
        let labels: Vec<(String, String)> =
            key.key().labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
        if !labels.iter().any(|(k, v)| k == label && v == value) {
            continue;
        }
        let n = match sample {
            DebugValue::Counter(n) => n,
            DebugValue::Gauge(g) => g.into_inner() as u64,
            DebugValue::Histogram(values) => values.len() as u64,
        };
        out.insert((key.kind(), key.key().name().to_owned(), labels), n);
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn counter(name: &str, pairs: &[(&str, &str)]) -> (MetricKind, String, Vec<(String, String)>) {
    (MetricKind::Counter, name.to_owned(), labels(pairs))
}

fn histogram(name: &str, pairs: &[(&str, &str)]) -> (MetricKind, String, Vec<(String, String)>) {
    (MetricKind::Histogram, name.to_owned(), labels(pairs))
}

// ------------------------------------------------------------------------------------------------
// A memory | redis stack
// ------------------------------------------------------------------------------------------------

/// Registers `memory | redis` as `name` (Redis keys in a namespace of this run); `None` when
/// Redis is not available outside CI.
fn register_stack(name: &str) -> Option<(Cache, Arc<dyn Backend>)> {
    let url = cachestack_tests::server_url(REDIS_VAR, "redis")?;
    let namespace = match std::env::var("CACHESTACK_TEST_REDIS_RUN") {
        Ok(run) if !run.is_empty() => format!("{run}-{}", unique_namespace(name)),
        _ => unique_namespace(name),
    };
    let config = RedisConfig::from_url(&url).unwrap().with_namespace(namespace).with_timeout(Duration::from_secs(5));
    let redis = Arc::new(RedisBackend::new(config).unwrap());
    let stack = TieredCache::builder().layer(MemoryBackend::with_capacity(100)).layer(redis).build().unwrap();
    let l2 = stack.layer(1).unwrap().clone();
    let cache = Cache::new(stack);
    CacheRegistry::global().register(name, cache.clone());
    Some((cache, l2))
}

static LOADS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "observe-metrics", key = "load:<id>", ttl = "1m")]
async fn observed_load(id: u64) -> u64 {
    LOADS.fetch_add(1, SeqCst);
    id * 10
}

// ------------------------------------------------------------------------------------------------
// Metrics
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_count_every_event_per_cache_layer_and_function() {
    let _recorder = RECORDER.lock().await;
    let snapshotter = snapshotter();
    let Some((cache, l2)) = register_stack("observe-metrics") else { return };
    let function = "observe::observed_load";

    // 1. A miss in both tiers: computed, written through. 2. A hit in L1. 3. Another miss.
    assert_eq!(observed_load(1).await, 10);
    assert_eq!(observed_load(1).await, 10);
    assert_eq!(observed_load(2).await, 20);
    assert_eq!(LOADS.load(SeqCst), 2);
    // 4. Cache API: a write, an L1 hit, a miss in both tiers.
    cache.set("direct", &5u64, None).await.unwrap();
    assert_eq!(cache.get::<u64>("direct").await.unwrap(), Some(5));
    assert_eq!(cache.get::<u64>("absent").await.unwrap(), None);
    // 5. A value only Redis holds: an L2 hit, backfilled into L1.
    l2.set("only-l2", Value::new(7u64), cachestack::Expiry::Default).await.unwrap();
    assert_eq!(cache.get::<u64>("only-l2").await.unwrap(), Some(7));
    // 6. A delete, sent to both tiers.
    assert!(cache.delete("direct").await.unwrap());

    cachestack::metrics::export();
    let got = samples(snapshotter, "cache", "observe-metrics");
    // (The calls' futures stay `Send`: they can be spawned.)
    assert_eq!(tokio::spawn(observed_load(1)).await.unwrap(), 10);

    let l1 = [("cache", "observe-metrics"), ("layer", "memory")];
    let redis = [("cache", "observe-metrics"), ("layer", "redis")];
    let per_fn = [("cache", "observe-metrics"), ("function", function)];
    let api = [("cache", "observe-metrics"), ("function", "Cache::get_or_compute")];
    let op = |op: &str, outcome: &str| {
        histogram(
            "cachestack_operation_duration_seconds",
            &[("cache", "observe-metrics"), ("layer", "redis"), ("op", op), ("outcome", outcome)],
        )
    };
    let call = |outcome: &str| {
        histogram(
            "cachestack_call_duration_seconds",
            &[("cache", "observe-metrics"), ("function", function), ("outcome", outcome)],
        )
    };
    let mut expected: Samples = [
        // L1 saw: the function's hit, the API's hit of `direct`; misses of load:1, load:2,
        // `absent`, `only-l2`; writes of load:1, load:2, `direct`; the delete; one backfill.
        (counter("cachestack_hits_total", &l1), 2),
        (counter("cachestack_misses_total", &l1), 4),
        (counter("cachestack_writes_total", &l1), 3),
        (counter("cachestack_deletes_total", &l1), 1),
        (counter("cachestack_errors_total", &l1), 0),
        (counter("cachestack_evictions_total", &l1), 0),
        (counter("cachestack_backfills_total", &l1), 1),
        // Redis, as the stack saw it: the `only-l2` hit, three misses, three writes, the delete.
        (counter("cachestack_hits_total", &redis), 1),
        (counter("cachestack_misses_total", &redis), 3),
        (counter("cachestack_writes_total", &redis), 3),
        (counter("cachestack_deletes_total", &redis), 1),
        (counter("cachestack_errors_total", &redis), 0),
        (counter("cachestack_evictions_total", &redis), 0),
        (counter("cachestack_backfills_total", &redis), 0),
        // The function.
        (counter("cachestack_function_hits_total", &per_fn), 1),
        (counter("cachestack_function_misses_total", &per_fn), 2),
        (counter("cachestack_function_waits_total", &per_fn), 0),
        (counter("cachestack_function_errors_total", &per_fn), 0),
        ((MetricKind::Gauge, "cachestack_function_in_flight".to_owned(), labels(&per_fn)), 0),
        // The resilience engine of this cache was not used.
        (counter("cachestack_function_hits_total", &api), 0),
        (counter("cachestack_function_misses_total", &api), 0),
        (counter("cachestack_function_waits_total", &api), 0),
        (counter("cachestack_function_errors_total", &api), 0),
        (counter("cachestack_function_stale_total", &api), 0),
        (counter("cachestack_function_refreshes_total", &api), 0),
        ((MetricKind::Gauge, "cachestack_function_in_flight".to_owned(), labels(&api)), 0),
        // Latency of every Redis operation (L1 is in process: not timed), by outcome.
        (op("get", "miss"), 3),
        (op("get", "hit"), 1),
        (op("set", "ok"), 4),
        (op("delete", "ok"), 1),
        // Latency of the two calls that went past L1.
        (call("miss"), 2),
    ]
    .into_iter()
    .collect();
    // L1's entries gauge: load:1, load:2, only-l2 (`direct` was deleted), and the function's
    // typed copies of load:1 and load:2 (issue #12: its L1 hits are typed).
    expected.insert((MetricKind::Gauge, "cachestack_entries".to_owned(), labels(&l1)), 5);
    assert_eq!(got, expected);

    // Counters are totals: a second export after more traffic publishes the new totals.
    assert_eq!(observed_load(1).await, 10);
    cachestack::metrics::export();
    let got = samples(snapshotter, "cache", "observe-metrics");
    assert_eq!(got[&counter("cachestack_function_hits_total", &per_fn)], 3);
    assert_eq!(got[&counter("cachestack_hits_total", &l1)], 4);
    CacheRegistry::global().remove("observe-metrics");
}

#[cached(cache = "observe-engine", key = "engine:<id>")]
fn engine_unused(id: u64) -> u64 {
    id
}

#[tokio::test]
async fn the_resilience_engine_is_counted_per_cache() {
    let _recorder = RECORDER.lock().await;
    let snapshotter = snapshotter();
    let cache = Cache::new(MemoryBackend::with_capacity(100));
    CacheRegistry::global().register("observe-engine", cache.clone());
    let options = cachestack::ComputeOptions::builder().build().unwrap();
    for _ in 0..3 {
        let (value, _) =
            cache.get_or_compute("k", &options, || async { Ok::<_, cachestack::Error>(1u64) }).await.unwrap();
        assert_eq!(value, 1);
    }
    cachestack::metrics::export();
    let got = samples(snapshotter, "cache", "observe-engine");
    let api = [("cache", "observe-engine"), ("function", "Cache::get_or_compute")];
    assert_eq!(got[&counter("cachestack_function_hits_total", &api)], 2);
    assert_eq!(got[&counter("cachestack_function_misses_total", &api)], 1);
    // A #[cached] function never called is exported with zeros.
    let never = [("cache", "observe-engine"), ("function", "observe::engine_unused")];
    assert_eq!(got[&counter("cachestack_function_hits_total", &never)], 0);
    assert_eq!(got[&counter("cachestack_function_misses_total", &never)], 0);
    CacheRegistry::global().remove("observe-engine");
}

#[cached(cache = "observe-timer", key = "timed:<n>")]
fn timed(n: u64) -> u64 {
    n
}

#[test]
fn export_every_publishes_on_a_timer() {
    let _recorder = RECORDER.blocking_lock();
    let snapshotter = snapshotter();
    CacheRegistry::global().register("observe-timer", Cache::new(MemoryBackend::with_capacity(10)));
    assert_eq!((timed(1), timed(1)), (1, 1));
    let exporting = cachestack::metrics::export_every(Duration::from_millis(1)).unwrap();
    let hits = counter("cachestack_function_hits_total", &[("cache", "observe-timer"), ("function", "observe::timed")]);
    // Nothing exported by hand: the timer publishes the total (and again after each snapshot).
    spin_until(|| samples(snapshotter, "cache", "observe-timer").get(&hits) == Some(&1));
    exporting.abort();
    CacheRegistry::global().remove("observe-timer");
}

// ------------------------------------------------------------------------------------------------
// Spans
// ------------------------------------------------------------------------------------------------

mod capture {
    use std::collections::BTreeMap;
    use std::fmt;
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::Subscriber;
    use tracing_subscriber::layer::{Context, Layer};
    use tracing_subscriber::registry::LookupSpan;

    /// A closed span: its name, its fields as recorded, its parent's name.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Closed {
        pub name: &'static str,
        pub fields: BTreeMap<String, String>,
        pub parent: Option<&'static str>,
    }

    #[derive(Default)]
    struct Fields(BTreeMap<String, String>);

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
    }

    /// Records every span that closes, with the fields recorded on it.
    #[derive(Clone, Default)]
    pub struct Capture(pub Arc<Mutex<Vec<Closed>>>);

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let mut fields = Fields::default();
            attrs.record(&mut fields);
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(fields);
            }
        }
        fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
            if let Some(span) = ctx.span(id) {
                if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                    values.record(fields);
                }
            }
        }
        fn on_close(&self, id: Id, ctx: Context<'_, S>) {
            let Some(span) = ctx.span(&id) else { return };
            let fields = span.extensions_mut().remove::<Fields>().unwrap_or_default().0;
            let parent = span.parent().map(|p| p.name());
            self.0.lock().unwrap().push(Closed { name: span.name(), fields, parent });
        }
    }
}

#[cached(cache = "observe-spans", key = "span:<id>", ttl = "1m")]
async fn spanned_load(id: u64) -> u64 {
    id + 1
}

#[cached(cache = "observe-spans-memory", key = "memory-span:<id>")]
fn memory_load(id: u64) -> u64 {
    id + 2
}

/// The spans of the whole process, captured by a global subscriber (a per-thread one would
/// miss spans: tracing caches whether a call site is enabled the first time any thread reaches
/// it, and another test's thread, without a subscriber, may be first).
fn captured() -> &'static capture::Capture {
    static CAPTURE: OnceLock<capture::Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let capture = capture::Capture::default();
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(capture.clone())).unwrap();
        capture
    })
}

/// The closed spans named `name` whose `cache` field is one of `caches`, in order.
fn spans_of(name: &str, caches: &[&str]) -> Vec<capture::Closed> {
    let spans = captured().0.lock().unwrap();
    spans
        .iter()
        .filter(|s| s.name == name && s.fields.get("cache").is_some_and(|c| caches.contains(&c.as_str())))
        .cloned()
        .collect()
}

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn spans_show_each_call_and_each_store_operation() {
    let Some((cache, _l2)) = register_stack("observe-spans") else { return };
    CacheRegistry::global().register("observe-spans-memory", Cache::new(MemoryBackend::with_capacity(100)));
    captured();

    assert_eq!(spanned_load(1).await, 2); // a miss in both tiers: computed
    assert_eq!(spanned_load(1).await, 2); // an L1 hit, in process
    cache.delete("span:1").await.unwrap();
    assert_eq!(memory_load(1), 3); // a miss of a memory cache
    assert_eq!(memory_load(1), 3); // a hit of its typed partition

    let calls = spans_of("cachestack.call", &["observe-spans", "observe-spans-memory"]);
    let ops = spans_of("cachestack.op", &["observe-spans", "observe-spans-memory"]);
    let call = |function: &str, cache: &str, outcome: &str, layer: &str| {
        fields(&[("function", function), ("cache", cache), ("outcome", outcome), ("layer", layer)])
    };
    assert_eq!(
        calls.iter().map(|s| s.fields.clone()).collect::<Vec<_>>(),
        vec![
            call("observe::spanned_load", "observe-spans", "miss", "none"),
            call("observe::spanned_load", "observe-spans", "hit", "memory"),
            fields(&[("function", "observe::memory_load"), ("cache", "observe-spans-memory"), ("outcome", "miss")]),
            call("observe::memory_load", "observe-spans-memory", "hit", "memory"),
        ]
    );
    // Redis operations: the miss's read and write inside the call's span, then the delete.
    let op = |op: &str, outcome: &str| {
        fields(&[("cache", "observe-spans"), ("layer", "redis"), ("op", op), ("outcome", outcome)])
    };
    assert_eq!(
        ops.iter().map(|s| (s.fields.clone(), s.parent)).collect::<Vec<_>>(),
        vec![
            (op("get", "miss"), Some("cachestack.call")),
            (op("set", "ok"), Some("cachestack.call")),
            (op("delete", "ok"), None),
        ]
    );
    CacheRegistry::global().remove("observe-spans");
    CacheRegistry::global().remove("observe-spans-memory");
}

#[cached(cache = "observe-spans-l2", key = "l2-span:<id>", ttl = "1m")]
async fn l2_load(id: u64) -> u64 {
    id + 3
}

#[tokio::test]
async fn a_call_span_names_the_tier_that_answered() {
    let Some((_cache, l2)) = register_stack("observe-spans-l2") else { return };
    l2.set("l2-span:1", Value::new(99u64), cachestack::Expiry::Default).await.unwrap();
    captured();

    assert_eq!(l2_load(1).await, 99); // only Redis has it

    let calls = spans_of("cachestack.call", &["observe-spans-l2"]);
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].fields,
        fields(&[
            ("function", "observe::l2_load"),
            ("cache", "observe-spans-l2"),
            ("outcome", "hit"),
            ("layer", "redis")
        ])
    );
    CacheRegistry::global().remove("observe-spans-l2");
}

// ------------------------------------------------------------------------------------------------
// The manifest
// ------------------------------------------------------------------------------------------------

mod never_called {
    use cachestack::{cached, invalidate};

    #[cached(cache = "catalog", key = "product:<id>", ttl = "5m", namespace = "shop", lock = false)]
    pub async fn product(id: u64) -> Result<String, std::io::Error> {
        Ok(format!("product {id}"))
    }

    #[invalidate(cache = "catalog", key = "product:<id>", namespace = "shop")]
    pub async fn rename_product(id: u64, name: &str) {
        let _ = (id, name);
    }

    #[invalidate(pattern = "product:<id>:*", before = true)]
    pub fn forget_variants(id: u64) {
        let _ = id;
    }

    pub struct Prices;

    impl Prices {
        #[cached(ttl = std::time::Duration::from_secs(90), condition = |n: &u64| *n > 10)]
        pub fn price(&self, id: u64) -> u64 {
            id
        }
    }
}

#[test]
fn the_manifest_lists_functions_never_called() {
    let manifest = cachestack::manifest();
    let product = manifest.function("observe::never_called::product").unwrap();
    assert_eq!(product.kind, FnKind::Cached);
    assert_eq!((product.module, product.name), ("observe::never_called", "product"));
    assert_eq!(product.keys, ["product:<id>"]);
    assert_eq!(product.ttl, Some("5m"));
    assert_eq!(product.cache, Some("catalog"));
    assert_eq!(product.options, [("lock", "false"), ("namespace", "shop")].into_iter().collect());
    assert!(product.tags.is_empty());
    let stats = product.stats.clone().unwrap();
    assert_eq!((stats.hits, stats.misses, stats.name), (0, 0, "observe::never_called::product"));

    let rename = manifest.function("observe::never_called::rename_product").unwrap();
    assert_eq!(
        (rename.kind, rename.keys.as_slice(), rename.cache),
        (FnKind::Invalidate, &["product:<id>"][..], Some("catalog"))
    );
    assert!(rename.stats.is_none());
    let forget = manifest.function("observe::never_called::forget_variants").unwrap();
    assert_eq!(forget.keys, ["product:<id>:*"]);
    assert_eq!(forget.options, [("before", "true"), ("pattern", "true")].into_iter().collect());
    assert_eq!(forget.cache, None);

    // A method, with a TTL given as an expression and the default key.
    let price = manifest.function("observe::never_called::price").unwrap();
    assert!(price.keys.is_empty());
    assert_eq!(price.ttl, Some("std::time::Duration::from_secs(90)"));
    assert_eq!(price.options["condition"], "|n:&u64|*n>10");

    // Sorted by module, then name, each listed once.
    let order: Vec<(&str, &str)> = manifest.functions.iter().map(|f| (f.module, f.name)).collect();
    let mut sorted = order.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(order, sorted);
    assert!(order.contains(&("observe", "observed_load")));

    // JSON for an admin endpoint.
    let json = serde_json::to_value(&manifest).unwrap();
    let entry = json["functions"].as_array().unwrap().iter().find(|f| f["name"] == "product").unwrap();
    assert_eq!(entry["kind"], "cached");
    assert_eq!(entry["keys"][0], "product:<id>");
    assert_eq!(entry["options"]["namespace"], "shop");
    assert_eq!(entry["stats"]["misses"], 0);
    assert_eq!(entry["hit_ratio"], 0.0);
}

#[test]
fn manifest_stats_are_live() {
    #[cached(cache = "observe-live", key = "live:<n>")]
    fn live(n: u64) -> u64 {
        n
    }
    CacheRegistry::global().register("observe-live", Cache::new(MemoryBackend::with_capacity(10)));
    live(1);
    live(1);
    let manifest = cachestack::manifest();
    let info = manifest.functions.iter().find(|f| f.name == "live").unwrap();
    let stats = info.stats.as_ref().unwrap();
    assert_eq!((stats.hits, stats.misses), (1, 1));
    assert_eq!(info.hit_ratio, Some(0.5));
    CacheRegistry::global().remove("observe-live");
}
