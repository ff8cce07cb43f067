//! Procedural macros of cachestack: `#[cached]` and `#[invalidate]`. Use them through the
//! `cachestack` crate (`cachestack::cached`), which holds the runtime they call.
//!
//! Each macro works in four steps, one module each (thiserror's shape): `parse` the
//! attribute's arguments (with darling) and the function, `validate` them against each other
//! into a `model`, and `expand` the model. Every problem found before the expansion is
//! reported, each with a span on the offending token, and the function is still emitted so that
//! one mistake gives one error.

use proc_macro::TokenStream;
use quote::ToTokens;

mod errors;
mod expand;
mod model;
mod parse;
mod parse_lock;
mod parse_names;
mod template;
mod validate;
mod validate_resilience;

use errors::Errors;
use parse::{CachedAttr, Func, InvalidateAttr};

/// Caches a function's results: in the registry's default cache (an in-process memory cache
/// unless configured otherwise) or in the cache named by `cache = "..."`.
///
/// ```
/// use cachestack::cached;
///
/// #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// struct User { id: u64, name: String }
///
/// #[cached(ttl = "5m", key = "user:<id>")]
/// fn get_user(id: u64) -> Option<User> {
///     Some(User { id, name: format!("user {id}") }) // a slow lookup, in real life
/// }
///
/// assert_eq!(get_user(7).unwrap().name, "user 7"); // runs the body
/// assert_eq!(get_user(7).unwrap().name, "user 7"); // answered from the cache
/// assert_eq!(get_user_stats().hits, 1);
/// assert_eq!(get_user_key(&7), "user:7");
/// assert!(get_user_invalidate(&7).unwrap()); // the next call runs the body again
/// ```
///
/// # Attributes
///
/// | attribute | meaning |
/// |---|---|
/// | `ttl = "5m"` | time to live: `"30s"`, `"2h30m"`, `"1d"`... checked at compile time; or any `Duration` expression (`ttl = Duration::from_secs(60)`, `ttl = TTL_CONST`). Without it, the cache's default TTL applies. |
/// | `key = "user:<id>"` | the key template (see *Keys*). Without it, the default key. |
/// | `condition = \|v\| ...` | a closure `FnOnce(&ReturnType) -> bool`: the result is stored only when it returns true. It sees its argument only (the function's arguments have moved into the body). |
/// | `cache = "name"` | a cache of [`CacheRegistry::global()`](../cachestack/registry/struct.CacheRegistry.html), looked up by name. Without it, the cache the key's [prefix route](../cachestack/registry/struct.CacheRegistry.html#method.route) names, else the registry's default cache (routes are matched against the literal start of the key template, once per registry change; a route longer than that start makes each call route its rendered key). |
/// | `namespace = "users"`, `version = 2` | key prefixes (`users:v2:...`); bump `version` when the return type's shape changes, so old entries are never read. |
/// | `lock = false` | turns single flight off (see *Single flight*). |
/// | `lock = "distributed"` | single flight across processes: one body execution per key among every process sharing the cache's store, through the store's lock (Redis, PostgreSQL, Memcached; see *Single flight*). `lock_lease = "10s"` sets the lock's lease. |
/// | `cache_none = false` | for `Option` returns: do not store `None`. |
/// | `cache_err = true` | for `Result` returns: store `Err` values too (the error type must then be cacheable). |
/// | `on_cache_error = "propagate"` | for `Result` returns whose error type implements `From<cachestack::Error>`: a cache failure becomes the function's `Err` instead of being logged and ignored. `"ignore"` is the default. |
/// | `stale_if_error`, `stale_throttle`, `stale_while_revalidate`, `refresh_ahead`, `timeout`, `hard_timeout`, `jitter`, `lock_timeout` | resilience options (see *Resilience*). |
/// | `crate = path` | where the cachestack crate is, for crates that rename or re-export it. |
/// | `in_impl` | tells the macro that an associated function without `self` (and no `Self` in its signature) sits in an `impl` block. |
///
/// An unknown attribute is a compile error that lists the valid ones; so is a duplicate one.
///
/// # Return values
///
/// The cached value must implement [`Cacheable`](../cachestack/trait.Cacheable.html): `Clone`
/// (a hit hands out a clone), `Serialize + DeserializeOwned` (file and network tiers store
/// bytes), `Send + Sync + 'static`. A missing bound is a compile error naming the type and the
/// bound, pointing at the return type.
///
/// - `Result<T, E>`: only `Ok(T)` is cached; errors are never cached (unless `cache_err = true`)
///   and `E` needs no bound. The decision is made on the real type, so aliases such as
///   `io::Result<T>` or `type Res<T> = Result<T, MyError>` are recognised.
/// - `Option<T>`: `Some` and `None` are cached alike; `cache_none = false` stores only `Some`.
/// - Any other type is cached as is.
///
/// `condition` is checked after these rules: an `Err` is never stored whatever the condition.
///
/// # Keys
///
/// A template is literal text with placeholders: `<id>` is the `Display` rendering of the
/// parameter `id`, `<user.id>` of the field `id` of the parameter `user` (tuple fields:
/// `<pair.0>`), `<self.tenant>` a field of the receiver; `<<` is a literal `<`. Placeholders are
/// checked against the signature at compile time: a name that is no parameter, an unclosed `<`,
/// or a value without `Display` is a compile error on the template.
///
/// The default key (no `key`) is
/// `[namespace:][v<version>:]<path>::<fn>[::<T,...>](<arg1>,<arg2>,...)`, where `<path>` is the
/// module path (`module_path!()`, followed by the enclosing function for a function declared
/// inside a function body) for a free function and the type name of `Self` for a method
/// or associated function, the type parameters of a generic function are listed by type name
/// and its const parameters by value (`f::<u8,3>(...)`), and each argument is its `Debug` rendering with `\`, `,` and `)` escaped by a `\`, so two
/// distinct argument lists never produce the same key (`("a:b", "c")` and `("a", "b:c")`
/// give `f("a:b","c")` and `f("a","b:c")`). The receiver is not part of the default key; name
/// its fields in a template when results depend on them. `Debug` renderings of standard types
/// are not guaranteed stable across Rust releases: for caches that outlive the process (files,
/// Redis, ...), prefer a template.
///
/// # Single flight
///
/// When several callers miss the same key at once, one runs the body and the others wait for
/// its result (sync callers block, async callers await) and receive a clone of it. If the body
/// returns an `Err` (which is not shared: errors need not be `Clone`), each waiter runs the body
/// itself. If the leader panics or its future is dropped, a waiter takes over; no one waits
/// forever. Distinct keys never wait on each other. A recursive call with the same key (which
/// would wait for itself) is detected and runs uncached. `lock = false` turns single flight
/// off.
///
/// `lock = "distributed"` extends single flight to every process sharing the cache's store:
/// each process's leader contends for the store's lock, one of them runs the body, and the
/// others poll the store for its value (up to `lock_timeout`, then they run the body
/// themselves). A leader process that dies loses the lock when its lease (`lock_lease`, default
/// 10s, renewed while the body runs) ends or, on PostgreSQL, when its connection closes; one
/// waiter then takes over. The calls go through the resilience engine (as with the options of
/// *Resilience*). The store must have a lock: Redis, PostgreSQL, Memcached, or a stack whose
/// lowest layer is one of them. With any other store (memory, file, object store), a call that
/// misses counts a cache error in the function's stats, logs it, and runs the body without
/// caching its result, whatever the return type (a plain `T` included): it never computes
/// under a weaker lock than the one asked for.
///
/// A synchronous caller that waits on a worker thread of a multi-thread tokio runtime steps out
/// of the worker while it waits (`block_in_place`), so the runtime's other tasks keep running.
/// On a current-thread runtime it blocks the runtime's thread until the leader (always another
/// thread) is done, as computing the value itself would.
///
/// # Cache failures
///
/// A cache that fails (a backend down, an unknown cache name, a stored value that no longer
/// decodes as the return type) never breaks the function: the failure is counted in the stats,
/// logged with `tracing`, and the body runs uncached. With `on_cache_error = "propagate"`, read
/// and resolution failures are returned as `Err` before the body runs, and a write failure after
/// it replaces its `Ok` (undecodable stored values are always a plain miss).
///
/// # Companions
///
/// Next to `fn get_user(id: u64) -> R`, the macro generates, with the same visibility:
///
/// | companion | does |
/// |---|---|
/// | `get_user_invalidate(&id) -> cachestack::Result<bool>` | removes the entry for these arguments (`async` if `get_user` is) |
/// | `get_user_refresh(id) -> R` | runs the body without reading the cache and stores the result |
/// | `get_user_key(&id) -> String` | the key for these arguments |
/// | `get_user_stats() -> cachestack::FnStats` | hits, misses, waits, stale answers, errors, keys in flight |
///
/// Arguments taken by value are taken by reference in `_invalidate` and `_key`; reference
/// arguments are taken as they are. For a method, the companions are methods too
/// (`repo.get_user_invalidate(&id)`, `Repo::get_user_stats()`).
///
/// ```
/// use cachestack::cached;
///
/// struct Repo { tenant: u32 }
///
/// impl Repo {
///     #[cached(key = "t<self.tenant>:name:<id>")]
///     fn name(&self, id: &str) -> String {
///         format!("{}-{id}", self.tenant)
///     }
/// }
///
/// let repo = Repo { tenant: 3 };
/// assert_eq!(repo.name("a"), "3-a");
/// assert_eq!(repo.name_key("a"), "t3:name:a");
/// assert!(repo.name_invalidate("a").unwrap());
/// assert_eq!(Repo::name_stats().misses, 1);
/// ```
///
/// # Resilience
///
/// | attribute | meaning |
/// |---|---|
/// | `stale_if_error = "1h"` | fail-safe: an entry is kept this long after its TTL; when the body then fails (returns `Err` or panics), the caller gets the stale value instead of the failure. Needs `ttl`. |
/// | `stale_throttle = "30s"` | after such a failure, callers get the stale value for this long without running the body again (default 5 s). Needs `stale_if_error`. |
/// | `stale_while_revalidate = "30s"` | within this window after the TTL, a caller gets the stale value at once and one background refresh (single flight) replaces it. Needs `ttl`. |
/// | `refresh_ahead = "80%"` | a hit after this part of the TTL (or this duration: `"4m"`) starts one background refresh, so a hot key never goes cold. Less than 100% (or the TTL); needs `ttl`. |
/// | `timeout = "200ms"` | soft timeout: when the body has not finished by then and a stale value exists, the caller gets it and the body finishes in the background, storing its value. Needs `stale_if_error`; less than `hard_timeout`. |
/// | `hard_timeout = "2s"` | the caller stops waiting and gets `Err(E::from(cachestack::Timeout))`: only for `Result<T, E>` returns with `E: From<cachestack::Timeout>` (`cachestack::Error` and boxed errors have it). |
/// | `jitter = "10%"` | each stored TTL is shortened by a random part up to this, so keys written together do not expire together. Needs `ttl`. |
/// | `lock_timeout = "5s"` | a caller waiting for another caller's computation of the same key runs the body itself after this long. |
///
/// Each mistake (a zero or negative duration, a part of 100% or more, `refresh_ahead` not less
/// than a literal `ttl`, a window without `ttl`, `timeout` not less than `hard_timeout`) is a
/// compile error on the option. The calls of such a function go through the resilience engine
/// of [`Cache::get_or_compute`](../cachestack/struct.Cache.html#method.get_or_compute), which
/// stores each value with its fresh deadline (every store keeps it for the TTL plus the longest
/// stale window), single flight included; a second companion says how a call was served:
///
/// | companion | does |
/// |---|---|
/// | `get_user_with_status(id) -> (R, cachestack::CallStatus)` | `Hit` (fresh from the cache), `Miss` (the body ran for this call), `Stale` (fail-safe, revalidation or soft timeout), `Waited` (another call's computation was awaited); `async` if `get_user` is. For an `x-cache` header. |
///
/// The body runs on the caller's own thread or task whenever the caller waits for it (a miss, a
/// failure answered with a stale value, a `lock_timeout` takeover), so it may borrow its
/// arguments and `&self`. An asynchronous body that passes `hard_timeout` is dropped (cancelled
/// at its current `.await`). What runs after the caller returned (the refresh of
/// `stale_while_revalidate` and `refresh_ahead`, a body past the soft `timeout`, a synchronous
/// body past `hard_timeout`, which the caller leaves on another thread) runs on cachestack's
/// runtime, on clones of the arguments: these options need owned arguments
/// (`Clone + Send + 'static`; `self: Arc<Self>` rather than `&self`), a compile error otherwise.
/// A failure in the background is counted (`Cache::compute_stats`) and logged, and the cache
/// keeps its previous value. The freshness clock is the cache's
/// ([`Cache::with_clock`](../cachestack/struct.Cache.html#method.with_clock), for tests).
///
/// Such a function does not use the typed partition of a memory cache that makes plain hits the
/// fastest (its entries carry a deadline): a hit renders the key and decodes the stamped entry.
/// `lock = false`, `cache_err = true` and `on_cache_error = "propagate"` do not combine with
/// these options (cache failures are counted and logged, and the call goes on), and a
/// `condition` must not capture variables.
///
/// ```
/// use cachestack::{cached, CallStatus};
///
/// #[cached(ttl = "5m", key = "price:<sku>", stale_if_error = "1h", lock_timeout = "5s")]
/// fn price(sku: &str) -> Result<u64, cachestack::Error> {
///     Ok(sku.len() as u64 * 100) // a call to a flaky pricing service, in real life
/// }
///
/// let (value, status) = price_with_status("abc");
/// assert_eq!((value.unwrap(), status), (300, CallStatus::Miss));
/// let (value, status) = price_with_status("abc");
/// assert_eq!((value.unwrap(), status), (300, CallStatus::Hit));
/// assert_eq!(price("abc").unwrap(), 300);
/// ```
///
/// # Supported functions
///
/// Free functions, methods taking `self` in any form but `&mut self`, associated functions,
/// generic functions, `async fn`, arguments by value, by reference, destructured, or `impl
/// Trait` (keyed by `Debug`, or by the template). Not supported, each a compile error: `&mut`
/// arguments (on a hit the body's changes would silently not happen), `const fn`, a function
/// without a body, an `impl Trait` return type. Methods of *trait* impls cannot have companions;
/// cache an inherent method and call it from the trait impl.
///
/// # Speed
///
/// A hit on an in-process cache (the memory backend, or a tiered stack whose front layer is in
/// memory) is answered synchronously, in sync and async functions alike: the key is rendered
/// into a reused thread-local buffer (integers and strings without the formatting machinery),
/// the cache is found through a per-thread slot that is re-resolved only when the registry
/// changes, and the hit is a downcast and a clone. No future is boxed, nothing is serialised.
///
/// Synchronous functions work with every backend: other backends are reached through
/// `cachestack::rt::block_on`, from plain threads and from inside any tokio runtime.
///
/// Functions that share a cache must not render the same key for values of different types; if
/// they do, a value of the other type is a miss (counted as an error), never a wrong value.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// #[cachestack::cached(ttl = "1h")]
/// async fn config(name: &str) -> Result<String, std::io::Error> {
///     Ok(format!("value of {name}"))
/// }
///
/// assert_eq!(config("a").await.unwrap(), "value of a");
/// assert_eq!(config("a").await.unwrap(), "value of a");
/// assert_eq!(config_stats().hits, 1);
/// # });
/// ```
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let attr = CachedAttr::parse(args.into(), &mut errors);
    let func = match parse_item("cached", item) {
        Ok(func) => func,
        Err(tokens) => return tokens,
    };
    let expanded = match validate::cached(&func, attr, &mut errors) {
        Some(model) => expand::cached(&model),
        None => func.to_token_stream(),
    };
    let mut out = errors.into_compile_errors();
    out.extend(expanded);
    out.into()
}

/// Removes cache entries when a function runs: after its body (the default; for a `Result`
/// function, only when it returned `Ok`) or before it (`before = true`).
///
/// ```
/// use cachestack::{cached, invalidate};
///
/// #[cached(key = "user:<id>")]
/// fn user_name(id: u64) -> String { format!("user {id}") }
///
/// #[invalidate(key = "user:<id>")]
/// fn rename_user(id: u64, name: &str) -> Result<(), String> {
///     let _ = name; // write to the database...
///     Ok(())
/// }
///
/// user_name(1);
/// rename_user(1, "Ada").unwrap();
/// user_name(1); // runs the body again
/// assert_eq!(user_name_stats().misses, 2);
/// ```
///
/// With `pattern = "..."` instead of `key`, every key the pattern matches is removed
/// ([`Cache::delete_matching`](../cachestack/struct.Cache.html#method.delete_matching): `*` any
/// run, `?` one character, `\` escapes). Placeholders render as in keys, glob-escaped, so an
/// argument holding `*` matches only itself:
///
/// ```
/// use cachestack::{cached, invalidate};
///
/// #[cached(key = "user:<id>:<field>")]
/// fn user_field(id: u64, field: &str) -> String { format!("{id}.{field}") }
///
/// #[invalidate(pattern = "user:<id>:*")]
/// fn forget_user(id: u64) {}
///
/// user_field(1, "name");
/// forget_user(1);
/// user_field(1, "name"); // runs the body again
/// assert_eq!(user_field_stats().misses, 2);
/// ```
///
/// Attributes: `key = "..."` or `pattern = "..."` (one of them required, several allowed, not
/// both; the template language of [`macro@cached`], checked the same way; in a pattern a lone
/// `\` before a placeholder or at the end is an error), `cache = "name"`, `namespace`, `version` (the same
/// prefixes as the cached function's), `before = true`, `on_cache_error = "propagate"` (for
/// `Result` functions: a failed removal becomes the function's `Err`; by default it is logged and
/// ignored), `crate = path`. Works on sync and async functions.
#[proc_macro_attribute]
pub fn invalidate(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let attr = InvalidateAttr::parse(args.into(), &mut errors);
    let func = match parse_item("invalidate", item) {
        Ok(func) => func,
        Err(tokens) => return tokens,
    };
    let expanded = match validate::invalidate(&func, attr, &mut errors) {
        Some(model) => expand::invalidate(&model),
        None => func.to_token_stream(),
    };
    let mut out = errors.into_compile_errors();
    out.extend(expanded);
    out.into()
}

/// The annotated function, or (when the item is no function) the error followed by the item
/// unchanged.
fn parse_item(name: &str, item: TokenStream) -> Result<Func, TokenStream> {
    syn::parse::<Func>(item.clone()).map_err(|err| {
        let message = format!("#[{name}] applies to functions and methods with a body");
        let mut out = syn::Error::new(err.span(), message).into_compile_error();
        out.extend(proc_macro2::TokenStream::from(item));
        out.into()
    })
}
