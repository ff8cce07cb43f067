//! The atomic operations of [`ObjectStoreCache`], as conditional writes: read the object and its
//! e-tag, decide, then create it only if it is still absent (`If-None-Match: *`) or replace it
//! only if it is still the one read (`If-Match: <e-tag>`); again if another writer got there
//! first.
//!
//! - `set_if_absent` writes only over no object, or over a dead one (expired, another key's,
//!   unusable): of racing callers exactly one wins.
//! - `incr` adds to an `i64` entry; `expire` re-seals the live value with the new deadline.
//! - A round lost to another writer backs off a random while before the next one.
//!
//! A store that cannot write conditionally (object_store answers "not implemented": S3 with
//! `conditional_put` disabled, a local directory for updates) makes these operations fail with
//! [`Error::Unsupported`](crate::Error::Unsupported): never a read followed by a blind write.

use std::time::Duration;

use object_store::{PutMode, UpdateVersion};

use super::requests::Put;
use super::ObjectStoreCache;
use crate::error::{Error, Result};
use crate::expiry::Expiry;
use crate::store::cas::{self, Decision};
use crate::store::Entry;
use crate::value::Value;

/// How often a conditional write is retried when other writers keep changing the object.
const ATTEMPTS: usize = 256;
/// The first back-off ceiling after a lost round; it doubles with each lost round.
const BACKOFF_STEP: Duration = Duration::from_millis(2);
/// The largest back-off ceiling.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

impl ObjectStoreCache {
    /// Conditional-write rounds on `key` until one stores (or `decide` keeps): `decide` gets the
    /// live entry, or `None` when there is none (absent, or a dead object that will be replaced).
    async fn update<T>(
        &self,
        op: &'static str,
        key: &str,
        mut decide: impl FnMut(Option<&Entry>) -> Result<Decision<T>>,
    ) -> Result<T> {
        let path = self.path(key);
        for attempt in 0..ATTEMPTS {
            let found = self.read(op, key).await?;
            let live = found.as_ref().and_then(|(entry, _)| entry.as_ref());
            let (value, deadline, answer) = match decide(live)? {
                Decision::Keep(answer) => return Ok(answer),
                Decision::Write(value, deadline, answer) => (value, deadline, answer),
            };
            let mode = match found {
                None => PutMode::Create,
                Some((_, Some(e_tag))) => PutMode::Update(UpdateVersion { e_tag: Some(e_tag), version: None }),
                // Without an e-tag the object cannot be replaced only if unchanged.
                Some((_, None)) => return Err(Error::unsupported(op, self.name_str())),
            };
            let bytes = self.config.settings.seal_framed(key, &value, deadline)?;
            if let Put::Stored = self.put(op, &path, bytes, mode).await? {
                self.counters.record_write();
                return Ok(answer);
            }
            // Another writer got there first: back off a random while (growing, at most
            // MAX_BACKOFF) so that contending writers do not keep the store busy with losing
            // rounds.
            let ceiling = BACKOFF_STEP.saturating_mul(1 << attempt.min(6)).min(MAX_BACKOFF);
            tokio::time::sleep(ceiling.mul_f64(fastrand::f64())).await;
        }
        Err(Error::contended(self.name_str(), op, ATTEMPTS))
    }

    pub(super) async fn set_nx(&self, key: &str, value: Value, expiry: Expiry) -> Result<bool> {
        let deadline = expiry.resolve(self.config.settings.default_ttl);
        self.update("set_if_absent", key, cas::set_if_absent(value, deadline)).await
    }

    pub(super) async fn incr_by(&self, key: &str, delta: i64, expiry: Expiry) -> Result<i64> {
        let deadline = expiry.resolve(self.config.settings.default_ttl);
        self.update("incr", key, cas::incr(key, delta, deadline)).await
    }

    pub(super) async fn expire_at(&self, key: &str, expiry: Expiry) -> Result<bool> {
        let deadline = expiry.resolve(self.config.settings.default_ttl);
        self.update("expire", key, cas::expire(deadline)).await
    }
}
