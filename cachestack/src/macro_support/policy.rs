//! Return-type policies: which results are stored and how they come back, chosen by the return
//! type through auto-ref method resolution; the compile-time checks that an attribute applies to
//! the return type; `condition`.

use std::fmt;
use std::marker::PhantomData;

use super::front::{self, FrontOps};
use super::resilient::{stamp, unstamp, Stamping};
use super::{Cache, Cacheable, Value};
use crate::error::Error;

/// How a function's return value is cached. Built by the `*Kind` traits below, chosen by the
/// return type through auto-ref method resolution: `Result<T, E>` caches `Ok(T)` only,
/// `Option<T>` caches `Some` and (unless `cache_none = false`) `None`, anything else is cached
/// as is.
pub struct Policy<R> {
    /// Rebuilds a return value from a stored value (`None`: unreadable, a miss).
    pub(super) load: fn(&Cache, &str, &Value) -> Option<R>,
    /// The value waiters and the cache receive (`None`: nothing shareable, e.g. an `Err`).
    pub(super) share: fn(&R) -> Option<Value>,
    /// Whether the Result/Option rules allow storing this value.
    pub(super) keep: fn(&R) -> bool,
    /// `on_cache_error = "propagate"`: turns a cache error into the function's `Err`.
    pub(super) on_error: Option<fn(Error) -> R>,
    /// The typed operations on the function's partition of a memory cache.
    pub(super) front: Option<FrontOps<R>>,
}

impl<R> Clone for Policy<R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<R> Copy for Policy<R> {}

impl<R> fmt::Debug for Policy<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy").field("propagate", &self.on_error.is_some()).finish()
    }
}

/// Options of `#[cached]` that shape the policy.
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    /// Store `None` results (default true).
    pub cache_none: bool,
}

/// A zero-sized probe of the return type `R`, for auto-ref specialisation.
pub struct Kind<R>(PhantomData<fn() -> R>);

impl<R> Kind<R> {
    /// The probe.
    pub const fn new() -> Self {
        Kind(PhantomData)
    }
}

impl<R> Default for Kind<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> fmt::Debug for Kind<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kind")
    }
}

#[inline]
fn decode<V: Cacheable>(cache: &Cache, key: &str, value: &Value) -> Option<V> {
    // The memory tier's hit: clone the typed value straight into the result.
    match value.typed_ref::<V>() {
        Some(v) => Some(v.clone()),
        None => cache.decode::<V>(key, value),
    }
}

fn share_whole<V: Cacheable>(value: &V) -> Option<Value> {
    Some(Value::new(value.clone()))
}

/// Picked for `Result<T, E>` returns (highest priority: `(&&&Kind::<R>::new())`).
pub trait ResultKind<T, E> {
    /// Caches `Ok` values only.
    fn __cachestack_policy(&self, flags: Flags) -> Policy<core::result::Result<T, E>>
    where
        T: Cacheable;
    /// `cache_err = true`: caches `Err` values too.
    fn __cachestack_policy_cache_err(&self, flags: Flags) -> Policy<core::result::Result<T, E>>
    where
        T: Cacheable,
        E: Cacheable;
    /// `on_cache_error = "propagate"`.
    fn __cachestack_propagate(&self, policy: Policy<core::result::Result<T, E>>) -> Policy<core::result::Result<T, E>>
    where
        E: FromCacheError;
    /// Turns a cache error into this function's `Err` (for `#[invalidate]`).
    fn __cachestack_fail(&self, err: Error) -> Option<core::result::Result<T, E>>
    where
        E: FromCacheError;
    /// With resilience options: stores `Ok` values with their fresh deadline.
    fn __cachestack_stamping(&self, flags: Flags) -> Stamping<core::result::Result<T, E>>
    where
        T: Cacheable;
}

impl<T, E> ResultKind<T, E> for &&Kind<core::result::Result<T, E>> {
    fn __cachestack_policy(&self, _flags: Flags) -> Policy<core::result::Result<T, E>>
    where
        T: Cacheable,
    {
        Policy {
            load: |cache, key, value| decode::<T>(cache, key, value).map(Ok),
            share: |result| result.as_ref().ok().and_then(share_whole),
            keep: |result| result.is_ok(),
            on_error: None,
            front: FrontOps::new::<T>(|handle, key| front::get::<T>(handle, key).map(Ok)),
        }
    }

    fn __cachestack_policy_cache_err(&self, _flags: Flags) -> Policy<core::result::Result<T, E>>
    where
        T: Cacheable,
        E: Cacheable,
    {
        Policy {
            load: decode,
            share: share_whole,
            keep: |_| true,
            on_error: None,
            front: FrontOps::new::<core::result::Result<T, E>>(front::get),
        }
    }

    fn __cachestack_propagate(&self, policy: Policy<core::result::Result<T, E>>) -> Policy<core::result::Result<T, E>>
    where
        E: FromCacheError,
    {
        Policy { on_error: Some(|err| Err(E::from_cache_error(err))), ..policy }
    }

    fn __cachestack_fail(&self, err: Error) -> Option<core::result::Result<T, E>>
    where
        E: FromCacheError,
    {
        Some(Err(E::from_cache_error(err)))
    }

    fn __cachestack_stamping(&self, _flags: Flags) -> Stamping<core::result::Result<T, E>>
    where
        T: Cacheable,
    {
        Stamping {
            encode: |result, fresh_until| stamp(result.as_ref().ok()?, fresh_until),
            decode: |cache, key, value| unstamp::<T>(cache, key, value).map(|(v, fresh_until)| (Ok(v), fresh_until)),
        }
    }
}

/// Picked for `Option<T>` returns.
pub trait OptionKind<T> {
    /// Caches `Some` and, unless `cache_none = false`, `None`.
    fn __cachestack_policy(&self, flags: Flags) -> Policy<Option<T>>
    where
        T: Cacheable;
    /// Same as `__cachestack_policy` (`cache_err` does not apply; an assertion reports it).
    fn __cachestack_policy_cache_err(&self, flags: Flags) -> Policy<Option<T>>
    where
        T: Cacheable;
    /// Does not apply (an assertion reports it).
    fn __cachestack_propagate(&self, policy: Policy<Option<T>>) -> Policy<Option<T>>;
    /// Does not apply.
    fn __cachestack_fail(&self, err: Error) -> Option<Option<T>>;
    /// With resilience options: stores `Some` and, unless `cache_none = false`, `None`.
    fn __cachestack_stamping(&self, flags: Flags) -> Stamping<Option<T>>
    where
        T: Cacheable;
}

impl<T> OptionKind<T> for &Kind<Option<T>> {
    fn __cachestack_policy(&self, flags: Flags) -> Policy<Option<T>>
    where
        T: Cacheable,
    {
        Policy {
            load: decode,
            share: share_whole,
            keep: if flags.cache_none { |_| true } else { |option| option.is_some() },
            on_error: None,
            front: FrontOps::new::<Option<T>>(front::get),
        }
    }

    fn __cachestack_policy_cache_err(&self, flags: Flags) -> Policy<Option<T>>
    where
        T: Cacheable,
    {
        self.__cachestack_policy(flags)
    }

    fn __cachestack_propagate(&self, policy: Policy<Option<T>>) -> Policy<Option<T>> {
        policy
    }

    fn __cachestack_fail(&self, _err: Error) -> Option<Option<T>> {
        None
    }

    fn __cachestack_stamping(&self, flags: Flags) -> Stamping<Option<T>>
    where
        T: Cacheable,
    {
        Stamping {
            encode: if flags.cache_none {
                stamp
            } else {
                |option, fresh_until| stamp(option.as_ref().map(|_| option)?, fresh_until)
            },
            decode: unstamp,
        }
    }
}

/// Picked for every other return type: the value is cached as is.
pub trait PlainKind<R> {
    /// Caches every value.
    fn __cachestack_policy(&self, flags: Flags) -> Policy<R>
    where
        R: Cacheable;
    /// Same (`cache_err` does not apply; an assertion reports it).
    fn __cachestack_policy_cache_err(&self, flags: Flags) -> Policy<R>
    where
        R: Cacheable;
    /// Does not apply (an assertion reports it).
    fn __cachestack_propagate(&self, policy: Policy<R>) -> Policy<R>;
    /// Does not apply.
    fn __cachestack_fail(&self, err: Error) -> Option<R>;
    /// With resilience options: stores every value with its fresh deadline.
    fn __cachestack_stamping(&self, flags: Flags) -> Stamping<R>
    where
        R: Cacheable;
}

impl<R> PlainKind<R> for Kind<R> {
    fn __cachestack_policy(&self, _flags: Flags) -> Policy<R>
    where
        R: Cacheable,
    {
        Policy {
            load: decode,
            share: share_whole,
            keep: |_| true,
            on_error: None,
            front: FrontOps::new::<R>(front::get),
        }
    }

    fn __cachestack_policy_cache_err(&self, flags: Flags) -> Policy<R>
    where
        R: Cacheable,
    {
        self.__cachestack_policy(flags)
    }

    fn __cachestack_propagate(&self, policy: Policy<R>) -> Policy<R> {
        policy
    }

    fn __cachestack_fail(&self, _err: Error) -> Option<R> {
        None
    }

    fn __cachestack_stamping(&self, _flags: Flags) -> Stamping<R>
    where
        R: Cacheable,
    {
        Stamping { encode: stamp, decode: unstamp }
    }
}

/// A reference to a return value, probed by auto-ref to tell whether it is an `Err`.
pub struct Probe<'a, R>(pub &'a R);

impl<R> fmt::Debug for Probe<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Probe")
    }
}

/// `Result` values succeed when `Ok`.
pub trait ProbeResult {
    /// True unless the value is an `Err`.
    fn __cachestack_succeeded(&self) -> bool;
}

impl<T, E> ProbeResult for &Probe<'_, core::result::Result<T, E>> {
    fn __cachestack_succeeded(&self) -> bool {
        self.0.is_ok()
    }
}

/// Every other value succeeds.
pub trait ProbePlain {
    /// Always true.
    fn __cachestack_succeeded(&self) -> bool;
}

impl<R> ProbePlain for Probe<'_, R> {
    fn __cachestack_succeeded(&self) -> bool {
        true
    }
}

/// Error types that `on_cache_error = "propagate"` can return a cache failure in.
#[diagnostic::on_unimplemented(
    message = "`on_cache_error = \"propagate\"` needs the error type `{Self}` to implement `From<cachestack::Error>`",
    label = "cache failures are returned as `Err({Self}::from(cachestack::Error))`",
    note = "implement `From<cachestack::Error>` for `{Self}`, or remove `on_cache_error = \"propagate\"` to call through on cache failures"
)]
pub trait FromCacheError {
    /// Converts.
    fn from_cache_error(err: Error) -> Self;
}

impl<E: From<Error>> FromCacheError for E {
    fn from_cache_error(err: Error) -> Self {
        E::from(err)
    }
}

/// `cache_err` applies to `Result` returns only.
#[diagnostic::on_unimplemented(
    message = "`cache_err` applies to functions returning `Result`, and this one returns `{Self}`",
    label = "`cache_err` needs a `Result<_, _>` return type"
)]
pub trait CacheErrApplies {}
impl<T, E> CacheErrApplies for core::result::Result<T, E> {}

/// `on_cache_error = "propagate"` applies to `Result` returns only.
#[diagnostic::on_unimplemented(
    message = "`on_cache_error = \"propagate\"` applies to functions returning `Result`, and this one returns `{Self}`",
    label = "cache failures can only be propagated as the `Err` of a `Result<_, _>` return type"
)]
pub trait PropagateApplies {}
impl<T, E> PropagateApplies for core::result::Result<T, E> {}

/// `cache_none` applies to `Option` returns only.
#[diagnostic::on_unimplemented(
    message = "`cache_none` applies to functions returning `Option`, and this one returns `{Self}`",
    label = "`cache_none` needs an `Option<_>` return type"
)]
pub trait CacheNoneApplies {}
impl<T> CacheNoneApplies for Option<T> {}

/// Compile-time check for `cache_err`.
pub const fn assert_cache_err_applies<R: CacheErrApplies>() {}

/// Compile-time check for `on_cache_error = "propagate"`.
pub const fn assert_propagate_applies<R: PropagateApplies>() {}

/// Compile-time check for `cache_none`.
pub const fn assert_cache_none_applies<R: CacheNoneApplies>() {}

/// A `condition`, type-erased so that its check against `Fn(&R) -> bool` happens here, once
/// (a closure of the wrong type gives one error, on the closure).
pub type Condition<'a, R> = &'a (dyn Fn(&R) -> bool + Sync + 'a);

/// Checks the `condition` closure against `Fn(&R) -> bool`.
pub fn condition<'a, R, C: Fn(&R) -> bool + Sync + 'a>(condition: &'a C) -> Condition<'a, R> {
    condition
}

/// The condition used when the attribute gives none.
pub fn always<R>(_: &R) -> bool {
    true
}
