//! The stack on a [`Backplane`]: what it announces after each change, and what it evicts from its
//! in-process layers when another process announces one (see [`crate::backplane`]).

use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use async_trait::async_trait;

use super::shared::Shared;
use super::TieredCache;
use crate::backplane::{Backplane, Change, Receiver};
use crate::pattern::KeyPattern;
use crate::store::BackendStats;
use crate::tags::TagTimes;

/// A stack's place on the backplane: the backplane, once attached, and the cache name its
/// messages carry (the stack's name until the registry binds the name it is registered under).
pub(super) struct Bus {
    backplane: OnceLock<Backplane>,
    name: RwLock<String>,
    /// The tag times kept in process by the caches over this stack (see [`crate::tags`]): what
    /// another process's tag invalidation makes them forget.
    tag_times: Mutex<Vec<Weak<TagTimes>>>,
}

impl Bus {
    pub(super) fn new(name: &str) -> Self {
        Bus { backplane: OnceLock::new(), name: RwLock::new(name.to_owned()), tag_times: Mutex::new(Vec::new()) }
    }

    pub(super) fn bind_name(&self, name: &str) {
        *self.name.write().unwrap_or_else(std::sync::PoisonError::into_inner) = name.to_owned();
    }

    fn name(&self) -> String {
        self.name.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Announces a change when dropped: after the change reached every layer, and also when the
/// caller stopped waiting half-way (the other processes then evict more than needed, never less).
pub(super) struct Announce<'a> {
    shared: &'a Shared,
    change: Option<Change>,
}

impl Drop for Announce<'_> {
    fn drop(&mut self) {
        if let (Some(change), Some(backplane)) = (self.change.take(), self.shared.bus.backplane.get()) {
            backplane.announce(self.shared.bus.name(), change);
        }
    }
}

impl Shared {
    /// A guard that announces `change` when dropped; nothing (and nothing built) without a
    /// backplane. Take it before the change starts.
    pub(super) fn announce(&self, change: impl FnOnce() -> Change) -> Announce<'_> {
        Announce { shared: self, change: self.bus.backplane.get().map(|_| change()) }
    }

    /// Announces one key's change now.
    pub(super) fn announce_key(&self, key: &str) {
        drop(self.announce(|| Change::Keys(vec![key.to_owned()])));
    }

    /// Announces that `tags` were invalidated (by [`Cache::invalidate_tag`](crate::Cache::invalidate_tag)).
    pub(crate) fn announce_tags(&self, tags: &[String]) {
        drop(self.announce(|| Change::Tags(tags.to_vec())));
    }

    /// What another process's tag invalidation does here: every cache over this stack forgets
    /// the invalidation times of `tags` it keeps, so its next read of an entry carrying one of
    /// them reads the time from the shared tier.
    pub(crate) fn forget_local_tags(&self, tags: &[String]) {
        self.each_tag_times(|times| times.forget(tags));
    }

    /// Runs `f` on the tag times of every live cache over this stack.
    fn each_tag_times(&self, f: impl Fn(&TagTimes)) {
        let mut watched = self.bus.tag_times.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        watched.retain(|times| match times.upgrade() {
            Some(times) => {
                f(&times);
                true
            }
            None => false,
        });
    }

    /// The backplane's counters in the stack's stats, when attached.
    pub(super) fn with_backplane_stats(&self, stats: BackendStats) -> BackendStats {
        let Some(backplane) = self.bus.backplane.get() else { return stats };
        let bp = backplane.stats();
        stats
            .with_detail("backplane_channel", backplane.channel())
            .with_detail("backplane_sent", bp.sent)
            .with_detail("backplane_received", bp.received)
            .with_detail("backplane_dropped", bp.dropped)
            .with_detail("backplane_reconnects", bp.reconnects)
            .with_detail("backplane_recovery_clears", bp.recovery_clears)
    }

    /// Evicts from the in-process layers. The stripes move first, so that a read that went below
    /// L1 before the eviction does not put the old value back afterwards.
    async fn evict(&self, change: &Change) {
        let locals = self.layers.iter().filter(|layer| layer.local().is_some());
        match change {
            Change::Keys(keys) => {
                for key in keys {
                    self.stripe(key).bump();
                    for layer in locals.clone() {
                        if let Some(local) = layer.local() {
                            local.remove(key);
                        }
                    }
                }
            }
            Change::Clear => {
                self.bump_all();
                for layer in locals {
                    let _ = layer.backend.clear().await;
                }
                // A clear also stands for messages that were lost (a resubscription after an
                // outage, an outbox that overflowed): tag invalidations among them included.
                self.each_tag_times(TagTimes::forget_all);
            }
            Change::Pattern(pattern) => {
                self.bump_all();
                let pattern = KeyPattern::new(pattern).ok();
                for layer in locals {
                    let _ = match &pattern {
                        Some(pattern) => layer.backend.delete_matching(pattern).await.map(drop),
                        // Not a pattern this version reads: everything goes.
                        None => layer.backend.clear().await,
                    };
                }
            }
            Change::Tags(tags) => self.forget_local_tags(tags),
        }
    }

    fn bump_all(&self) {
        for stripe in self.stripes.iter() {
            stripe.bump();
        }
    }
}

#[async_trait]
impl Receiver for Shared {
    fn cache_name(&self) -> String {
        self.bus.name()
    }

    async fn apply(&self, change: &Change) {
        self.evict(change).await;
    }
}

impl TieredCache {
    /// Puts the stack on `backplane` (see [`crate::backplane`]): from now on its changes are
    /// announced to the other processes, and theirs evict its in-process layers. The messages
    /// carry the name the stack is registered under (or its builder name). A stack joins one
    /// backplane: false if it already had one (this call then does nothing).
    ///
    /// ```no_run
    /// use cachestack::{Backplane, MemoryBackend, TieredCache};
    /// let stack = TieredCache::builder()
    ///     .name("users")
    ///     .layer(MemoryBackend::with_capacity(1_000))
    ///     .layer(MemoryBackend::with_capacity(100_000)) // the shared tier (Redis...) in practice
    ///     .build()
    ///     .unwrap();
    /// let backplane = Backplane::from_url("redis://127.0.0.1:6379/0?channel=myapp").unwrap();
    /// assert!(stack.attach_backplane(&backplane));
    /// assert!(!stack.attach_backplane(&backplane));
    /// ```
    pub fn attach_backplane(&self, backplane: &Backplane) -> bool {
        attach(&self.shared, backplane)
    }

    /// The backplane the stack is on, if any.
    pub fn backplane(&self) -> Option<&Backplane> {
        self.shared.bus.backplane.get()
    }

    /// Makes tag invalidations announced by other processes reach `times` (a cache's tag times).
    pub(crate) fn watch_tag_times(&self, times: &Arc<TagTimes>) {
        let mut watched = self.shared.bus.tag_times.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        watched.retain(|w| w.strong_count() > 0);
        watched.push(Arc::downgrade(times));
    }

    /// Announces a tag invalidation made in this process (see [`Shared::announce_tags`]).
    pub(crate) fn announce_tags(&self, tags: &[String]) {
        self.shared.announce_tags(tags);
    }
}

pub(super) fn attach(shared: &Arc<Shared>, backplane: &Backplane) -> bool {
    if shared.bus.backplane.set(backplane.clone()).is_err() {
        return false;
    }
    let receiver: Arc<dyn Receiver> = shared.clone();
    backplane.attach(Arc::downgrade(&receiver));
    true
}

#[cfg(all(test, feature = "memory", feature = "file"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::expiry::Expiry;
    use crate::store::memory::MemoryBackend;
    use crate::store::Backend;
    use crate::value::Value;

    /// Memory over a file directory (a shared tier: not in process).
    fn stack() -> (TieredCache, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let stack = TieredCache::builder()
            .layer(MemoryBackend::with_capacity(100))
            .layer(crate::store::file::FileBackend::open(dir.path()).unwrap())
            .build()
            .unwrap();
        (stack, dir)
    }

    async fn l1_has(stack: &TieredCache, key: &str) -> bool {
        stack.layer(0).unwrap().get(key).await.unwrap().is_some()
    }

    #[tokio::test]
    async fn another_process_changes_evict_l1_only() {
        let (stack, _dir) = stack();
        for key in ["user:1", "user:2", "other"] {
            stack.set(key, Value::new(1u8), Expiry::Default).await.unwrap();
        }
        stack.shared.apply(&Change::Keys(vec!["user:1".into()])).await;
        assert!(!l1_has(&stack, "user:1").await);
        assert!(l1_has(&stack, "user:2").await);
        assert!(stack.layer(1).unwrap().get("user:1").await.unwrap().is_some(), "the shared tier is not ours to touch");
        // Read again from below, and back in L1.
        assert!(stack.get("user:1").await.unwrap().is_some());
        assert!(l1_has(&stack, "user:1").await);

        stack.shared.apply(&Change::Pattern("user:*".into())).await;
        assert!(!l1_has(&stack, "user:1").await && !l1_has(&stack, "user:2").await);
        assert!(l1_has(&stack, "other").await);

        stack.shared.apply(&Change::Clear).await;
        assert!(!l1_has(&stack, "other").await);
        assert!(stack.layer(1).unwrap().get("other").await.unwrap().is_some());

        // Tags are the tag invalidation's business: nothing is evicted here.
        stack.get("other").await.unwrap();
        stack.shared.apply(&Change::Tags(vec!["user:7".into()])).await;
        assert!(l1_has(&stack, "other").await);
    }

    #[tokio::test]
    async fn an_eviction_stops_a_read_under_way_from_backfilling() {
        let (stack, _dir) = stack();
        stack.layer(1).unwrap().set("k", Value::new(1u8), Expiry::Default).await.unwrap();
        // A read that went below L1 before the eviction...
        let stripe = stack.shared.stripe("k");
        let super::super::ordering::Peek::Epoch(epoch) = stripe.peek("k") else { panic!("nothing is queued") };
        let entry = stack.layer(1).unwrap().get("k").await.unwrap().unwrap();
        stack.shared.apply(&Change::Keys(vec!["k".into()])).await;
        // ...does not put what it read into L1 afterwards.
        stack.shared.backfill("k", &entry, 1, stripe, epoch).await;
        assert!(!l1_has(&stack, "k").await);
    }

    /// A clear stands for lost messages: the tag times the caches over the stack keep are
    /// forgotten too, so a tag invalidation that was missed is seen at the next read.
    #[tokio::test]
    async fn a_clear_makes_the_caches_forget_their_tag_times() {
        let (stack, _dir) = stack();
        let shared_tier = crate::Cache::from_arc(stack.layer(1).unwrap().clone());
        let stack = std::sync::Arc::new(stack);
        let cache = crate::Cache::from_arc(stack.clone()).with_tag_freshness(std::time::Duration::from_secs(3600));
        cache.set_with_tags("k", &1u8, None, &["t"]).await.unwrap();
        assert_eq!(cache.get::<u8>("k").await.unwrap(), Some(1));
        // Invalidated by another process whose message never arrived.
        shared_tier.invalidate_tag("t").await.unwrap();
        stack.shared.apply(&Change::Keys(vec!["other".into()])).await;
        assert_eq!(cache.get::<u8>("k").await.unwrap(), Some(1), "the time known in process is trusted");
        stack.shared.apply(&Change::Clear).await;
        assert_eq!(cache.get::<u8>("k").await.unwrap(), None);
    }

    #[test]
    fn without_a_backplane_nothing_is_announced_or_built() {
        let (stack, _dir) = stack();
        let announce = stack.shared.announce(|| unreachable!("no backplane: the change is not built"));
        assert!(announce.change.is_none());
        assert!(stack.backplane().is_none());
        stack.shared.announce_tags(&["t".into()]);
        assert!(!stack.stats().details.contains_key("backplane_channel"));
    }
}
