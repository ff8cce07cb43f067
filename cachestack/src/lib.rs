//! # cachestack
//!
//! Memoization for Rust services: put `#[cached]` on a function and its results are cached in
//! memory, on disk, in Redis, PostgreSQL or Memcached, or in a tiered stack of them, with single
//! flight against stampedes.
//!
//! The runtime half, usable on its own:
//!
//! ```
//! use cachestack::{Cache, MemoryBackend};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let cache = Cache::new(MemoryBackend::with_capacity(10_000));
//! cache.set("user:1", &"Ada".to_string(), None).await?;
//! assert_eq!(cache.get::<String>("user:1").await?.as_deref(), Some("Ada"));
//! # Ok::<(), cachestack::Error>(())
//! # }).unwrap();
//! ```
//!
//! ## Cargo features
//!
//! | feature | what it adds |
//! |---|---|
//! | `macros` (default) | `#[cached]` and `#[invalidate]` |
//! | `memory` (default) | [`MemoryBackend`] on quick_cache |
//! | `file` (default) | `FileBackend`: one file per key, atomic writes |
//! | `json`, `msgpack`, `bincode` | extra [`Codec`]s (postcard is always there) |
//! | `zstd`, `lz4` | payload [`Compression`] |
//! | `signing` | HMAC-SHA256 [`Signer`] for values in shared stores |
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod backend;
mod cache;
mod codec;
mod envelope;
mod error;
#[cfg(feature = "file")]
mod file;
#[cfg(feature = "memory")]
mod memory;
mod null;
pub mod registry;
pub mod rt;
mod ttl;
mod url;
mod value;

pub use async_trait::async_trait;
pub use backend::{Backend, BackendStats, Counters, Entry, LocalBackend};
pub use cache::Cache;
pub use codec::Codec;
pub use envelope::{remaining, Compression, Signer, ValueFormat};
pub use error::{BoxError, Error, Result};
#[cfg(feature = "file")]
pub use file::{FileBackend, FileConfig};
#[cfg(feature = "memory")]
pub use memory::{MemoryBackend, MemoryConfig};
pub use null::NullBackend;
pub use registry::CacheRegistry;
pub use ttl::{format_ttl, parse_ttl};
pub use url::{backend_from_url, redact_url};
pub use value::{type_fingerprint, Cacheable, Encoded, Value};
