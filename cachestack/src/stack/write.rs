//! Changes: writes, deletes and clears, sent to every layer.

use std::sync::atomic::Ordering::Relaxed;

use super::layer::{Call, Stamp};
use super::shared::Shared;
use crate::error::Result;
use crate::expiry::Expiry;
use crate::value::Value;

impl Shared {
    pub(super) async fn set(&self, key: &str, value: Value, expiry: Expiry) -> Result<()> {
        self.writes.fetch_add(1, Relaxed);
        // Every layer's deadline is fixed now, before any lock, queue or network call.
        let stamp = Stamp::now(expiry);
        match &self.write_back {
            Some(wb) if self.layers.len() > 1 => self.set_back(wb, key, value, stamp).await,
            _ => self.set_through(key, value, stamp).await,
        }
    }

    pub(super) async fn set_through(&self, key: &str, value: Value, ttl: Stamp) -> Result<()> {
        let (_change, _) = self.stripe(key).begin_change(key, &self.seq).await;
        let mut stored = false;
        let mut failure = None;
        for layer in &self.layers {
            match layer.write(key, &value, &ttl).await {
                Call::Done(()) => stored = true,
                Call::Failed(err) => failure = Some(err),
                Call::Bypassed => {}
            }
        }
        if stored {
            Ok(())
        } else {
            Err(self.all_failed("set", failure))
        }
    }

    pub(super) async fn delete(&self, key: &str) -> Result<bool> {
        self.deletes.fetch_add(1, Relaxed);
        let (_change, had_queued) = self.stripe(key).begin_change(key, &self.seq).await;
        let mut removed = had_queued;
        let mut answered = false;
        let mut failure = None;
        for layer in &self.layers {
            match layer.remove(key).await {
                Call::Done(was) => {
                    removed |= was;
                    answered = true;
                }
                Call::Failed(err) => failure = Some(err),
                Call::Bypassed => {}
            }
        }
        if answered {
            Ok(removed)
        } else {
            Err(self.all_failed("delete", failure))
        }
    }

    pub(super) async fn clear(&self) -> Result<()> {
        let mut changes = Vec::with_capacity(self.stripes.len());
        for stripe in self.stripes.iter() {
            changes.push(stripe.begin_clear(&self.seq).await);
        }
        let mut answered = false;
        let mut failure = None;
        for layer in &self.layers {
            match layer.call("clear", "", |b| b.clear()).await {
                Call::Done(()) => answered = true,
                Call::Failed(err) => failure = Some(err),
                Call::Bypassed => {}
            }
        }
        drop(changes);
        if answered {
            Ok(())
        } else {
            Err(self.all_failed("clear", failure))
        }
    }

    pub(super) async fn set_many(&self, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let ttl = Stamp::now(expiry);
        if let (Some(wb), true) = (&self.write_back, self.layers.len() > 1) {
            if wb.sender().is_some() {
                self.writes.fetch_add(entries.len() as u64, Relaxed);
                for (key, value) in entries {
                    self.set_back(wb, key, value.clone(), ttl).await?;
                }
                return Ok(());
            }
        }
        self.writes.fetch_add(entries.len() as u64, Relaxed);
        let (changes, _) = self.begin_changes(entries.iter().map(|(key, _)| *key)).await;
        let mut stored = false;
        let mut failure = None;
        for layer in &self.layers {
            match layer.write_many(entries, &ttl).await {
                Call::Done(()) => stored = true,
                Call::Failed(err) => failure = Some(err),
                Call::Bypassed => {}
            }
        }
        drop(changes);
        if stored {
            Ok(())
        } else {
            Err(self.all_failed("set_many", failure))
        }
    }

    /// Deletes `keys` everywhere; returns how many were present, as counted by the layer (or the
    /// write-back queue) that held the most of them.
    pub(super) async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.deletes.fetch_add(keys.len() as u64, Relaxed);
        let (changes, queued) = self.begin_changes(keys.iter().copied()).await;
        let mut removed = queued;
        let mut answered = false;
        let mut failure = None;
        for layer in &self.layers {
            let result = match layer.local() {
                Some(local) => {
                    layer.counters.record_delete();
                    Call::Done(keys.iter().map(|key| u64::from(local.remove(key))).sum())
                }
                None => {
                    layer.counters.record_delete();
                    layer.call("delete_many", "", |b| b.delete_many(keys)).await
                }
            };
            match result {
                Call::Done(n) => {
                    removed = removed.max(n);
                    answered = true;
                }
                Call::Failed(err) => failure = Some(err),
                Call::Bypassed => {}
            }
        }
        drop(changes);
        if answered {
            Ok(removed)
        } else {
            Err(self.all_failed("delete_many", failure))
        }
    }

    pub(super) async fn purge_expired(&self) -> Result<u64> {
        let mut purged = 0;
        let mut answered = false;
        let mut failure = None;
        for layer in &self.layers {
            match layer.call("purge_expired", "", |b| b.purge_expired()).await {
                Call::Done(n) => {
                    purged += n;
                    answered = true;
                }
                Call::Failed(err) => failure = Some(err),
                Call::Bypassed => {}
            }
        }
        if answered {
            Ok(purged)
        } else {
            Err(self.all_failed("purge_expired", failure))
        }
    }
}
