//! The atomic operations (`set_if_absent`, `incr`, `expire`) of stores that make them with
//! compare-and-set rounds (memcached's `cas`, object stores' conditional writes), written once:
//! each round reads the live entry and the version it read, decides what to do, and writes only
//! if the entry is still that version; a round lost to another writer is run again.
//!
//! A store implements [`CasRounds`] (one read and one conditional write) and declares its
//! [`AtomicOps`](crate::AtomicOps) with `cas_atomic_ops!`, which adds the three operations.

use std::future::Future;
use std::time::Duration;

use super::{Entry, KeyIo};
use crate::error::{Error, Result};
use crate::expiry::{Deadline, Expiry};
use crate::value::counter::overflow;
use crate::value::Value;

/// How often a round is run when other writers keep changing the entry.
const ATTEMPTS: usize = 256;
/// With back-off: the first ceiling after a lost round; it doubles with each lost round.
const BACKOFF_STEP: Duration = Duration::from_millis(2);
/// With back-off: the largest ceiling.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// A store's compare-and-set round: a read that tells which version it read, and a write that
/// stores only over that version.
pub(crate) trait CasRounds: KeyIo {
    /// What a round read, to write over: a CAS id, an e-tag, or "absent".
    type Version: Send;

    /// Whether a lost round waits a random while (growing with each lost round) before the
    /// next, so that contending writers do not keep the store busy with losing rounds (object
    /// stores, where each request costs).
    const BACKOFF: bool;

    /// The live entry under `key` (`None`: absent, or a dead entry that a write replaces) and
    /// the version read.
    fn read_round(
        &self,
        op: &'static str,
        key: &str,
    ) -> impl Future<Output = Result<(Option<Entry>, Self::Version)>> + Send;

    /// Stores `value` until `deadline` under `key` if it is still at `version`: false when
    /// another writer changed it first. Counts nothing.
    fn write_round(
        &self,
        op: &'static str,
        key: &str,
        version: Self::Version,
        value: &Value,
        deadline: Option<Deadline>,
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// What a round does with what it read.
enum Decision<T> {
    /// Write nothing; answer `T`.
    Keep(T),
    /// Write `value` expiring at `deadline`; answer `T` once stored.
    Write(Value, Option<Deadline>, T),
}

/// Rounds on `key` until one stores (or `decide` keeps): `decide` gets the live entry, or
/// `None` when there is none.
async fn update<S: CasRounds, T>(
    store: &S,
    op: &'static str,
    key: &str,
    mut decide: impl FnMut(Option<&Entry>) -> Result<Decision<T>> + Send,
) -> Result<T> {
    for attempt in 0..ATTEMPTS {
        let (live, version) = store.read_round(op, key).await?;
        let (value, deadline, answer) = match decide(live.as_ref())? {
            Decision::Keep(answer) => return Ok(answer),
            Decision::Write(value, deadline, answer) => (value, deadline, answer),
        };
        if store.write_round(op, key, version, &value, deadline).await? {
            store.counters().record_write();
            return Ok(answer);
        }
        if S::BACKOFF {
            let ceiling = BACKOFF_STEP.saturating_mul(1 << attempt.min(6)).min(MAX_BACKOFF);
            tokio::time::sleep(ceiling.mul_f64(fastrand::f64())).await;
        }
    }
    Err(Error::contended(&store.settings().name, op, ATTEMPTS))
}

/// `set_if_absent`: writes `value` only where no live entry is.
pub(crate) async fn set_if_absent<S: CasRounds>(store: &S, key: &str, value: Value, expiry: Expiry) -> Result<bool> {
    let deadline = expiry.resolve(store.settings().default_ttl);
    update(store, "set_if_absent", key, |live| {
        Ok(match live {
            Some(_) => Decision::Keep(false),
            None => Decision::Write(value.clone(), deadline, true),
        })
    })
    .await
}

/// `incr`: adds `delta` to the live `i64` entry (keeping its deadline), or starts one holding
/// `delta`. Not a counter, or an overflow: an error, nothing written.
pub(crate) async fn incr<S: CasRounds>(store: &S, key: &str, delta: i64, expiry: Expiry) -> Result<i64> {
    let deadline = expiry.resolve(store.settings().default_ttl);
    update(store, "incr", key, |live| match live {
        None => Ok(Decision::Write(Value::new(delta), deadline, delta)),
        Some(entry) => {
            let n = entry
                .value
                .get::<i64>()
                .map_err(|err| Error::invalid(format!("`{key}` does not hold a counter (i64): {err}")))?;
            let sum = n.checked_add(delta).ok_or_else(|| overflow(key, n, delta))?;
            Ok(Decision::Write(Value::new(sum), entry.expires, sum))
        }
    })
    .await
}

/// `expire`: gives the live entry the deadline `expiry` resolves to; nothing to do without one.
pub(crate) async fn expire<S: CasRounds>(store: &S, key: &str, expiry: Expiry) -> Result<bool> {
    let deadline = expiry.resolve(store.settings().default_ttl);
    update(store, "expire", key, |live| {
        Ok(match live {
            None => Decision::Keep(false),
            Some(entry) => Decision::Write(entry.value.clone(), deadline, true),
        })
    })
    .await
}

/// `cas_atomic_ops! { impl AtomicOps for Store { ...keys_matching, delete_matching... } }`: the
/// store's `AtomicOps` impl, with `set_if_absent`, `incr` and `expire` made of its
/// [`CasRounds`], then the methods given.
macro_rules! cas_atomic_ops {
    (impl AtomicOps for $ty:ty { $($rest:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::store::AtomicOps for $ty {
            async fn set_if_absent(&self, key: &str, value: $crate::Value, expiry: $crate::Expiry) -> $crate::Result<bool> {
                $crate::store::cas::set_if_absent(self, key, value, expiry).await
            }
            async fn incr(&self, key: &str, delta: i64, expiry: $crate::Expiry) -> $crate::Result<i64> {
                $crate::store::cas::incr(self, key, delta, expiry).await
            }
            async fn expire(&self, key: &str, expiry: $crate::Expiry) -> $crate::Result<bool> {
                $crate::store::cas::expire(self, key, expiry).await
            }
            $($rest)*
        }
    };
}
pub(crate) use cas_atomic_ops;
