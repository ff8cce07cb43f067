//! Changes: writes, deletes and clears, sent to every layer.

use std::ops::ControlFlow::Continue;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::layer::Stamp;
use super::shared::Shared;
use crate::backplane::Change;
use crate::error::Result;
use crate::expiry::Expiry;
use crate::value::Value;

impl Shared {
    pub(super) async fn set(self: &Arc<Self>, key: &str, value: Value, expiry: Expiry) -> Result<()> {
        self.writes.fetch_add(1, Relaxed);
        let _announce = self.announce(|| Change::Keys(vec![key.to_owned()]));
        // Every layer's deadline is fixed now, before any lock, queue or network call.
        let stamp = Stamp::now(expiry);
        match &self.write_back {
            Some(wb) if self.layers.len() > 1 => self.set_back(wb, key, value, stamp).await,
            _ => self.set_through(key, value, stamp).await,
        }
    }

    pub(super) async fn set_through(&self, key: &str, value: Value, stamp: Stamp) -> Result<()> {
        let (_change, _) = self.stripe(key).begin_change(key, &self.seq).await;
        self.fan_out("set", |layer| layer.write(key, &value, &stamp, None), |()| Continue(())).await
    }

    pub(super) async fn delete(&self, key: &str) -> Result<bool> {
        self.deletes.fetch_add(1, Relaxed);
        let _announce = self.announce(|| Change::Keys(vec![key.to_owned()]));
        let (_change, had_queued) = self.stripe(key).begin_change(key, &self.seq).await;
        let mut removed = had_queued;
        let fold = |was| {
            removed |= was;
            Continue(())
        };
        self.fan_out("delete", |layer| layer.remove(key, None), fold).await?;
        Ok(removed)
    }

    /// Clears every layer; a layer that missed the clear clears itself before its next call.
    pub(super) async fn clear(&self) -> Result<()> {
        let _announce = self.announce(|| Change::Clear);
        let mut changes = Vec::with_capacity(self.stripes.len());
        for stripe in self.stripes.iter() {
            changes.push(stripe.begin_clear(&self.seq).await);
        }
        let result = self.fan_out("clear", |layer| layer.clear(), |()| Continue(())).await;
        drop(changes);
        result
    }

    pub(super) async fn set_many(self: &Arc<Self>, entries: &[(&str, Value)], expiry: Expiry) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let _announce = self.announce(|| Change::Keys(entries.iter().map(|(key, _)| (*key).to_owned()).collect()));
        let stamp = Stamp::now(expiry);
        self.writes.fetch_add(entries.len() as u64, Relaxed);
        if let (Some(wb), true) = (&self.write_back, self.layers.len() > 1)
            && wb.sender().is_some()
        {
            for (key, value) in entries {
                self.set_back(wb, key, value.clone(), stamp).await?;
            }
            return Ok(());
        }
        let (changes, _) = self.begin_changes(entries.iter().map(|(key, _)| *key)).await;
        let result = self.fan_out("set_many", |layer| layer.write_many(entries, &stamp), |()| Continue(())).await;
        drop(changes);
        result
    }

    /// Deletes `keys` everywhere; returns how many were present, as counted by the layer (or the
    /// write-back queue) that held the most of them.
    pub(super) async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.deletes.fetch_add(keys.len() as u64, Relaxed);
        let _announce = self.announce(|| Change::Keys(keys.iter().map(|key| (*key).to_owned()).collect()));
        let (changes, queued) = self.begin_changes(keys.iter().copied()).await;
        let mut removed = queued;
        let fold = |n: u64| {
            removed = removed.max(n);
            Continue(())
        };
        let result = self.fan_out("delete_many", |layer| layer.remove_many(keys), fold).await;
        drop(changes);
        result.map(|()| removed)
    }

    pub(super) async fn purge_expired(&self) -> Result<u64> {
        // Writes still queued would land after the purge, some with deadlines already past: drain
        // them first. A drain that gives up is logged by `flush`; the purge goes on regardless.
        if self.write_back.is_some() {
            let _ = self.flush().await;
        }
        let mut purged = 0u64;
        let fold = |n: u64| {
            purged = purged.saturating_add(n);
            Continue(())
        };
        self.fan_out("purge_expired", |layer| layer.call("purge_expired", "", |b| b.purge_expired()), fold).await?;
        Ok(purged)
    }
}
