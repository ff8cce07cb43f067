//! HTTP response caching (feature `tower`): [`HttpCacheLayer`], a `tower` layer that answers GET
//! and HEAD requests from any cachestack [`Cache`] (memory, a tiered stack, Redis, ...).
//!
//! ```
//! use std::convert::Infallible;
//! use std::future::{ready, Ready};
//! use std::task::{Context, Poll};
//! use std::time::Duration;
//!
//! use cachestack::http::HttpCacheLayer;
//! use cachestack::{Cache, ComputeOptions, MemoryBackend};
//! use http::{header, Request, Response};
//! use tower_layer::Layer;
//! use tower_service::Service;
//!
//! // Any tower service with an HTTP response: an axum `Router`, a hyper service, ...
//! #[derive(Clone)]
//! struct Hello;
//! impl Service<Request<String>> for Hello {
//!     type Response = Response<String>;
//!     type Error = Infallible;
//!     type Future = Ready<Result<Response<String>, Infallible>>;
//!     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
//!         Poll::Ready(Ok(()))
//!     }
//!     fn call(&mut self, request: Request<String>) -> Self::Future {
//!         ready(Ok(Response::new(format!("hello from {}", request.uri().path()))))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let cache = Cache::new(MemoryBackend::with_capacity(10_000));
//! let options = ComputeOptions::builder()
//!     .ttl(Duration::from_secs(60)) // unless the response's max-age / s-maxage says otherwise
//!     .stale_if_error(Duration::from_secs(3600)) // a 5xx or an error answers with the old response
//!     .build()?;
//! let mut service = HttpCacheLayer::new(cache, options).vary([header::ACCEPT_LANGUAGE]).layer(Hello);
//!
//! let first = service.call(Request::get("/greeting").body(String::new())?).await?;
//! assert_eq!(first.headers()["x-cache"], "MISS");
//! let second = service.call(Request::get("/greeting").body(String::new())?).await?;
//! assert_eq!(second.headers()["x-cache"], "HIT");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # What is cached, and how
//!
//! - **Key**: the layer's prefix (`"http:"`), the URI's path and query, and the values of the
//!   request headers given to [`HttpCacheLayer::vary`]. The host is not part of it (add `host` to
//!   `vary` for a service of several hosts).
//! - **GET and HEAD share an entry.** A HEAD is answered from the GET's entry without the body
//!   (with its `Content-Length`); a HEAD that misses is sent to the handler as a GET (like nginx's
//!   `proxy_cache_convert_head`), whose response fills the entry and whose body is dropped.
//!   Other methods go to the handler untouched (and invalidate nothing).
//! - **Request `Cache-Control`**: `no-store` bypasses the cache (no read, no write); `no-cache`
//!   (or `max-age=0`, or `Pragma: no-cache` without `Cache-Control`) goes to the handler and
//!   replaces the entry with its response. Other request directives are ignored.
//! - **Response**: stored when its status is in [`HttpCacheLayer::statuses`] (default 200, 203
//!   and 204), it has no `Set-Cookie`, its `Cache-Control` has none of `no-store`, `private`,
//!   `no-cache` (this cache does not revalidate) and no zero `max-age`, its `Vary` names only
//!   headers of the key (`Vary: *` or another header: not stored; configure the header with
//!   `vary` to cache it), and, for a request with `Authorization`, it says `public`, `s-maxage` or
//!   `must-revalidate` (RFC 9111 §3.5). It is fresh for its `s-maxage` (this is a shared cache),
//!   else its `max-age`, else the TTL of the layer's [`ComputeOptions`] (`None`: the store's
//!   default TTL, never stale). Each entry's deadline is fixed when it is written. Stored: the
//!   status, the headers but hop-by-hop ones, and the body; `Content-Length` is set from it.
//! - **Body size limit** ([`HttpCacheLayer::max_body_bytes`], default 1 MiB): a response whose
//!   `Content-Length` or size hint is larger is not read; one that grows past the limit while it
//!   is read keeps at most the limit plus one frame in memory, sends that first and streams the
//!   rest. Either way the response reaches the client whole and is not stored.
//! - **Single flight**: concurrent requests for one key run the handler once; the others get its
//!   response when it is stored (when it is not, each calls the handler itself).
//! - **Resilience** (from [`ComputeOptions`]): a 5xx response or an error of the handler is a
//!   failure; with `stale_if_error` a stored response up to that long past its freshness answers
//!   it (`x-cache: STALE`), within `stale_throttle`. With `stale_while_revalidate` a response that
//!   recently expired is answered at once (`STALE`) while one background request refreshes it.
//!   `lock_timeout`, `refresh_ahead`, `jitter` (of the layer's TTL) and the timeouts apply as in
//!   [`Cache::get_or_compute`]; past `hard_timeout` the caller gets `504 Gateway Timeout`.
//!   `must-revalidate` in a response does not shorten the stale windows. Background work (a
//!   refresh, a handler past the soft `timeout`) calls a clone of the handler on cachestack's
//!   runtime with the request's head and an empty body (hence `ReqBody: Default`).
//! - **Headers**: `x-cache: HIT` (from the cache, or from another request's handler run), `MISS`
//!   (this request's handler run, or not cacheable) or `STALE`; `Age` on `HIT` and `STALE`.
//! - A cache that fails never fails the request: the read is a miss, the write is skipped; both
//!   are counted in [`Cache::compute_stats`] and logged.

mod body;
mod key;
mod policy;
mod service;
mod stored;

use std::fmt;
use std::sync::Arc;

use http::header::HeaderName;
use http::StatusCode;
use tower_layer::Layer;

pub use body::CacheBody;
pub use service::HttpCache;

use crate::cache::Cache;
use crate::ComputeOptions;
use policy::ResponseRules;
use service::HttpHooks;

/// The default [`HttpCacheLayer::max_body_bytes`]: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// A `tower` layer that caches the responses of GET and HEAD requests in a [`Cache`]; see the
/// [module](self) for what it caches and how.
///
/// ```
/// use std::time::Duration;
/// use cachestack::http::HttpCacheLayer;
/// use cachestack::{Cache, ComputeOptions, MemoryBackend};
/// use http::{header, StatusCode};
///
/// let options = ComputeOptions::builder().ttl(Duration::from_secs(30)).build()?;
/// let layer = HttpCacheLayer::new(Cache::new(MemoryBackend::with_capacity(1_000)), options)
///     .vary([header::ACCEPT_LANGUAGE, header::ACCEPT_ENCODING])
///     .statuses([StatusCode::OK, StatusCode::NOT_FOUND])
///     .max_body_bytes(256 * 1024)
///     .key_prefix("web:");
/// // axum: `Router::new().route(..).layer(layer)`
/// # Ok::<(), cachestack::Error>(())
/// ```
#[derive(Clone)]
pub struct HttpCacheLayer {
    config: Arc<Config>,
}

/// What a layer and its services share.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) cache: Cache,
    pub(crate) options: ComputeOptions,
    pub(crate) rules: ResponseRules,
    pub(crate) max_body_bytes: usize,
    pub(crate) prefix: String,
    pub(crate) hooks: Arc<HttpHooks>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCacheLayer")
            .field("cache", &self.cache)
            .field("options", &self.options)
            .field("statuses", &self.rules.statuses)
            .field("vary", &self.rules.vary)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl fmt::Debug for HttpCacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.config.fmt(f)
    }
}

impl HttpCacheLayer {
    /// A layer storing responses in `cache`, with `options`: the TTL of responses that do not
    /// give their own, single flight's `lock_timeout`, `stale_if_error`,
    /// `stale_while_revalidate`, the timeouts. Caches statuses 200, 203 and 204, bodies up to
    /// [`DEFAULT_MAX_BODY_BYTES`], under keys that start with `"http:"` and vary on no header.
    ///
    /// The cache's clock ([`Cache::with_clock`]) decides freshness and `Age`.
    pub fn new(cache: Cache, options: ComputeOptions) -> Self {
        let hooks = Arc::new(HttpHooks { cache: cache.clone() });
        let rules = ResponseRules {
            statuses: vec![StatusCode::OK, StatusCode::NON_AUTHORITATIVE_INFORMATION, StatusCode::NO_CONTENT],
            vary: Vec::new(),
        };
        let config =
            Config { cache, options, rules, max_body_bytes: DEFAULT_MAX_BODY_BYTES, prefix: "http:".into(), hooks };
        HttpCacheLayer { config: Arc::new(config) }
    }

    /// Request headers whose values are part of the key (added to those given before): each
    /// value gets its own entry. A response whose `Vary` names only these headers is stored.
    pub fn vary(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        let vary = &mut Arc::make_mut(&mut self.config).rules.vary;
        for header in headers {
            if !vary.contains(&header) {
                vary.push(header);
            }
        }
        self
    }

    /// The response statuses that are stored (replacing the default 200, 203, 204). A 5xx is
    /// never stored: it is a failure (see stale-if-error).
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        Arc::make_mut(&mut self.config).rules.statuses = statuses.into_iter().collect();
        self
    }

    /// The largest body stored, in bytes; a larger response passes through, streamed, and is not
    /// stored.
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        Arc::make_mut(&mut self.config).max_body_bytes = limit;
        self
    }

    /// The start of every key (default `"http:"`), to tell these entries from others in a
    /// shared cache.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.config).prefix = prefix.into();
        self
    }
}

impl<S> Layer<S> for HttpCacheLayer {
    type Service = HttpCache<S>;

    fn layer(&self, inner: S) -> HttpCache<S> {
        HttpCache::new(inner, self.config.clone())
    }
}
