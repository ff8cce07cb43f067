//! Observability: the manifest of cached functions, metrics (feature `metrics`) and the spans
//! of cached calls. The spans and latency of store operations are the [`Observe`] layer's.
//!
//! [`Observe`]: crate::layer::Observe

pub(crate) mod calls;
pub(crate) mod manifest;
#[cfg(feature = "metrics")]
pub mod metrics;
