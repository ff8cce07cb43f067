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

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

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

/// What a call past the in-process cache ended as.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Ended {
    /// Answered by the cache (a remote read, or a leader's last look).
    Hit,
    /// Computed.
    Miss,
    /// Answered with the value another call computed (single flight).
    Wait,
    /// `<fn>_refresh`, or a switch allowing writes only: computed and stored, not read.
    Refresh,
    /// Ran without the cache (switched off, re-entrant, unresolvable cache, unreadable value).
    Uncached,
    /// Returned the cache's error (`on_cache_error = "propagate"`).
    Error,
}

impl Ended {
    const ALL: [Ended; 6] = [Ended::Hit, Ended::Miss, Ended::Wait, Ended::Refresh, Ended::Uncached, Ended::Error];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Ended::Hit => "hit",
            Ended::Miss => "miss",
            Ended::Wait => "wait",
            Ended::Refresh => "refresh",
            Ended::Uncached => "uncached",
            Ended::Error => "error",
        }
    }
}

/// A `#[cached]` call past the in-process cache: its span, what it ended as, when it started.
/// Shared by reference across the call's awaits, so `Sync` (the outcome is an atomic).
pub(crate) struct CallObserver {
    span: Span,
    outcome: AtomicU8,
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
            outcome: AtomicU8::new(Ended::Miss as u8),
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
    pub(crate) fn outcome(&self, outcome: Ended) {
        self.outcome.store(outcome as u8, Relaxed);
    }

    fn ended_as(&self) -> &'static str {
        let code = self.outcome.load(Relaxed);
        Ended::ALL.iter().find(|o| **o as u8 == code).map_or("miss", |o| o.as_str())
    }

    /// The store a read is sent to (a stack overrides it with the tier that had the key).
    pub(crate) fn layer(&self, layer: &str) {
        self.span.record("layer", layer);
    }

    pub(crate) fn finish(self) {
        let outcome = self.ended_as();
        self.span.record("outcome", outcome);
        #[cfg(feature = "metrics")]
        super::metrics::call(self.cache, self.function, outcome, self.started.elapsed());
    }
}
