//! Observability: the manifest of cached functions (with its HTML page and JSON), metrics
//! (feature `metrics`) and the spans of cached calls. The spans and latency of store operations
//! are the [`Observe`] layer's.
//!
//! [`Observe`]: crate::layer::Observe

pub(crate) mod calls;
pub(crate) mod manifest;
mod manifest_html;
#[cfg(feature = "metrics")]
pub mod metrics;
