//! Stores: the [`Backend`] trait and one module per medium. A store does I/O against its medium
//! and maps its errors into [`crate::Error`]; every concern shared by all stores (silent mode,
//! timeouts, circuit breaking) is a [layer](crate::layer) around it.

mod backend;
#[cfg(feature = "file")]
pub(crate) mod file;
mod forward;
#[cfg(feature = "memcached")]
pub(crate) mod memcached;
#[cfg(feature = "memory")]
pub(crate) mod memory;
pub(crate) mod null;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "redis")]
pub(crate) mod redis;

pub use backend::{Backend, BackendStats, Counters, Entry, LocalBackend, LocalRead};
pub(crate) use forward::forward_backend;
