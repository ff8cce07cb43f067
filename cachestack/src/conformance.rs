//! The backend conformance suite (feature `conformance`): one function per behaviour every
//! [`Backend`] must have. Run it against your own store:
//!
//! ```ignore
//! // tests/my_store.rs, with cachestack's `conformance` feature and tokio's `macros` in
//! // [dev-dependencies]:
//! cachestack::conformance_suite!(my_store, || {
//!     cachestack::conformance::Harness::new(|namespace| std::sync::Arc::new(MyStore::open(namespace)))
//! });
//! ```
//!
//! A backend's test file runs it with [`conformance_suite!`](crate::conformance_suite), giving a
//! [`Harness`]: a factory that opens the backend over one shared store with a given namespace,
//! and what the backend can do (TTL granularity, largest value, a way to plant raw bytes).
//! Each behaviour becomes its own `#[tokio::test]`, so a failure names the behaviour.

// A test suite: failing assertions and unwraps are its output.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{Backend, Cache, Deadline, Error, Expiry, Value};
use serde::{Deserialize, Serialize};

mod atomic;
pub use atomic::{expire_and_ttl, incr_counts_exactly, patterns_are_scoped_and_literal, set_if_absent_has_one_winner};

/// Opens the backend under test over the shared store, scoped to a namespace.
pub type Factory = Arc<dyn Fn(&str) -> Arc<dyn Backend> + Send + Sync>;

/// Writes raw bytes where the backend opened with `namespace` would store `key`, going below the
/// backend's API (a file written by hand, a `SET` from another client): arguments are
/// `(namespace, key, bytes)`.
pub type RawWriter = Arc<dyn Fn(&str, &str, &[u8]) + Send + Sync>;

/// How to run the suite against one backend.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Harness {
    /// Opens the backend with a namespace (each behaviour gets fresh, unique namespaces).
    pub factory: Factory,
    /// The shortest TTL the backend honours precisely (1 s for Memcached, 1 ms for Redis...).
    pub ttl_unit: Duration,
    /// The largest value the backend must store (the suite also writes one of this size).
    pub max_value_bytes: usize,
    /// True when values go through bytes (file, network): a typed read then decodes.
    pub stores_bytes: bool,
    /// Plants raw bytes under a key, when the backend can be reached below its API.
    pub raw_writer: Option<RawWriter>,
    /// Opens the backend, in silent mode, against a server that cannot be reached (a closed
    /// port), for stores that have a server; `None` skips the silent-mode behaviour.
    pub unreachable_silent: Option<Factory>,
    /// Operations the backend answers with [`Error::Unsupported`]
    /// (`set_if_absent`, `incr`, `expire`, `keys_matching`, `delete_matching`): the suite
    /// asserts that error for them, and the real behaviour for every other operation.
    pub unsupported: Vec<&'static str>,
    /// Increments per task in the 16-task `incr` race (1000 by default; lower it for a slow
    /// store, keeping it a real race).
    pub race_rounds: usize,
}

impl Harness {
    /// A harness with defaults: 50 ms TTL unit, 1 MiB values, byte storage, no raw writer.
    pub fn new(factory: impl Fn(&str) -> Arc<dyn Backend> + Send + Sync + 'static) -> Self {
        Harness {
            factory: Arc::new(factory),
            ttl_unit: Duration::from_millis(50),
            max_value_bytes: 1024 * 1024,
            stores_bytes: true,
            raw_writer: None,
            unreachable_silent: None,
            unsupported: Vec::new(),
            race_rounds: 1000,
        }
    }

    /// True if the harness declares `op` unsupported.
    pub fn supports(&self, op: &str) -> bool {
        !self.unsupported.contains(&op)
    }

    /// Opens the backend in a namespace unique to this run and `tag`.
    pub fn open(&self, tag: &str) -> Arc<dyn Backend> {
        (self.factory)(&unique_namespace(tag))
    }
}

/// A namespace no other test run uses: `tag-pid-nanos-counter`.
pub fn unique_namespace(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{tag}-{}-{}-{}", std::process::id(), nanos % 1_000_000_000_000, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A realistic cached value: nested, with strings and options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Id.
    pub id: u64,
    /// Name, unicode included.
    pub name: String,
    /// Optional nested data.
    pub tags: Vec<String>,
    /// An optional field.
    pub manager: Option<Box<Profile>>,
}

/// A sample profile.
pub fn profile(id: u64) -> Profile {
    Profile {
        id,
        name: format!("Zoë {id} — 名前"),
        tags: vec!["a".into(), String::new(), "x".repeat(40)],
        manager: Some(Box::new(Profile { id: id + 1000, name: "boss".into(), tags: vec![], manager: None })),
    }
}

/// Waits until `ttl_unit`-based entries have certainly expired. This waits for wall-clock time
/// to pass (expiry is about time), it does not synchronise with other threads.
async fn let_expire(h: &Harness, ttl: Duration) {
    tokio::time::sleep(ttl + h.ttl_unit + Duration::from_millis(20)).await;
}

/// A missing key reads as `None`, `exists` is false, delete reports nothing removed.
pub async fn missing_key_is_a_miss(h: &Harness) {
    let b = h.open("missing");
    assert!(b.get("nope").await.unwrap().is_none());
    assert!(!b.exists("nope").await.unwrap());
    assert!(!b.delete("nope").await.unwrap());
}

/// Typed values of several shapes round-trip through the backend.
pub async fn values_round_trip(h: &Harness) {
    let cache = Cache::from_arc(h.open("roundtrip"));
    cache.set("profile", &profile(1), None).await.unwrap();
    assert_eq!(cache.get::<Profile>("profile").await.unwrap(), Some(profile(1)));
    cache.set("empty-string", &String::new(), None).await.unwrap();
    assert_eq!(cache.get::<String>("empty-string").await.unwrap().as_deref(), Some(""));
    cache.set("empty-vec", &Vec::<u8>::new(), None).await.unwrap();
    assert_eq!(cache.get::<Vec<u8>>("empty-vec").await.unwrap(), Some(vec![]));
    cache.set("none", &Option::<u32>::None, None).await.unwrap();
    assert_eq!(cache.get::<Option<u32>>("none").await.unwrap(), Some(None));
    cache.set("max", &u64::MAX, None).await.unwrap();
    assert_eq!(cache.get::<u64>("max").await.unwrap(), Some(u64::MAX));
}

/// A second write replaces the first.
pub async fn overwrite_replaces(h: &Harness) {
    let cache = Cache::from_arc(h.open("overwrite"));
    cache.set("k", &"first".to_string(), None).await.unwrap();
    cache.set("k", &"second".to_string(), None).await.unwrap();
    assert_eq!(cache.get::<String>("k").await.unwrap().as_deref(), Some("second"));
}

/// Delete removes, reports presence, and `exists` follows.
pub async fn delete_removes(h: &Harness) {
    let cache = Cache::from_arc(h.open("delete"));
    cache.set("k", &1u32, None).await.unwrap();
    assert!(cache.exists("k").await.unwrap());
    assert!(cache.delete("k").await.unwrap());
    assert!(!cache.exists("k").await.unwrap());
    assert_eq!(cache.get::<u32>("k").await.unwrap(), None);
    assert!(!cache.delete("k").await.unwrap());
}

/// An entry is served with its remaining TTL (never more than it was given), and not after.
pub async fn ttl_expiry(h: &Harness) {
    let b = h.open("ttl");
    let ttl = h.ttl_unit * 4;
    b.set("short", Value::new(5u8), Expiry::after(ttl)).await.unwrap();
    b.set("forever", Value::new(6u8), Expiry::Default).await.unwrap();
    let entry = b.get("short").await.unwrap().expect("fresh entry is served");
    let left = entry.ttl().expect("an entry written with a TTL reports its remaining TTL");
    assert!(left <= ttl, "remaining TTL {left:?} exceeds the {ttl:?} it was given");
    assert!(!left.is_zero());
    assert_eq!(b.get("forever").await.unwrap().expect("no-TTL entry").ttl(), None);
    let_expire(h, ttl).await;
    assert!(b.get("short").await.unwrap().is_none(), "expired entry was served");
    assert!(!b.exists("short").await.unwrap());
    assert!(b.get("forever").await.unwrap().is_some());
    // purge_expired never removes live entries.
    b.purge_expired().await.unwrap();
    assert!(b.get("forever").await.unwrap().is_some());
}

/// `clear` empties this namespace only.
pub async fn clear_is_scoped_to_the_namespace(h: &Harness) {
    let ns = unique_namespace("clear");
    let a = (h.factory)(&format!("{ns}-a"));
    let b = (h.factory)(&format!("{ns}-b"));
    for i in 0..20 {
        a.set(&format!("k{i}"), Value::new(i), Expiry::Default).await.unwrap();
        b.set(&format!("k{i}"), Value::new(i + 100), Expiry::Default).await.unwrap();
    }
    a.clear().await.unwrap();
    for i in 0..20 {
        assert!(a.get(&format!("k{i}")).await.unwrap().is_none());
        let kept = b.get(&format!("k{i}")).await.unwrap().expect("other namespace kept");
        assert_eq!(kept.value.get::<i32>().unwrap(), i + 100);
    }
    // The same key in two namespaces holds two values.
    a.set("shared", Value::new(1u8), Expiry::Default).await.unwrap();
    b.set("shared", Value::new(2u8), Expiry::Default).await.unwrap();
    assert_eq!(a.get("shared").await.unwrap().unwrap().value.get::<u8>().unwrap(), 1);
    assert_eq!(b.get("shared").await.unwrap().unwrap().value.get::<u8>().unwrap(), 2);
}

/// get_many / set_many / delete_many keep order, report misses in place, count deletions.
pub async fn bulk_operations(h: &Harness) {
    let b = h.open("bulk");
    let keys: Vec<String> = (0..50).map(|i| format!("bulk:{i}")).collect();
    let entries: Vec<(&str, Value)> =
        keys.iter().enumerate().filter(|(i, _)| i % 2 == 0).map(|(i, k)| (k.as_str(), Value::new(i as u64))).collect();
    b.set_many(&entries, Expiry::after(Duration::from_secs(600))).await.unwrap();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = b.get_many(&refs).await.unwrap();
    assert_eq!(got.len(), keys.len());
    for (i, slot) in got.iter().enumerate() {
        match slot {
            Some(entry) => {
                assert_eq!(i % 2, 0, "key {i} was never written");
                assert_eq!(entry.value.get::<u64>().unwrap(), i as u64);
                assert!(entry.ttl().is_some_and(|t| t <= Duration::from_secs(600)));
            }
            None => assert_eq!(i % 2, 1, "key {i} was written but missed"),
        }
    }
    assert_eq!(b.delete_many(&refs).await.unwrap(), 25);
    assert!(b.get_many(&refs).await.unwrap().iter().all(Option::is_none));
    assert!(b.get_many(&[]).await.unwrap().is_empty());
}

/// Hits, misses and writes are counted.
pub async fn stats_count_operations(h: &Harness) {
    let b = h.open("stats");
    let before = b.stats();
    b.set("k", Value::new(1u8), Expiry::Default).await.unwrap();
    b.get("k").await.unwrap();
    b.get("k").await.unwrap();
    b.get("missing").await.unwrap();
    let after = b.stats();
    assert_eq!(after.hits - before.hits, 2, "{after:?}");
    assert_eq!(after.misses - before.misses, 1, "{after:?}");
    assert!(after.writes > before.writes, "{after:?}");
    assert!(!after.name.is_empty());
}

/// In silent mode a store that cannot be reached answers misses and no-ops, never errors, and
/// counts every failure (errors) and every absorbed read (misses). Skipped when the harness has no
/// [`Harness::unreachable_silent`].
pub async fn silent_mode_absorbs_and_counts(h: &Harness) {
    let Some(open) = &h.unreachable_silent else { return };
    let b = open(&unique_namespace("silent"));
    let before = b.stats();
    assert!(b.get("k").await.expect("silent get").is_none());
    b.set("k", Value::new(1u8), Expiry::Default).await.expect("silent set");
    assert!(!b.delete("k").await.expect("silent delete"));
    let many = b.get_many(&["a", "b"]).await.expect("silent get_many");
    assert!(many.len() == 2 && many.iter().all(Option::is_none));
    let after = b.stats();
    assert_eq!(after.errors - before.errors, 4, "every failure is counted: {after:?}");
    assert_eq!(after.misses - before.misses, 3, "every absorbed read is a miss: {after:?}");
    assert_eq!(after.hits, before.hits);
}

/// `purge_expired` removes only expired entries (stores that expire entries by themselves report
/// 0), and an expired entry is not served before or after a purge.
pub async fn purge_expired_keeps_live_entries(h: &Harness) {
    let b = h.open("purge");
    let ttl = h.ttl_unit * 2;
    for i in 0..5 {
        b.set(&format!("short{i}"), Value::new(i), Expiry::after(ttl)).await.unwrap();
        b.set(&format!("live{i}"), Value::new(i), Expiry::after(Duration::from_secs(3600))).await.unwrap();
    }
    b.set("forever", Value::new(1u8), Expiry::Never).await.unwrap();
    let_expire(h, ttl).await;
    let purged = b.purge_expired().await.unwrap();
    // A stack reports what each of its layers purged.
    let copies = b.stats().layers.len().max(1) as u64;
    assert!(purged <= 5 * copies, "purged {purged} entries but only 5 had expired (in {copies} layers)");
    for i in 0..5 {
        assert!(b.get(&format!("short{i}")).await.unwrap().is_none(), "expired entry served");
        assert!(b.get(&format!("live{i}")).await.unwrap().is_some(), "live entry purged");
    }
    assert!(b.get("forever").await.unwrap().is_some());
    assert_eq!(b.purge_expired().await.unwrap(), 0, "a second purge finds nothing more");
}

/// A store that wraps another and delays every write: a slow network or a queue.
#[derive(Debug)]
struct Slowed {
    inner: std::sync::Arc<dyn Backend>,
    delay: Duration,
}

#[async_trait::async_trait]
impl Backend for Slowed {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn get(&self, key: &str) -> crate::Result<Option<crate::Entry>> {
        self.inner.get(key).await
    }
    async fn set(&self, key: &str, value: Value, expiry: Expiry) -> crate::Result<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.set(key, value, expiry).await
    }
    async fn delete(&self, key: &str) -> crate::Result<bool> {
        self.inner.delete(key).await
    }
    async fn clear(&self) -> crate::Result<()> {
        self.inner.clear().await
    }
    fn stats(&self) -> crate::BackendStats {
        self.inner.stats()
    }
    fn default_ttl(&self) -> Option<Duration> {
        self.inner.default_ttl()
    }
}

/// An entry's deadline is fixed when the caller writes: a write that spends most of its TTL in
/// transit (a slow link, a queue) is not given its TTL again on arrival, and is never served past
/// the deadline; a read reports the deadline the writer fixed.
pub async fn a_slow_write_keeps_its_deadline(h: &Harness) {
    let b = h.open("slow");
    let slowed = Slowed { inner: b.clone(), delay: h.ttl_unit * 3 };
    let deadline = Deadline::after(h.ttl_unit * 4);
    slowed.set("k", Value::new(7u8), Expiry::At(deadline)).await.unwrap();
    if let Some(entry) = b.get("k").await.unwrap() {
        let reported = entry.expires.expect("written with a deadline");
        assert!(reported <= deadline, "deadline moved from {deadline:?} to {reported:?}");
        assert!(
            deadline.unix_millis() - reported.unix_millis() <= h.ttl_unit.as_millis() as u64,
            "deadline {reported:?} is not the {deadline:?} the writer fixed"
        );
    }
    tokio::time::sleep(deadline.remaining() + h.ttl_unit + Duration::from_millis(20)).await;
    assert!(b.get("k").await.unwrap().is_none(), "an entry was served past its deadline");
    // A deadline that passed in transit is never served at all.
    let passed = Deadline::after(h.ttl_unit);
    slowed.set("late", Value::new(1u8), Expiry::At(passed)).await.unwrap();
    assert!(b.get("late").await.unwrap().is_none(), "an entry arrived after its deadline and was served");
}

/// A value written for another type is a miss (counted), never misread; raw garbage under a key
/// (when the harness can plant it) is a miss too.
pub async fn unreadable_values_are_misses(h: &Harness) {
    let namespace = unique_namespace("unreadable");
    let cache = Cache::from_arc((h.factory)(&namespace));
    cache.set("k", &123u64, None).await.unwrap();
    let errors = cache.stats().errors;
    assert_eq!(cache.get::<Profile>("k").await.unwrap(), None);
    assert_eq!(cache.stats().errors, errors + 1);
    assert_eq!(cache.get::<u64>("k").await.unwrap(), Some(123), "the value itself is intact");
    if let Some(plant) = &h.raw_writer {
        let garbage: [&[u8]; 4] = [b"", b"CS", b"not a cachestack value at all", &[0xff; 64]];
        for (i, bytes) in garbage.iter().enumerate() {
            let key = format!("planted:{i}");
            plant(&namespace, &key, bytes);
            assert!(cache.get::<u64>(&key).await.unwrap().is_none(), "planted bytes {i} were served");
        }
        assert!(cache.stats().errors > errors, "planted garbage was not counted as an error");
        // The backend still works for that key afterwards.
        cache.set("planted:0", &9u64, None).await.unwrap();
        assert_eq!(cache.get::<u64>("planted:0").await.unwrap(), Some(9));
    }
}

/// Keys with spaces, CRLF, unicode, separators and 1 KiB of text round-trip and stay distinct.
pub async fn hostile_keys_round_trip(h: &Harness) {
    let cache = Cache::from_arc(h.open("keys"));
    let keys = [
        "with space".to_string(),
        "crlf\r\nflush_all\r\n".to_string(),
        "ünïcödé/名前/🦀".to_string(),
        "../../etc/passwd".to_string(),
        "a:b".to_string(),
        "a".to_string(),
        "k".repeat(1024),
        "\0nul".to_string(),
    ];
    for (i, key) in keys.iter().enumerate() {
        cache.set(key, &i, None).await.unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(cache.get::<usize>(key).await.unwrap(), Some(i), "key {key:?}");
    }
}

/// Large and empty values round-trip.
pub async fn large_values_round_trip(h: &Harness) {
    let cache = Cache::from_arc(h.open("large"));
    // Leave room for the envelope and the key inside the backend's limit.
    let big: Vec<u8> = (0..h.max_value_bytes - 1024).map(|i| (i % 251) as u8).collect();
    cache.set("big", &big, None).await.unwrap();
    assert_eq!(cache.get::<Vec<u8>>("big").await.unwrap().as_deref(), Some(big.as_slice()));
}

/// Many threads writing the same keys: every read is one complete value some writer wrote.
pub async fn concurrent_writers(h: &Harness) {
    let backend = h.open("concurrent");
    let threads = 8;
    let rounds = 40;
    let keys = 4;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let cache = Cache::from_arc(backend.clone());
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for r in 0..rounds {
                    for k in 0..keys {
                        let value = vec![(t * 1000 + r) as u32; 64 + t * 10];
                        cache.set_blocking(&format!("k{k}"), &value, None).unwrap();
                        if let Some(read) = cache.get_blocking::<Vec<u32>>(&format!("k{k}")).unwrap() {
                            let first = read[0];
                            let writer = (first / 1000) as usize;
                            assert_eq!(read.len(), 64 + writer * 10, "torn value");
                            assert!(read.iter().all(|&x| x == first), "mixed value");
                        }
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("writer thread panicked");
    }
    let cache = Cache::from_arc(backend);
    let mut seen = HashSet::new();
    for k in 0..keys {
        let v = cache.get::<Vec<u32>>(&format!("k{k}")).await.unwrap().expect("value after writers");
        seen.insert(v.len());
    }
    assert!(!seen.is_empty());
}

/// Runs every behaviour in sequence (for ad-hoc use; test files use `conformance_suite!`).
pub async fn run_all(h: &Harness) {
    missing_key_is_a_miss(h).await;
    values_round_trip(h).await;
    overwrite_replaces(h).await;
    delete_removes(h).await;
    ttl_expiry(h).await;
    clear_is_scoped_to_the_namespace(h).await;
    bulk_operations(h).await;
    stats_count_operations(h).await;
    unreadable_values_are_misses(h).await;
    hostile_keys_round_trip(h).await;
    large_values_round_trip(h).await;
    concurrent_writers(h).await;
    silent_mode_absorbs_and_counts(h).await;
    purge_expired_keeps_live_entries(h).await;
    a_slow_write_keeps_its_deadline(h).await;
    set_if_absent_has_one_winner(h).await;
    incr_counts_exactly(h).await;
    expire_and_ttl(h).await;
    patterns_are_scoped_and_literal(h).await;
}

/// Expands to one `#[tokio::test]` per conformance behaviour, in a module named `$name`. The
/// closure returns a [`Harness`], or an `Option<Harness>` whose `None` skips the test (for a
/// server that is missing outside CI).
///
/// ```ignore
/// cachestack_tests::conformance_suite!(memory, || Harness::new(|_ns| Arc::new(MemoryBackend::with_capacity(10_000))));
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($name:ident, $harness:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_suite!(@tests $harness;
                missing_key_is_a_miss, values_round_trip, overwrite_replaces, delete_removes,
                ttl_expiry, clear_is_scoped_to_the_namespace, bulk_operations,
                stats_count_operations, unreadable_values_are_misses, hostile_keys_round_trip,
                large_values_round_trip, concurrent_writers, silent_mode_absorbs_and_counts,
                purge_expired_keeps_live_entries, a_slow_write_keeps_its_deadline,
                set_if_absent_has_one_winner, incr_counts_exactly, expire_and_ttl,
                patterns_are_scoped_and_literal);
        }
    };
    (@tests $harness:expr; $($behaviour:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $behaviour() {
                // The closure returns a `Harness`, or `Option<Harness>` with `None` to skip (a
                // server-backed suite whose server is missing outside CI).
                let Some(harness) = ::core::option::Option::<$crate::conformance::Harness>::from(($harness)()) else {
                    return;
                };
                $crate::conformance::$behaviour(&harness).await;
            }
        )*
    };
}
