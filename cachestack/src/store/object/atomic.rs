//! The atomic operations of [`ObjectStoreCache`], as conditional writes: read the object and its
//! e-tag, decide, then create it only if it is still absent (`If-None-Match: *`) or replace it
//! only if it is still the one read (`If-Match: <e-tag>`); again if another writer got there
//! first.
//!
//! - `set_if_absent` writes only over no object, or over a dead one (expired, another key's,
//!   unusable): of racing callers exactly one wins.
//! - `incr` adds to an `i64` entry; `expire` re-seals the live value with the new deadline.
//! - A round lost to another writer backs off a random while before the next one.
//! - Key patterns (`keys_matching`, `delete_matching`) list the namespace (see `listing.rs`).
//!
//! A store that cannot write conditionally (object_store answers "not implemented": S3 with
//! `conditional_put` disabled, a local directory for updates) makes these operations fail with
//! [`Error::Unsupported`]: never a read followed by a blind write.

use object_store::{PutMode, UpdateVersion};

use super::requests::Put;
use super::ObjectStoreCache;
use crate::error::{Error, Result};
use crate::expiry::Deadline;
use crate::pattern::KeyPattern;
use crate::store::cas::{cas_atomic_ops, CasRounds};
use crate::store::{Entry, KeyVisitor};
use crate::value::Value;

impl CasRounds for ObjectStoreCache {
    /// `None`: no object; else the e-tag of the object read (`None`: the store gave none).
    type Version = Option<Option<String>>;
    const BACKOFF: bool = true;

    async fn read_round(&self, op: &'static str, key: &str) -> Result<(Option<Entry>, Self::Version)> {
        Ok(match self.read(op, key).await? {
            None => (None, None),
            Some((live, e_tag)) => (live, Some(e_tag)),
        })
    }

    async fn write_round(
        &self,
        op: &'static str,
        key: &str,
        version: Self::Version,
        value: &Value,
        deadline: Option<Deadline>,
    ) -> Result<bool> {
        let mode = match version {
            None => PutMode::Create,
            Some(Some(e_tag)) => PutMode::Update(UpdateVersion { e_tag: Some(e_tag), version: None }),
            // Without an e-tag the object cannot be replaced only if unchanged.
            Some(None) => return Err(Error::unsupported(op, self.name_str())),
        };
        let bytes = self.config.settings.seal_framed(key, value, deadline)?;
        Ok(matches!(self.put(op, &self.path(key), bytes, mode).await?, Put::Stored))
    }
}

cas_atomic_ops! {
    impl AtomicOps for ObjectStoreCache {
        async fn keys_matching(&self, pattern: &KeyPattern, batch: usize, visit: &mut KeyVisitor<'_>) -> Result<()> {
            self.list_keys(pattern, batch, visit).await
        }

        async fn delete_matching(&self, pattern: &KeyPattern) -> Result<u64> {
            self.remove_matching(pattern).await
        }
    }
}
