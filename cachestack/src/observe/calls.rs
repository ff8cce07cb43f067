//! The spans (and, with `metrics`, the latency) of `#[cached]` calls.
//!
//! - A hit answered in process: a `cachestack.call` span at TRACE, with `outcome = "hit"`
//!   (created and closed, never entered: nothing runs inside it). With TRACE off (the usual), a
//!   level check and nothing else on the hit path; with tracing's `release_max_level_debug`
//!   feature, not even that.
//! - Any other call: a `cachestack.call` span at DEBUG around the rest of the call (the store's
//!   `cachestack.op` spans, the computation), with `function`, `cache`, `outcome` (`hit`,
//!   `miss`, `wait`, `refresh`, `uncached`, `error`) and `layer` (the store, or the tier of a
//!   stack, that answered a hit).

use std::cell::Cell;

use tracing::Span;

use crate::__private::CachedFn;
use crate::registry::DEFAULT_NAME;
use crate::store::LocalRead;

/// Whether TRACE spans may be recorded: the cheapest check there is (a constant, then one
/// relaxed load), with the span itself built out of line.
#[inline(always)]
fn trace_on() -> bool {
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    STATIC_MAX_LEVEL >= LevelFilter::TRACE && LevelFilter::current() >= LevelFilter::TRACE
}

/// A `#[cached]` call answered by the function's typed partition of a memory cache.
#[inline(always)]
pub(crate) fn front_hit(state: &CachedFn) {
    if trace_on() {
        hit_span(state, "memory");
    }
}

/// A `#[cached]` call answered by an in-process store (or a stack's in-process first tier).
#[inline(always)]
pub(crate) fn local_hit(state: &CachedFn, local: &dyn LocalRead) {
    if trace_on() {
        hit_span(state, local.layer_name());
    }
}

#[cold]
#[inline(never)]
fn hit_span(state: &CachedFn, layer: &str) {
    let _span = tracing::trace_span!(
        "cachestack.call",
        function = state.name,
        cache = state.cache.unwrap_or(DEFAULT_NAME),
        outcome = "hit",
        layer
    );
}

/// Records on the current span (a call's, or a store operation's) the store that answered a
/// read, when spans are recorded at all: the tiered stack calls it with the tier that had the
/// key.
#[inline]
pub(crate) fn answered_by(layer: &str) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        Span::current().record("layer", layer);
    }
}

/// A `#[cached]` call past the in-process cache: its span, what it ended as, when it started.
pub(crate) struct CallObserver {
    span: Span,
    outcome: Cell<&'static str>,
    #[cfg(feature = "metrics")]
    function: &'static str,
    #[cfg(feature = "metrics")]
    cache: &'static str,
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

impl CallObserver {
    pub(crate) fn start(function: &'static str, cache: Option<&'static str>) -> Self {
        let cache = cache.unwrap_or(DEFAULT_NAME);
        CallObserver {
            span: tracing::debug_span!(
                "cachestack.call",
                function,
                cache,
                outcome = tracing::field::Empty,
                layer = tracing::field::Empty
            ),
            outcome: Cell::new("miss"),
            #[cfg(feature = "metrics")]
            function,
            #[cfg(feature = "metrics")]
            cache,
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// What the call ended as (`miss`, the computation ran, unless told otherwise).
    pub(crate) fn outcome(&self, outcome: &'static str) {
        self.outcome.set(outcome);
    }

    /// The store a read is sent to (a stack overrides it with the tier that had the key).
    pub(crate) fn layer(&self, layer: &str) {
        self.span.record("layer", layer);
    }

    pub(crate) fn finish(self) {
        self.span.record("outcome", self.outcome.get());
        #[cfg(feature = "metrics")]
        super::metrics::call(self.cache, self.function, self.outcome.get(), self.started.elapsed());
    }
}
