//! Runtime support for the code that `#[cached]` and `#[invalidate]` generate.
//!
//! Not a public API: everything here may change in any release. Generated code reaches it as
//! `::cachestack::__private` (or through the `crate = path` override) and names nothing else but
//! `::core`, so it keeps compiling when user code shadows `Result`, `Option`, `Box` or `std`.
//!
//! The one public item defined here is [`FnStats`], re-exported at the crate root.

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::singleflight::{Join, Outcome, SingleFlight};
use crate::store::{Entry, LocalRead};
use crate::striped::StripedCounter;

pub use crate::cache::Cache;
use crate::error::Error;
pub use crate::expiry::Expiry;
pub use crate::registry::CacheRegistry;
pub use crate::value::{Cacheable, Value};
pub use std::string::String;
pub use std::thread::LocalKey;
pub use std::thread_local;

/// `Result` with cachestack's error, spelled without relying on the caller's prelude.
pub type Result<T> = core::result::Result<T, Error>;

// ---------------------------------------------------------------------------------------------
// Per-function state and stats
// ---------------------------------------------------------------------------------------------

/// Counters of one `#[cached]` function, returned by its generated `<fn>_stats()` companion.
///
/// ```
/// #[cachestack::cached]
/// fn square(n: u64) -> u64 { n * n }
///
/// square(3);
/// square(3);
/// let stats = square_stats();
/// assert_eq!((stats.hits, stats.misses), (1, 1));
/// assert_eq!(stats.hit_ratio(), 0.5);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FnStats {
    /// The function's path (`module::function`).
    pub name: &'static str,
    /// Calls answered from the cache.
    pub hits: u64,
    /// Lookups that found nothing usable (the function ran, or waited for another call).
    pub misses: u64,
    /// Calls that waited for another call computing the same key (single flight) instead of
    /// running the function themselves.
    pub waits: u64,
    /// Cache failures absorbed or propagated: backend errors, an unknown cache name, stored
    /// values that could not be read back as the return type.
    pub errors: u64,
    /// Keys being computed right now.
    pub in_flight: u64,
}

impl FnStats {
    /// hits / (hits + misses), 0 when there were no lookups.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

/// The state one `#[cached]` function keeps in a `static`: where its values go, its counters and
/// its single-flight map.
pub struct CachedFn {
    name: &'static str,
    cache: Option<&'static str>,
    /// Striped: bumped on every hit, from every thread.
    hits: StripedCounter,
    misses: AtomicU64,
    waits: AtomicU64,
    errors: AtomicU64,
    flights: SingleFlight,
}

impl fmt::Debug for CachedFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedFn").field("name", &self.name).field("cache", &self.cache).finish()
    }
}

impl CachedFn {
    /// State for the function `name` using the cache `cache` (`None`: the registry's default).
    pub const fn new(name: &'static str, cache: Option<&'static str>) -> Self {
        CachedFn {
            name,
            cache,
            hits: StripedCounter::new(),
            misses: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            flights: SingleFlight::new(),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> FnStats {
        FnStats {
            name: self.name,
            hits: self.hits.get(),
            misses: self.misses.load(Relaxed),
            waits: self.waits.load(Relaxed),
            errors: self.errors.load(Relaxed),
            in_flight: self.flights.in_flight() as u64,
        }
    }

    /// The cache this function uses, looked up in the global registry.
    pub fn cache(&self) -> Result<Cache> {
        resolve(self.cache)
    }

    fn resolve_logged(&self) -> core::result::Result<Cache, Box<Error>> {
        resolve(self.cache).map_err(|err| {
            tracing::warn!(function = self.name, error = %err, "cachestack: cannot resolve the cache of a #[cached] function; calling it uncached");
            Box::new(err)
        })
    }

    fn record_error(&self, op: &'static str, key: &str, err: &Error) {
        self.errors.fetch_add(1, Relaxed);
        if op == "resolve" {
            // Logged once per thread and registry generation, when the resolution failed.
            return;
        }
        tracing::warn!(function = self.name, op, key, error = %err, "cachestack: cache error in a #[cached] function; calling through");
    }
}

fn resolve(name: Option<&str>) -> Result<Cache> {
    let registry = CacheRegistry::global();
    match name {
        Some(name) => registry.get(name),
        None => Ok(registry.default_cache()),
    }
}

/// A copy of a resolution error for a caller that propagates it (the original stays cached in
/// the thread's slot so it is logged once).
fn copy_error(err: &Error) -> Error {
    match err {
        Error::UnknownCache { name } => Error::UnknownCache { name: name.clone() },
        Error::Config { message } => Error::Config { message: message.clone() },
        other => Error::Generic { backend: "registry".into(), source: other.to_string().into() },
    }
}

/// What a thread remembers about a function's cache: the resolved cache (or the failure) and the
/// registry generation it was resolved at.
struct Resolved {
    generation: u64,
    cache: core::result::Result<Cache, Box<Error>>,
}

/// A per-thread, per-function slot holding the resolved cache, so a hit costs one atomic load
/// of the registry generation instead of a registry lookup. Declared by generated code with
/// `thread_local!`.
pub struct CacheSlot(Cell<Option<Resolved>>);

impl CacheSlot {
    /// An empty slot.
    pub const fn new() -> Self {
        CacheSlot(Cell::new(None))
    }
}

impl Default for CacheSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CacheSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CacheSlot")
    }
}

// ---------------------------------------------------------------------------------------------
// Return-type policies (which results are stored, how they come back)
// ---------------------------------------------------------------------------------------------

/// How a function's return value is cached. Built by the `*Kind` traits below, chosen by the
/// return type through auto-ref method resolution: `Result<T, E>` caches `Ok(T)` only,
/// `Option<T>` caches `Some` and (unless `cache_none = false`) `None`, anything else is cached
/// as is.
pub struct Policy<R> {
    /// Rebuilds a return value from a stored value (`None`: unreadable, a miss).
    load: fn(&Cache, &str, &Value) -> Option<R>,
    /// The value waiters and the cache receive (`None`: nothing shareable, e.g. an `Err`).
    share: fn(&R) -> Option<Value>,
    /// Whether the Result/Option rules allow storing this value.
    keep: fn(&R) -> bool,
    /// `on_cache_error = "propagate"`: turns a cache error into the function's `Err`.
    on_error: Option<fn(Error) -> R>,
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
        }
    }

    fn __cachestack_policy_cache_err(&self, _flags: Flags) -> Policy<core::result::Result<T, E>>
    where
        T: Cacheable,
        E: Cacheable,
    {
        Policy { load: decode, share: share_whole, keep: |_| true, on_error: None }
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
}

impl<R> PlainKind<R> for Kind<R> {
    fn __cachestack_policy(&self, _flags: Flags) -> Policy<R>
    where
        R: Cacheable,
    {
        Policy { load: decode, share: share_whole, keep: |_| true, on_error: None }
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

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// Values a key template placeholder can render (`Display`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be rendered in a cache key: key template placeholders use `Display`",
    label = "this placeholder's value does not implement `std::fmt::Display`",
    note = "implement `Display` for `{Self}`, or name a field that implements it, e.g. `<user.id>`"
)]
pub trait KeyPart {
    /// Appends the rendering.
    fn __cachestack_push(&self, buf: &mut String);
}

impl<T: fmt::Display + ?Sized> KeyPart for T {
    #[inline]
    fn __cachestack_push(&self, buf: &mut String) {
        let _ = write!(buf, "{self}");
    }
}

/// Arguments the default key can render (`Debug`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of the default cache key: arguments are rendered with `Debug`",
    label = "this argument does not implement `std::fmt::Debug`",
    note = "derive or implement `Debug` for `{Self}`, or give the function a key template, e.g. `key = \"user:<id>\"`"
)]
pub trait KeyArg {
    /// Appends the escaped rendering.
    fn __cachestack_push_arg(&self, buf: &mut String);
}

impl<T: fmt::Debug + ?Sized> KeyArg for T {
    #[inline]
    fn __cachestack_push_arg(&self, buf: &mut String) {
        let _ = write!(Escaped(buf), "{self:?}");
    }
}

/// Writes through to a key, escaping `\`, `,` and `)` with `\`, so that the argument list of a
/// default key (`path::f(a,b)`) decodes one way only: distinct argument tuples never collide.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !s.bytes().any(|b| matches!(b, b'\\' | b',' | b')')) {
            self.0.push_str(s);
            return Ok(());
        }
        for c in s.chars() {
            if matches!(c, '\\' | ',' | ')') {
                self.0.push('\\');
            }
            self.0.push(c);
        }
        Ok(())
    }
}

/// A reference to a key part, probed by auto-ref so that integers (the most common keys) are
/// rendered without the formatting machinery: `(&&KeyProbe(&x)).__cachestack_push_part(buf)`.
/// Both paths render exactly what `Display` / `Debug` would.
pub struct KeyProbe<'a, T: ?Sized>(pub &'a T);

impl<T: ?Sized> fmt::Debug for KeyProbe<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyProbe")
    }
}

/// The fast path for integers and strings.
pub trait KeyFast {
    /// Appends a template placeholder (`Display`).
    fn __cachestack_push_part(&self, buf: &mut String);
    /// Appends a default-key argument (`Debug`, escaped).
    fn __cachestack_push_arg(&self, buf: &mut String);
}

/// The general path: any `Display` (templates) or `Debug` (default keys) type.
pub trait KeyAny<T: ?Sized> {
    /// Appends a template placeholder (`Display`).
    fn __cachestack_push_part(&self, buf: &mut String)
    where
        T: KeyPart;
    /// Appends a default-key argument (`Debug`, escaped).
    fn __cachestack_push_arg(&self, buf: &mut String)
    where
        T: KeyArg;
}

impl<T: ?Sized> KeyAny<T> for KeyProbe<'_, T> {
    #[inline]
    fn __cachestack_push_part(&self, buf: &mut String)
    where
        T: KeyPart,
    {
        self.0.__cachestack_push(buf);
    }
    #[inline]
    fn __cachestack_push_arg(&self, buf: &mut String)
    where
        T: KeyArg,
    {
        self.0.__cachestack_push_arg(buf);
    }
}

/// Appends the decimal digits of `n` (what `Display` and `Debug` print for an integer): two digits
/// per division, pushed as ASCII bytes (no formatting machinery, no UTF-8 validation).
#[inline]
fn push_digits(buf: &mut String, mut n: u64) {
    // Pairs of digits, least significant first; at most 9 pairs below the leading digits.
    let mut pairs = [0u8; 10];
    let mut count = 0;
    while n >= 100 {
        pairs[count] = (n % 100) as u8;
        n /= 100;
        count += 1;
    }
    buf.reserve(2 + 2 * count);
    // The leading one or two digits (`n < 100`).
    let lead = n as u8;
    if lead >= 10 {
        buf.push(char::from(b'0' + lead / 10));
    }
    buf.push(char::from(b'0' + lead % 10));
    for &pair in pairs[..count].iter().rev() {
        buf.push(char::from(b'0' + pair / 10));
        buf.push(char::from(b'0' + pair % 10));
    }
}

macro_rules! key_fast_unsigned {
    ($($t:ty),*) => {$(
        impl KeyFast for &KeyProbe<'_, $t> {
            #[inline]
            fn __cachestack_push_part(&self, buf: &mut String) {
                push_digits(buf, *self.0 as u64);
            }
            #[inline]
            fn __cachestack_push_arg(&self, buf: &mut String) {
                push_digits(buf, *self.0 as u64);
            }
        }
    )*};
}

macro_rules! key_fast_signed {
    ($($t:ty),*) => {$(
        impl KeyFast for &KeyProbe<'_, $t> {
            #[inline]
            fn __cachestack_push_part(&self, buf: &mut String) {
                if *self.0 < 0 {
                    buf.push('-');
                }
                push_digits(buf, self.0.unsigned_abs() as u64);
            }
            #[inline]
            fn __cachestack_push_arg(&self, buf: &mut String) {
                self.__cachestack_push_part(buf);
            }
        }
    )*};
}

// 128-bit integers take the general path (their division is a library call anyway).
key_fast_unsigned!(u8, u16, u32, u64, usize);
key_fast_signed!(i8, i16, i32, i64, isize);

macro_rules! key_fast_text {
    ($($t:ty),*) => {$(
        impl KeyFast for &KeyProbe<'_, $t> {
            #[inline]
            fn __cachestack_push_part(&self, buf: &mut String) {
                buf.push_str(self.0);
            }
            #[inline]
            fn __cachestack_push_arg(&self, buf: &mut String) {
                push_text_arg(buf, self.0);
            }
        }
    )*};
}

key_fast_text!(str, String, &str);

/// Appends a text argument as the general path would (`Debug`, then escaped), without the
/// formatting machinery when the text is printable ASCII with nothing to escape: `"text"`.
#[inline]
fn push_text_arg(buf: &mut String, text: &str) {
    if is_plain_text(text.as_bytes()) {
        buf.reserve(text.len() + 2);
        buf.push('"');
        buf.push_str(text);
        buf.push('"');
    } else {
        text.__cachestack_push_arg(buf);
    }
}

/// True when every byte is printable ASCII (`' '..='~'`) and none is one that `Debug` escapes
/// (`"`, `\\`) or that default keys escape (`,`, `)`): such text renders as itself in quotes.
/// Checks eight bytes per step (SWAR): keys are hashed on every call, so this is the hot path of a
/// text-keyed hit.
#[inline]
fn is_plain_text(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Exact for "some byte of `x` is below `n`" when no byte of `x` has its high bit set, n <= 128.
    let has_less = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0;
    let has_byte = |x: u64, b: u8| has_less(x ^ (ONES * u64::from(b)), 1);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut array = [0u8; 8];
        array.copy_from_slice(word);
        let x = u64::from_ne_bytes(array);
        if x & HIGH != 0
            || has_less(x, b' ')
            || has_byte(x, 0x7f)
            || has_byte(x, b'"')
            || has_byte(x, b'\\')
            || has_byte(x, b',')
            || has_byte(x, b')')
        {
            return false;
        }
    }
    words.remainder().iter().all(|&b| matches!(b, b' '..=b'~') && !matches!(b, b'"' | b'\\' | b',' | b')'))
}

/// Appends the name of a type (the `Self` of a method, the type parameters of a generic fn).
#[inline]
pub fn push_type<T: ?Sized>(buf: &mut String) {
    buf.push_str(core::any::type_name::<T>());
}

/// The type name of a value's type (for a function item: its path, enclosing functions included).
#[inline]
pub fn type_name_of<T: ?Sized>(_: &T) -> &'static str {
    core::any::type_name::<T>()
}

/// Appends the path of a free function `name` for its default key: the path of its companion
/// item `companion` (whose item path is `companion_path`) with the last segment replaced by
/// `name`, or `fallback` (`module_path!()::name`) if that path does not have the expected form.
/// Unlike `module_path!()`, the item path names the enclosing function of a function declared in
/// a function body.
#[inline]
pub fn push_fn_path(buf: &mut String, companion_path: &str, companion: &str, name: &str, fallback: &str) {
    match companion_path.strip_suffix(companion) {
        Some(parent) if parent.ends_with("::") => {
            buf.push_str(parent);
            buf.push_str(name);
        }
        _ => buf.push_str(fallback),
    }
}

/// Renders a key into a new string.
pub fn render_key(write: impl FnOnce(&mut String)) -> String {
    let mut key = String::new();
    write(&mut key);
    key
}

thread_local! {
    /// A reusable buffer for rendering keys on the hit path, so a hit allocates nothing.
    static KEY_BUF: Cell<String> = const { Cell::new(String::new()) };
}

// ---------------------------------------------------------------------------------------------
// The call path
// ---------------------------------------------------------------------------------------------

/// How the generated function was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A normal call: read the cache, compute on a miss.
    Call,
    /// The `<fn>_refresh` companion: compute and store, without reading.
    Refresh,
}

/// Everything a generated wrapper knows about itself.
pub struct Site<R> {
    state: &'static CachedFn,
    policy: Policy<R>,
    ttl: Option<Duration>,
    lock: bool,
}

impl<R> fmt::Debug for Site<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Site").field("state", &self.state).field("ttl", &self.ttl).field("lock", &self.lock).finish()
    }
}

impl<R> Site<R> {
    /// A call site.
    #[inline]
    pub fn new(state: &'static CachedFn, policy: Policy<R>, ttl: Option<Duration>, lock: bool) -> Self {
        Site { state, policy, ttl, lock }
    }

    /// Handles a cache failure: counted and logged, then `Some(Err(..))` when the function
    /// propagates cache errors, `None` to call through.
    fn fail(&self, op: &'static str, key: &str, err: Error) -> Option<R> {
        self.state.record_error(op, key, &err);
        self.policy.on_error.map(|to_result| to_result(err))
    }

    /// What to store and share for a computed value: `(stored, shared)`.
    fn settle(&self, result: &R, condition: Condition<'_, R>) -> Option<Value> {
        if (self.policy.keep)(result) && condition(result) {
            (self.policy.share)(result)
        } else {
            None
        }
    }
}

/// The result of the synchronous part of a call.
pub enum Lookup<R> {
    /// Answered from the cache.
    Hit(R),
    /// Not answered: continue with [`miss_sync`] or [`miss_async`].
    Miss(Miss),
}

impl<R> fmt::Debug for Lookup<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lookup::Hit(_) => f.write_str("Hit"),
            Lookup::Miss(miss) => f.debug_tuple("Miss").field(miss).finish(),
        }
    }
}

/// A call the cache did not answer synchronously.
#[derive(Debug)]
pub struct Miss {
    key: String,
    target: Target,
}

#[derive(Debug)]
enum Target {
    /// A local cache, already read: it does not hold the key.
    Local(Cache),
    /// A cache that must be read asynchronously (or through the blocking bridge).
    Remote(Cache),
    /// `<fn>_refresh`: do not read, compute and store.
    Refresh(Cache),
    /// The cache could not be resolved.
    Unavailable(Box<Error>),
}

/// The synchronous part of every call: resolves the cache (one atomic load when nothing changed
/// in the registry) and, for an in-process cache or a stack with an in-process front layer,
/// answers a hit right here: the key is rendered into a reused thread-local buffer, so a hit
/// allocates nothing but the returned clone.
#[inline]
pub fn lookup<R>(
    site: &Site<R>,
    slot: &'static LocalKey<CacheSlot>,
    mode: Mode,
    key: impl FnOnce(&mut String),
) -> Lookup<R> {
    let generation = CacheRegistry::global().generation();
    let resolved = match slot.try_with(|slot| slot.0.take()) {
        Ok(Some(resolved)) if resolved.generation == generation => resolved,
        _ => Resolved { generation, cache: site.state.resolve_logged() },
    };
    // Put back by a guard, so that the result (often a large value) is built right in the return
    // place instead of being moved around the put-back, and so that a panicking `Clone` of the
    // cached value does not lose the slot.
    let restore = RestoreSlot { slot, resolved: Some(resolved) };
    match &restore.resolved {
        Some(resolved) => probe(site, &resolved.cache, mode, key),
        None => Lookup::Miss(Miss {
            key: render_key(key),
            target: Target::Unavailable(Box::new(Error::invalid("no cache"))),
        }),
    }
}

/// Puts a thread's resolved cache back into its slot.
struct RestoreSlot {
    slot: &'static LocalKey<CacheSlot>,
    resolved: Option<Resolved>,
}

impl Drop for RestoreSlot {
    #[inline]
    fn drop(&mut self) {
        let resolved = self.resolved.take();
        let _ = self.slot.try_with(|slot| slot.0.set(resolved));
    }
}

/// The thread's key buffer, given back when dropped.
struct KeyBuf(String);

impl KeyBuf {
    #[inline]
    fn take() -> Self {
        let mut buf = KEY_BUF.try_with(Cell::take).unwrap_or_default();
        buf.clear();
        KeyBuf(buf)
    }
}

impl Drop for KeyBuf {
    #[inline]
    fn drop(&mut self) {
        let buf = core::mem::take(&mut self.0);
        let _ = KEY_BUF.try_with(|slot| slot.set(buf));
    }
}

#[inline]
fn probe<R>(
    site: &Site<R>,
    cache: &core::result::Result<Cache, Box<Error>>,
    mode: Mode,
    key: impl FnOnce(&mut String),
) -> Lookup<R> {
    let state = site.state;
    let cache = match cache {
        Ok(cache) => cache,
        Err(err) => {
            // Counted as an error by `Site::fail` when the miss is handled.
            state.misses.fetch_add(1, Relaxed);
            return Lookup::Miss(Miss { key: String::new(), target: Target::Unavailable(Box::new(copy_error(err))) });
        }
    };
    // `as_local`: an in-process store, whose miss is final. `local_l1`: a first look into the
    // in-process front layer of a stack, whose miss continues with the stack's `get`.
    let backend = cache.backend();
    let definitive = backend.as_local();
    let first_look = match mode {
        Mode::Call => definitive.map(|l| l as &dyn LocalRead).or_else(|| backend.local_l1()),
        Mode::Refresh => None,
    };
    let Some(local) = first_look else {
        let key = render_key(key);
        let target = match mode {
            Mode::Call => Target::Remote(cache.clone()),
            Mode::Refresh => Target::Refresh(cache.clone()),
        };
        return Lookup::Miss(Miss { key, target });
    };
    let mut buf = KeyBuf::take();
    key(&mut buf.0);
    // The hit is built in the return place (the buffer goes back when `buf` drops).
    match local.get_value(&buf.0) {
        Some(value) => match (site.policy.load)(cache, &buf.0, &value) {
            Some(hit) => {
                state.hits.add(1);
                Lookup::Hit(hit)
            }
            None => {
                // Counted here when this miss is final; a stack's read meets the same value
                // again and counts it then (one failure per call).
                if definitive.is_some() {
                    state.errors.fetch_add(1, Relaxed);
                }
                local_miss(state, definitive.is_some(), &buf.0, cache)
            }
        },
        None => local_miss(state, definitive.is_some(), &buf.0, cache),
    }
}

/// A key the in-process store (or the in-process front layer of a stack) does not hold.
#[cold]
fn local_miss<R>(state: &CachedFn, definitive: bool, key: &str, cache: &Cache) -> Lookup<R> {
    if definitive {
        state.misses.fetch_add(1, Relaxed);
        Lookup::Miss(Miss { key: key.to_owned(), target: Target::Local(cache.clone()) })
    } else {
        // Not in the front layer: the stack's own read decides (and is counted then).
        Lookup::Miss(Miss { key: key.to_owned(), target: Target::Remote(cache.clone()) })
    }
}

/// What to do after reading a remote cache.
enum Read<R> {
    Hit(R),
    Miss,
    Fail(R),
}

fn after_read<R>(site: &Site<R>, cache: &Cache, key: &str, read: Result<Option<Entry>>) -> Read<R> {
    let state = site.state;
    match read {
        Ok(Some(entry)) => match (site.policy.load)(cache, key, &entry.value) {
            Some(hit) => {
                state.hits.add(1);
                Read::Hit(hit)
            }
            None => {
                state.errors.fetch_add(1, Relaxed);
                state.misses.fetch_add(1, Relaxed);
                Read::Miss
            }
        },
        Ok(None) => {
            state.misses.fetch_add(1, Relaxed);
            Read::Miss
        }
        Err(err) => {
            state.misses.fetch_add(1, Relaxed);
            match site.fail("read", key, err) {
                Some(failed) => Read::Fail(failed),
                None => Read::Miss,
            }
        }
    }
}

fn recheck_local<R>(site: &Site<R>, cache: &Cache, key: &str) -> Option<(R, Value)> {
    let value = cache.backend().as_local()?.get_value(key)?;
    let hit = (site.policy.load)(cache, key, &value)?;
    Some((hit, value))
}

/// Whether a new leader must read a remote cache again before computing: its first read was
/// sent when the flight counter stood at `seen`, and a flight that ended since may have stored
/// the key after that read looked (the read's miss is then stale).
fn reread_needed<R>(site: &Site<R>, seen: Option<u64>) -> bool {
    seen.is_some_and(|seen| site.state.flights.ended() != seen)
}

/// A second read of a remote cache by a new leader (see [`reread_needed`]): a hit is shared with
/// the waiters; a failure is counted and logged, and the leader computes (the call already went
/// on as a miss after its first read).
fn reread<R>(site: &Site<R>, cache: &Cache, key: &str, read: Result<Option<Entry>>) -> Option<(R, Value)> {
    match read {
        Ok(Some(entry)) => {
            let hit = (site.policy.load)(cache, key, &entry.value)?;
            Some((hit, entry.value))
        }
        Ok(None) => None,
        Err(err) => {
            site.state.record_error("read", key, &err);
            None
        }
    }
}

fn write_sync(cache: &Cache, key: &str, value: Value, ttl: Option<Duration>) -> Result<()> {
    let ttl = Expiry::from_ttl(ttl);
    if let Some(local) = cache.backend().as_local() {
        local.set_value(key, value, ttl);
        return Ok(());
    }
    let backend = cache.backend().clone();
    let key = key.to_owned();
    crate::rt::block_on(async move { backend.set(&key, value, ttl).await })?
}

async fn write_async(cache: &Cache, key: &str, value: Value, ttl: Option<Duration>) -> Result<()> {
    let ttl = Expiry::from_ttl(ttl);
    if let Some(local) = cache.backend().as_local() {
        local.set_value(key, value, ttl);
        return Ok(());
    }
    cache.backend().set(key, value, ttl).await
}

fn read_sync(cache: &Cache, key: &str) -> Result<Option<Entry>> {
    if let Some(local) = cache.backend().as_local() {
        return Ok(local.get_entry(key));
    }
    let backend = cache.backend().clone();
    let key = key.to_owned();
    crate::rt::block_on(async move { backend.get(&key).await })?
}

/// Stores what `settle` chose; returns the function's result (or, when propagating, the write
/// error as the function's `Err`) and the value to share with waiters.
fn store_sync<R>(site: &Site<R>, cache: &Cache, key: &str, result: R, stored: Option<Value>) -> R {
    if let Some(value) = stored {
        if let Err(err) = write_sync(cache, key, value, site.ttl) {
            if let Some(failed) = site.fail("write", key, err) {
                return failed;
            }
        }
    }
    result
}

async fn store_async<R>(site: &Site<R>, cache: &Cache, key: &str, result: R, stored: Option<Value>) -> R {
    if let Some(value) = stored {
        if let Err(err) = write_async(cache, key, value, site.ttl).await {
            if let Some(failed) = site.fail("write", key, err) {
                return failed;
            }
        }
    }
    result
}

/// The rest of a synchronous call that [`lookup`] did not answer: reads a remote cache (through
/// [`crate::rt::block_on`], which works on plain threads and inside tokio runtimes), then runs
/// `body` under single flight and stores its result.
pub fn miss_sync<R>(site: &Site<R>, miss: Miss, body: impl FnOnce() -> R, condition: Condition<'_, R>) -> R {
    let Miss { key, target } = miss;
    // `seen`: for a remote cache, the flight counter when its read was sent.
    let (cache, seen) = match target {
        Target::Unavailable(err) => return site.fail("resolve", &key, *err).unwrap_or_else(body),
        Target::Refresh(cache) => {
            let result = body();
            let stored = site.settle(&result, condition);
            return store_sync(site, &cache, &key, result, stored);
        }
        Target::Local(cache) => (cache, None),
        Target::Remote(cache) => {
            let seen = site.state.flights.ended();
            match after_read(site, &cache, &key, read_sync(&cache, &key)) {
                Read::Hit(hit) | Read::Fail(hit) => return hit,
                Read::Miss => (cache, Some(seen)),
            }
        }
    };
    if !site.lock {
        let result = body();
        let stored = site.settle(&result, condition);
        return store_sync(site, &cache, &key, result, stored);
    }
    let mut waited = false;
    loop {
        match site.state.flights.join(&key) {
            Join::Reentrant => {
                tracing::debug!(
                    function = site.state.name,
                    key,
                    "cachestack: recursive call with its own key runs uncached"
                );
                return body();
            }
            Join::Leader(leader) => {
                let recheck = if reread_needed(site, seen) {
                    reread(site, &cache, &key, read_sync(&cache, &key))
                } else {
                    recheck_local(site, &cache, &key)
                };
                if let Some((hit, value)) = recheck {
                    leader.complete(|| Some(value));
                    return hit;
                }
                let result = leader.run(body);
                let stored = site.settle(&result, condition);
                let shared = stored.clone();
                let result = store_sync(site, &cache, &key, result, stored);
                leader.complete(|| shared.or_else(|| (site.policy.share)(&result)));
                return result;
            }
            Join::Waiter(waiter) => {
                // A call that waits again (its leader was abandoned) is still one call that waited.
                if !core::mem::replace(&mut waited, true) {
                    site.state.waits.fetch_add(1, Relaxed);
                }
                match waiter.wait() {
                    Outcome::Shared(value) => {
                        if let Some(shared) = (site.policy.load)(&cache, &key, &value) {
                            return shared;
                        }
                        site.state.errors.fetch_add(1, Relaxed);
                        return body();
                    }
                    Outcome::NotShared => {
                        let result = body();
                        let stored = site.settle(&result, condition);
                        return store_sync(site, &cache, &key, result, stored);
                    }
                    // The leader panicked: one of its waiters takes over.
                    Outcome::Abandoned => continue,
                }
            }
        }
    }
}

/// The rest of an asynchronous call that [`lookup`] did not answer: awaits a remote cache, then
/// awaits `body` under single flight and stores its result.
pub async fn miss_async<R, F>(site: &Site<R>, miss: Miss, body: F, condition: Condition<'_, R>) -> R
where
    F: core::future::Future<Output = R>,
{
    let Miss { key, target } = miss;
    // `seen`: for a remote cache, the flight counter when its read was sent.
    let (cache, seen) = match target {
        Target::Unavailable(err) => {
            return match site.fail("resolve", &key, *err) {
                Some(failed) => failed,
                None => body.await,
            }
        }
        Target::Refresh(cache) => {
            let result = body.await;
            let stored = site.settle(&result, condition);
            return store_async(site, &cache, &key, result, stored).await;
        }
        Target::Local(cache) => (cache, None),
        Target::Remote(cache) => {
            let seen = site.state.flights.ended();
            let read = cache.backend().get(&key).await;
            match after_read(site, &cache, &key, read) {
                Read::Hit(hit) | Read::Fail(hit) => return hit,
                Read::Miss => (cache, Some(seen)),
            }
        }
    };
    if !site.lock {
        let result = body.await;
        let stored = site.settle(&result, condition);
        return store_async(site, &cache, &key, result, stored).await;
    }
    let mut waited = false;
    loop {
        match site.state.flights.join(&key) {
            Join::Reentrant => {
                tracing::debug!(
                    function = site.state.name,
                    key,
                    "cachestack: recursive call with its own key runs uncached"
                );
                return body.await;
            }
            Join::Leader(leader) => {
                let recheck = if reread_needed(site, seen) {
                    reread(site, &cache, &key, cache.backend().get(&key).await)
                } else {
                    recheck_local(site, &cache, &key)
                };
                if let Some((hit, value)) = recheck {
                    leader.complete(|| Some(value));
                    return hit;
                }
                let result = leader.run_async(body).await;
                let stored = site.settle(&result, condition);
                let shared = stored.clone();
                let result = store_async(site, &cache, &key, result, stored).await;
                leader.complete(|| shared.or_else(|| (site.policy.share)(&result)));
                return result;
            }
            Join::Waiter(waiter) => {
                // A call that waits again (its leader was abandoned) is still one call that waited.
                if !core::mem::replace(&mut waited, true) {
                    site.state.waits.fetch_add(1, Relaxed);
                }
                match waiter.wait_async().await {
                    Outcome::Shared(value) => {
                        if let Some(shared) = (site.policy.load)(&cache, &key, &value) {
                            return shared;
                        }
                        site.state.errors.fetch_add(1, Relaxed);
                        return body.await;
                    }
                    Outcome::NotShared => {
                        let result = body.await;
                        let stored = site.settle(&result, condition);
                        return store_async(site, &cache, &key, result, stored).await;
                    }
                    // The leader panicked or was cancelled: one of its waiters takes over.
                    Outcome::Abandoned => continue,
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Companions and #[invalidate]
// ---------------------------------------------------------------------------------------------

fn delete_sync(cache: &Cache, keys: &[String]) -> Result<u64> {
    if let Some(local) = cache.backend().as_local() {
        return Ok(keys.iter().map(|key| u64::from(local.remove(key))).sum());
    }
    let backend = cache.backend().clone();
    let keys = keys.to_vec();
    crate::rt::block_on(async move {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        backend.delete_many(&keys).await
    })?
}

async fn delete_async(cache: &Cache, keys: &[String]) -> Result<u64> {
    if let Some(local) = cache.backend().as_local() {
        return Ok(keys.iter().map(|key| u64::from(local.remove(key))).sum());
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    cache.backend().delete_many(&keys).await
}

/// `<fn>_invalidate` for synchronous functions: removes `key` from the function's cache.
pub fn invalidate_sync(state: &CachedFn, key: String) -> Result<bool> {
    let cache = state.cache()?;
    Ok(delete_sync(&cache, &[key])? > 0)
}

/// `<fn>_invalidate` for asynchronous functions.
pub async fn invalidate_async(state: &CachedFn, key: String) -> Result<bool> {
    let cache = state.cache()?;
    Ok(delete_async(&cache, &[key]).await? > 0)
}

fn invalidation_failed(function: &'static str, keys: &[String], err: Error, propagate: bool) -> Option<Error> {
    tracing::warn!(function, ?keys, error = %err, "cachestack: #[invalidate] could not remove keys");
    propagate.then_some(err)
}

/// `#[invalidate]` on a synchronous function: removes `keys`; a failure is logged and, when
/// `propagate` is set, returned.
pub fn invalidate_keys_sync(
    function: &'static str,
    cache: Option<&'static str>,
    keys: &[String],
    propagate: bool,
) -> Option<Error> {
    match resolve(cache).and_then(|cache| delete_sync(&cache, keys)) {
        Ok(_) => None,
        Err(err) => invalidation_failed(function, keys, err, propagate),
    }
}

/// `#[invalidate]` on an asynchronous function.
pub async fn invalidate_keys_async(
    function: &'static str,
    cache: Option<&'static str>,
    keys: &[String],
    propagate: bool,
) -> Option<Error> {
    let result = match resolve(cache) {
        Ok(cache) => delete_async(&cache, keys).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(_) => None,
        Err(err) => invalidation_failed(function, keys, err, propagate),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg_list(args: &[&dyn fmt::Debug]) -> String {
        let mut key = String::from("f(");
        for (i, arg) in args.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            arg.__cachestack_push_arg(&mut key);
        }
        key.push(')');
        key
    }

    #[test]
    fn the_integer_fast_path_renders_what_display_and_debug_do() {
        fn both<T: fmt::Display + fmt::Debug>(value: T)
        where
            for<'a, 'b> &'b KeyProbe<'a, T>: KeyFast,
        {
            let (mut part, mut arg) = (String::new(), String::new());
            KeyFast::__cachestack_push_part(&&KeyProbe(&value), &mut part);
            KeyFast::__cachestack_push_arg(&&KeyProbe(&value), &mut arg);
            assert_eq!(part, value.to_string());
            assert_eq!(arg, format!("{value:?}"));
        }
        for n in [0u64, 7, 10, 1234567890, u64::MAX] {
            both(n);
        }
        for n in [0i64, -1, 42, i64::MIN, i64::MAX] {
            both(n);
        }
        both(usize::MAX);
        both(isize::MIN);
        both(-128i8);
        both(String::from("plain text"));
        both("plain");
    }

    #[test]
    fn default_key_arguments_never_collide() {
        let a = arg_list(&[&"a:b", &"c"]);
        let b = arg_list(&[&"a", &"b:c"]);
        assert_ne!(a, b);
        // Separators inside renderings are escaped.
        let c = arg_list(&[&Wrapper("x,y")]);
        let d = arg_list(&[&Wrapper("x"), &Wrapper("y")]);
        assert_ne!(c, d);
        assert_eq!(c, r"f(x\,y)");
        assert_eq!(arg_list(&[&Wrapper(r"a\)")]), r"f(a\\\))");
    }

    #[test]
    fn integers_render_like_display_at_every_length() {
        let mut n = 1u64;
        loop {
            for m in [n - 1, n, n + 1, n.saturating_mul(7) / 3] {
                let mut buf = String::from("k:");
                push_digits(&mut buf, m);
                assert_eq!(buf, format!("k:{m}"));
            }
            match n.checked_mul(10) {
                Some(next) => n = next,
                None => break,
            }
        }
        let mut buf = String::new();
        push_digits(&mut buf, u64::MAX);
        assert_eq!(buf, u64::MAX.to_string());
    }

    #[test]
    fn plain_text_detection_is_exact_for_every_byte_at_every_position() {
        for len in 1..=17 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    let expected = matches!(b, b' '..=b'~') && !matches!(b, b'"' | b'\\' | b',' | b')');
                    assert_eq!(is_plain_text(&bytes), expected, "byte {b:#x} at {at} of {len}");
                }
            }
        }
        assert!(is_plain_text(b""));
    }

    #[test]
    fn the_text_fast_path_renders_what_the_general_path_does() {
        for text in
            ["", "plain", "with space", "a,b", "x)", "q\"uote", "back\\slash", "tab\t", "é", "line\n", "~!@#$%^&*(_+"]
        {
            let mut fast = String::new();
            KeyFast::__cachestack_push_arg(&&KeyProbe(text), &mut fast);
            let mut general = String::new();
            text.__cachestack_push_arg(&mut general);
            assert_eq!(fast, general, "{text:?}");
        }
    }

    struct Wrapper(&'static str);
    impl fmt::Debug for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
}
