//! Atomic and pattern operations of the stack.
//!
//! - `set_if_absent`, `incr` and `expire` run on the lowest layer alone, the source of truth that
//!   every process shares, and the key is then removed from the faster layers (which refill from
//!   below on their next read). A faster layer is never used instead: an answer from a
//!   process-local layer would be wrong for the other processes. If the lowest layer cannot do
//!   the operation, the stack answers [`Error::Unsupported`].
//! - `ttl` is the stack's read (faster layers never hold an entry past the deadline below).
//! - `delete_matching` runs on every layer, lowest first; a layer that missed it (down, bypassed)
//!   clears itself before the stack's next call to it, so a removed key never comes back from it.
//! - `keys_matching` lists the lowest layer.
//!
//! With write-back, each of these first waits for the queue to be stored, so that the lowest
//! layer holds every write made before the call.

use std::future::Future;

use super::layer::Call;
use super::shared::Shared;
use crate::error::{Error, Result};
use crate::pattern::KeyPattern;
use crate::store::{Backend, KeyVisitor};

impl Shared {
    /// Stores the write-back queue, if there is one, into the lower layers.
    async fn drain_queue(&self) -> Result<()> {
        if self.write_back.is_some() && self.layers.len() > 1 {
            self.flush().await?;
        }
        Ok(())
    }

    /// Runs `op` on the lowest layer as a change of `key`, then removes `key` from the faster
    /// layers (whatever the outcome: a failed call may still have been applied).
    pub(super) async fn on_lowest<'a, T, F, Fut>(&'a self, op: &'static str, key: &str, f: F) -> Result<T>
    where
        F: FnOnce(&'a dyn Backend) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.drain_queue().await?;
        let (_change, _) = self.stripe(key).begin_change(key, &self.seq).await;
        let Some((lowest, faster)) = self.layers.split_last() else { return Err(self.all_failed(op, None)) };
        let result = match lowest.call(op, key, f).await {
            Call::Done(value) => Ok(value),
            Call::Failed(err) => Err(err),
            Call::Bypassed => Err(self.all_failed(op, None)),
        };
        for layer in faster {
            // A layer that misses the removal gets a tombstone (see `Layer::remove`).
            let _ = layer.remove(key, None).await;
        }
        result
    }

    pub(super) async fn delete_matching(&self, pattern: &KeyPattern) -> Result<u64> {
        self.drain_queue().await?;
        let mut changes = Vec::with_capacity(self.stripes.len());
        for stripe in self.stripes.iter() {
            changes.push(stripe.begin_clear(&self.seq).await);
        }
        let mut removed = 0u64;
        let mut answered = false;
        let mut failure = None;
        for layer in self.layers.iter().rev() {
            match layer.call("delete_matching", pattern.as_str(), |b| b.delete_matching(pattern)).await {
                Call::Done(n) => {
                    answered = true;
                    removed = removed.max(n);
                }
                Call::Failed(err) if err.is_unsupported() => return Err(err),
                other => {
                    if layer.local().is_none() {
                        layer.tombstones.add_clear();
                    }
                    if let Call::Failed(err) = other {
                        failure = Some(err);
                    }
                }
            }
        }
        drop(changes);
        if answered {
            Ok(removed)
        } else {
            Err(self.all_failed("delete_matching", failure))
        }
    }

    pub(super) async fn keys_matching(
        &self,
        pattern: &KeyPattern,
        batch: usize,
        visit: &mut KeyVisitor<'_>,
    ) -> Result<()> {
        self.drain_queue().await?;
        let Some(lowest) = self.layers.last() else { return Ok(()) };
        match lowest.call("keys_matching", pattern.as_str(), |b| b.keys_matching(pattern, batch, visit)).await {
            Call::Done(()) => Ok(()),
            Call::Failed(err) => Err(err),
            Call::Bypassed => Err(self.all_failed("keys_matching", None::<Error>)),
        }
    }
}
