//! The memory cache's side of the typed front: the functions' partitions (created on first
//! use, found by the function and value type), the tags their fills take, and what a stack's
//! typed copies of L1's entries read.

use std::any::TypeId;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::front::{AnyPartition, FrontHandle, FrontTag, Partition};
use super::slot::KeyRef;
use super::{Front, MemoryBackend};
use crate::expiry::Deadline;
use crate::store::Entry;
use crate::value::Cacheable;

impl MemoryBackend {
    /// The typed partition of the function whose state lives at `id`, created on first use;
    /// with deadlines in its keys when the function's results expire (`expires`) or the cache
    /// has a default TTL.
    pub(crate) fn front_partition<V: Cacheable>(&self, id: usize, expires: bool) -> FrontHandle {
        let mut fronts = self.fronts();
        let value_type = TypeId::of::<V>();
        if let Some(front) = fronts.iter().find(|f| f.id == id && f.value_type == value_type) {
            return front.handle.clone();
        }
        let timed = expires || self.config.default_ttl.is_some();
        let partition =
            Arc::new(Partition::<V>::new(self.spec, self.capacity, self.shared.clone(), self.evictions.clone(), timed));
        let handle: FrontHandle = partition.clone();
        fronts.push(Front { id, value_type, handle: handle.clone(), part: partition });
        self.rebalance(&fronts);
        handle
    }

    /// Removes the entry of these encoded arguments from every partition of the function whose
    /// state lives at `id`; true if one was live (the caller then deletes the key, which makes
    /// anything a concurrent call computes meanwhile stale).
    pub(crate) fn front_remove(&self, id: usize, key: &[u8]) -> bool {
        let parts: Vec<Arc<dyn AnyPartition>> =
            self.fronts().iter().filter(|f| f.id == id).map(|f| f.part.clone()).collect();
        parts.iter().fold(false, |removed, part| part.remove(key) | removed)
    }

    /// The time left of every live entry of the functions' partitions (`None`: no expiry), for
    /// tests and diagnostics.
    #[doc(hidden)]
    pub fn front_ttls(&self) -> Vec<Option<Duration>> {
        self.fronts().iter().flat_map(|f| f.part.ttls()).collect()
    }

    /// The stripe and epoch a call for `key` starts with: what the entry it fills records.
    pub(crate) fn front_tag(&self, key: &str) -> FrontTag {
        FrontTag::for_key(&self.shared.epochs, key)
    }

    /// Whether a delete or a clear reached `tag`'s stripe since the tag was taken (the entry a
    /// call that took it fills would be stale).
    pub(crate) fn front_tag_current(&self, tag: FrontTag) -> bool {
        tag.is_current(&self.shared.epochs)
    }

    /// Hits answered by the functions' partitions.
    pub(crate) fn front_hits(&self) -> u64 {
        self.shared.hits.get()
    }

    /// The live text-keyed entry of `key`, without counting a lookup: what a stack's typed copy
    /// mirrors (value and deadline).
    pub(crate) fn front_source(&self, key: &str) -> Option<Entry> {
        let slot = self.map.get(&KeyRef::new(key)).filter(|slot| slot.live(Instant::now))?;
        Some(Entry::new(slot.value, Deadline::from_unix_millis(slot.deadline_ms)))
    }
}
