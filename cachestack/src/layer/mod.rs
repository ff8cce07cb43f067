//! Layers: concerns written once that wrap any [`Backend`], built-in or user-written, the way
//! tower layers wrap a service.
//!
//! - [`Timeout`]: every operation finishes within a bound, or fails with [`Error::Timeout`].
//! - [`Breaker`]: a circuit breaker; after consecutive store failures calls fail fast with
//!   [`Error::BackendUnavailable`] for a cool-down, then one call probes the store.
//! - [`Silent`]: failures counted; in silent mode absorbed (a miss, a no-op) and logged at a
//!   bounded rate.
//! - [`Observe`]: a span per operation and, with the `metrics` feature, its latency.
//!
//! The order, innermost (next to the store) first:
//!
//! ```text
//! Silent( Observe( Breaker( Timeout( store ) ) ) )
//! ```
//!
//! - Timeout innermost: a call that takes too long becomes a [`Error::Timeout`], which the
//!   breaker counts as a failure of the store.
//! - Breaker in the middle: it sees every failure of the store (timeouts included) and its
//!   fast failures are ordinary errors to the layer above.
//! - Observe above them: it times what the caller waits for, timeouts and fast failures
//!   included, and sees every failure before silent mode absorbs it.
//! - Silent outermost: in silent mode it absorbs every failure, the store's, the timeout's and
//!   the open breaker's alike, and counts them in `errors`.
//!
//! [`Layers`] holds the options every cache shares (silent mode, a timeout, a breaker) and
//! applies them in that order; [`Layered`] is a store with its layers, which is what the built-in stores'
//! constructors return. The tiered stack ([`crate::TieredCache`]) bypasses its remote layers with the same
//! breaker state machine, per layer, so that it can replay the deletes a bypassed layer missed.
//!
//! [`Error::Timeout`]: crate::Error::Timeout
//! [`Error::BackendUnavailable`]: crate::Error::BackendUnavailable

mod breaker;
mod observe;
mod silent;
mod timeout;

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use breaker::Circuit;
pub use breaker::{is_store_failure, Breaker, BreakerConfig};
pub use observe::{Observe, UNNAMED};
pub(crate) use silent::RateLimitedLog;
pub use silent::{Silent, LOG_INTERVAL};
pub use timeout::{within, Timeout};

use crate::store::Backend;

/// The layers a store gets: the options every cache shares, whatever its store.
///
/// ```
/// use std::time::Duration;
/// use cachestack::layer::Layers;
/// use cachestack::{Backend, NullBackend};
///
/// use cachestack::BreakerConfig;
///
/// let store = Layers::new()
///     .silent(true)
///     .timeout(Duration::from_millis(500))
///     .breaker(BreakerConfig::new(5, Duration::from_secs(30)))
///     .wrap(NullBackend::default());
/// assert_eq!(store.name(), "null");
/// assert_eq!(store.stats().details["breaker"], "closed");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layers {
    /// Absorb failures (see [`Silent`]).
    pub silent: bool,
    /// Bound every operation (see [`Timeout`]).
    pub timeout: Option<Duration>,
    /// Fail fast while the store keeps failing (see [`Breaker`]).
    pub breaker: Option<BreakerConfig>,
}

impl Layers {
    /// No silent mode, no timeout, no breaker.
    pub fn new() -> Self {
        Layers::default()
    }

    /// Sets silent mode.
    pub fn silent(mut self, silent: bool) -> Self {
        self.silent = silent;
        self
    }

    /// Bounds every operation by `limit`.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Puts the store behind a circuit breaker configured by `config`.
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// `store` wrapped in these layers.
    pub fn wrap(self, store: impl Backend) -> Arc<dyn Backend> {
        self.wrap_arc(Arc::new(store))
    }

    /// `store` wrapped in these layers: `Silent(Observe(Breaker(Timeout(store))))`, timeout and
    /// breaker only if set (Silent always: it counts failures even when it does not absorb them;
    /// Observe always). See the [module documentation](self) for why this order.
    pub fn wrap_arc(self, store: Arc<dyn Backend>) -> Arc<dyn Backend> {
        let store: Arc<dyn Backend> = match self.timeout {
            Some(limit) => Arc::new(Timeout::new(store, limit)),
            None => store,
        };
        let store: Arc<dyn Backend> = match self.breaker {
            Some(config) => Arc::new(Breaker::new(store, config)),
            None => store,
        };
        Arc::new(Silent::new(Observe::new(store), self.silent))
    }
}

/// A store with its layers: a [`Backend`] that goes through the layers, and dereferences to the
/// store for what is special to it (its configuration, its paths...).
///
/// ```
/// use cachestack::layer::{Layered, Layers};
/// use cachestack::{Backend, NullBackend};
///
/// let store = Layered::wrap(NullBackend::default(), Layers::new().silent(true));
/// assert_eq!(store.name(), "null");
/// let _raw: &NullBackend = &store;
/// ```
pub struct Layered<S> {
    store: Arc<S>,
    chain: Arc<dyn Backend>,
    layers: Layers,
}

impl<S: Backend> Layered<S> {
    /// `store` behind `layers`. (Named `wrap`, not `new`: the built-in stores' types are
    /// `Layered<TheirStore>` with constructors `new(config)` of their own.)
    pub fn wrap(store: S, layers: Layers) -> Self {
        let store = Arc::new(store);
        let chain = layers.wrap_arc(store.clone());
        Layered { store, chain, layers }
    }

    /// The store without its layers.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The layers this store has.
    pub fn layers(&self) -> Layers {
        self.layers
    }
}

// Clones share the store and the layers (their counters too), as an `Arc` would.
impl<S> Clone for Layered<S> {
    fn clone(&self) -> Self {
        Layered { store: self.store.clone(), chain: self.chain.clone(), layers: self.layers }
    }
}

impl<S> Deref for Layered<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.store
    }
}

impl<S: fmt::Debug> fmt::Debug for Layered<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layered").field("store", &self.store).field("layers", &self.layers).finish()
    }
}

crate::store::forward_backend!(impl [S: Backend] for Layered<S> => |s| s.chain);
