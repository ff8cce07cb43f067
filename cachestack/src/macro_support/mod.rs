//! Runtime support for the code that `#[cached]` and `#[invalidate]` generate.
//!
//! Not a public API: everything here may change in any release. Generated code reaches it as
//! `::cachestack::__private` (or through the `crate = path` override) and names nothing else but
//! `::core`, so it keeps compiling when user code shadows `Result`, `Option`, `Box` or `std`.
//!
//! The one public item defined here is `FnStats`, re-exported at the crate root.
//!
//! Split by concern; everything generated code names is re-exported here, flat:
//! - `state`: the per-function `static` (`CachedFn`, `FnStats`) and the per-thread
//!   `CacheSlot`;
//! - `policy`: return-type policies (`Kind` and the `*Kind` traits), the probes, the
//!   compile-time checks that an attribute applies, `condition`;
//! - `keys`: rendering keys (`KeyProbe`, `KeyFast`, `KeyAny`, `render_key`);
//! - `lookup`: the synchronous part of every call (`lookup`, `Site`, `Lookup`, `Miss`);
//! - `call`: the rest of a call the lookup did not answer (`miss_sync`, `miss_async`);
//! - `resilient`: the calls of functions with resilience options, through the resilience engine
//!   (`resilient_sync`, `resilient_async`), and their compile-time checks;
//! - `invalidate`: `<fn>_invalidate` and `#[invalidate]`;
//! - `front`: the typed front: encoding arguments (`FastProbe`) and the typed operations on a
//!   function's partition of a memory cache.

mod call;
mod front;
mod invalidate;
mod keys;
mod lookup;
mod policy;
mod resilient;
mod state;

pub use crate::cache::Cache;
use crate::error::Error;
pub use crate::expiry::Expiry;
pub use crate::observe::manifest::{FnKind, ManifestEntry};
pub use crate::registry::CacheRegistry;
pub use crate::resilience::{CallStatus, RefreshAhead, Timeout};
pub use crate::value::{Cacheable, Value};
pub use inventory;
pub use std::string::String;
pub use std::thread::LocalKey;
pub use std::thread_local;

pub use call::{miss_async, miss_sync};
pub use front::{FastKeyBuf, FastNone, FastPart, FastProbe};
pub use invalidate::{
    invalidate_async, invalidate_keys_async, invalidate_keys_sync, invalidate_patterns_async, invalidate_patterns_sync,
    invalidate_sync, invalidate_tags_async, invalidate_tags_sync,
};
pub use keys::{
    push_fn_path, push_pattern_part, push_type, render_key, type_name_of, KeyAny, KeyArg, KeyFast, KeyPart, KeyProbe,
};
pub use lookup::{lookup, Lookup, Miss, Mode, Site};
pub use policy::{
    always, assert_cache_err_applies, assert_cache_none_applies, assert_propagate_applies, condition, CacheErrApplies,
    CacheNoneApplies, Condition, Flags, FromCacheError, Kind, OptionKind, PlainKind, Policy, Probe, ProbePlain,
    ProbeResult, PropagateApplies, ResultKind,
};
pub use resilient::{
    clone_owned, condition_fn, resilient_async, resilient_sync, timed_out, FromTimeout, HardTimeoutApplies, OwnedArg,
    Resilience, Resilient, Stamping,
};
pub use state::{CacheSlot, CachedFn, FnStats};

/// `Result` with cachestack's error, spelled without relying on the caller's prelude.
pub type Result<T> = core::result::Result<T, Error>;
