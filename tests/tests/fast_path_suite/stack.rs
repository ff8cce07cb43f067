//! The typed front of a stack's in-memory L1 (issue #12): a `#[cached]` function over
//! `mem | file` or `mem | redis` answers an L1 hit from typed copies of L1's entries. What only a
//! stack has: a miss that reads the lower layer fills the copy (with the lower layer's deadline),
//! a delete from another handle of the same stack or of L1 alone (what the backplane sends)
//! reaches it, and L1's hit counter counts its hits. Skipped when the suite runs on memory caches
//! alone.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use super::{entries, on_stack, registered};
use cachestack::{cached, Backend, Cache, Expiry, Value};

static LOADED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "fp-stack-fill", key = "loaded:<id>")]
fn loaded(id: u64) -> String {
    LOADED_RUNS.fetch_add(1, SeqCst);
    format!("computed {id}")
}

#[tokio::test]
async fn a_miss_that_reads_the_lower_layer_fills_the_typed_copy() {
    if !on_stack() {
        return;
    }
    let Some((cache, l1, Some(stack))) = registered("fp-stack-fill", entries(100)) else { return };
    // Another process wrote the key into the shared layer, with 10 minutes to live.
    let below = stack.layer(1).unwrap();
    let deadline = Expiry::from_ttl(Some(Duration::from_secs(600)));
    below.set("loaded:1", Value::new("from below".to_string()), deadline).await.unwrap();

    assert_eq!(loaded(1), "from below");
    assert_eq!(LOADED_RUNS.load(SeqCst), 0);
    // The copy keeps the lower layer's deadline: never longer than what is left there.
    let ttls = l1.front_ttls();
    assert_eq!(ttls.len(), 1);
    let left = ttls[0].expect("a deadline");
    assert!(left <= Duration::from_secs(600) && left > Duration::from_secs(300), "{left:?}");

    // The next call is a typed hit, counted as a hit of L1 by the stack.
    let l1_hits = cache.stats().layers[0].hits;
    assert_eq!(loaded(1), "from below");
    assert_eq!(cache.stats().layers[0].hits, l1_hits + 1);
    assert_eq!(l1.stats().details["partitions"], "1");
    assert_eq!(LOADED_RUNS.load(SeqCst), 0);

    // A computed value is written through the stack (the lower layer has it) and copied.
    assert_eq!(loaded(2), "computed 2");
    assert_eq!(loaded(2), "computed 2");
    assert_eq!(LOADED_RUNS.load(SeqCst), 1);
    let stored = below.get("loaded:2").await.unwrap().expect("written through");
    assert_eq!(stored.value.get::<String>().unwrap(), "computed 2");
    assert_eq!(l1.front_ttls().len(), 2);
}

static SHARED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = "fp-stack-handles", key = "shared:<id>")]
fn shared(id: u64) -> u64 {
    SHARED_RUNS.fetch_add(1, SeqCst);
    id + 100
}

/// Calls `shared(id)`; true when its body did not run.
fn shared_cached(id: u64) -> bool {
    let before = SHARED_RUNS.load(SeqCst);
    assert_eq!(shared(id), id + 100);
    SHARED_RUNS.load(SeqCst) == before
}

#[tokio::test]
async fn deletes_from_any_handle_of_the_stack_or_of_l1_reach_the_typed_copy() {
    if !on_stack() {
        return;
    }
    let Some((_, l1, Some(stack))) = registered("fp-stack-handles", entries(100)) else { return };
    assert!(!shared_cached(1));
    assert!(shared_cached(1));

    // Another handle of the same stack (another `Cache`, as a service's other component holds).
    let other = Cache::from_arc(stack.clone());
    assert!(other.delete("shared:1").await.unwrap());
    assert!(!shared_cached(1), "deleted everywhere: computed again");
    assert!(shared_cached(1));

    // L1 alone, as the backplane evicts a key another process changed: the copy is stale, and
    // the next call reads the lower layer (no computation) and copies again.
    assert!(l1.delete("shared:1").await.unwrap());
    let l1_misses = stack.stats().layers[0].misses;
    assert!(shared_cached(1), "answered by the lower layer");
    assert!(stack.stats().layers[0].misses > l1_misses, "not by the stale copy");
    let hits = l1.stats().hits;
    assert!(shared_cached(1));
    assert_eq!(l1.stats().hits, hits + 1, "a typed hit again");

    // A clear from another handle, and a pattern delete.
    assert!(shared_cached(1));
    other.clear().await.unwrap();
    assert!(!shared_cached(1));
    assert!(shared_cached(1));
    let pattern = cachestack::KeyPattern::new("shared:*").unwrap();
    Backend::delete_matching(&*stack, &pattern).await.unwrap();
    assert!(!shared_cached(1));

    // Re-pointing the name at a new stack: the old stack's copies are not served.
    let old_hits = l1.stats().hits;
    let Some((_, new_l1, Some(_))) = registered("fp-stack-handles", entries(100)) else { return };
    assert_eq!(shared(1), 101);
    assert_eq!(l1.stats().hits, old_hits, "not answered by the old stack's copy");
    assert_eq!(new_l1.front_ttls().len(), 1, "copied into the new stack's L1");
}
