//! The decisions of the atomic operations (`set_if_absent`, `incr`, `expire`) for stores that
//! make them with compare-and-set rounds (memcached's `cas`, object stores' conditional writes):
//! each round reads the live entry, asks one of these what to do, and writes only if nothing
//! changed in between.

use crate::error::{Error, Result};
use crate::expiry::Deadline;
use crate::store::Entry;
use crate::value::counter::overflow;
use crate::value::Value;

/// What a compare-and-set round does with what it read.
pub(crate) enum Decision<T> {
    /// Write nothing; answer `T`.
    Keep(T),
    /// Write `value` expiring at `deadline`; answer `T` once stored.
    Write(Value, Option<Deadline>, T),
}

/// `set_if_absent`: write `value` (until `deadline`) only where no live entry is.
pub(crate) fn set_if_absent(
    value: Value,
    deadline: Option<Deadline>,
) -> impl FnMut(Option<&Entry>) -> Result<Decision<bool>> {
    move |live| {
        Ok(match live {
            Some(_) => Decision::Keep(false),
            None => Decision::Write(value.clone(), deadline, true),
        })
    }
}

/// `incr`: add `delta` to the live `i64` entry (keeping its deadline), or start one holding
/// `delta` until `deadline`. Not a counter, or an overflow: an error, nothing written.
pub(crate) fn incr<'a>(
    key: &'a str,
    delta: i64,
    deadline: Option<Deadline>,
) -> impl FnMut(Option<&Entry>) -> Result<Decision<i64>> + 'a {
    move |live| match live {
        None => Ok(Decision::Write(Value::new(delta), deadline, delta)),
        Some(entry) => {
            let n = entry
                .value
                .get::<i64>()
                .map_err(|err| Error::invalid(format!("`{key}` does not hold a counter (i64): {err}")))?;
            let sum = n.checked_add(delta).ok_or_else(|| overflow(key, n, delta))?;
            Ok(Decision::Write(Value::new(sum), entry.expires, sum))
        }
    }
}

/// `expire`: give the live entry `deadline`; nothing to do without one.
pub(crate) fn expire(deadline: Option<Deadline>) -> impl FnMut(Option<&Entry>) -> Result<Decision<bool>> {
    move |live| {
        Ok(match live {
            None => Decision::Keep(false),
            Some(entry) => Decision::Write(entry.value.clone(), deadline, true),
        })
    }
}
