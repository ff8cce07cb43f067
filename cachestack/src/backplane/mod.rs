//! The backplane: L1 invalidation across processes.
//!
//! Processes that share a cache (memory as L1 over Redis, PostgreSQL, ...) each keep their own
//! in-process L1. A change made in one process (a set, a delete, `#[invalidate]`, a clear, a
//! pattern delete) reaches the shared tier, but the other processes' L1 would serve the old value
//! until it expires. With a backplane, every such change on a [`TieredCache`](crate::TieredCache)
//! publishes one small [`Message`] (the sender's origin id, the cache's name and what changed)
//! on a channel of a server every process reaches: Redis pub/sub (`redis://`, feature `redis`)
//! or PostgreSQL LISTEN/NOTIFY (`postgres://`, feature `postgres`). Every other process evicts
//! the keys from its in-process layers (the typed entries of `#[cached]` functions included) and
//! reads them again from the shared tier. A process ignores its own messages.
//!
//! # Never in the caller's way
//!
//! Publishing puts the message in a bounded queue (no I/O, never waits, never fails); a task on
//! cachestack's runtime ([`crate::rt`]) sends it. While the server is unreachable the messages
//! stay queued and are sent when it is back; past the bound (`queue`, default 10 000) the
//! messages of the cache whose message did not fit collapse into one clear of that cache (counted
//! as `dropped`).
//!
//! # Recovery
//!
//! A process that lost its subscription (the server restarted, the network broke) may have
//! missed messages: when it subscribes again it clears its in-process layers of every attached
//! cache (counted as `recovery_clears`, logged at most once per
//! [`LOG_INTERVAL`](crate::layer::LOG_INTERVAL)), so that nothing it missed is served.
//!
//! # Consistency
//!
//! Guaranteed: a change is published only after it reached every layer of the stack that
//! made it (and is published even if the caller stops waiting); a process never evicts because of
//! its own messages, and an eviction also stops a read that was under way from putting the old
//! value back into L1. Eventual: the other processes evict when the message arrives (usually
//! within milliseconds; while the server is down, after it is back, or by the recovery clear).
//! Meanwhile they may serve the old value from their L1. Write-back stacks publish when L1 is
//! written and again when the queued write reached the lower layers.
//!
//! ```no_run
//! use cachestack::CacheRegistry;
//!
//! // Every process: the same backplane URL and the same cache names.
//! let registry = CacheRegistry::global();
//! registry.set_backplane_url("redis://127.0.0.1:6379/0?channel=myapp").unwrap();
//! registry.register_url("users", "mem://?max_entries=10000 | redis://127.0.0.1:6379/0").unwrap();
//! // Or per stack: TieredCache::builder().backplane(Backplane::from_url("...")?)...
//! ```

mod message;
mod outbox;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
mod registry;
mod task;
mod transport;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;

pub use message::{Change, Message};

use crate::error::{Error, Result};
use crate::layer::RateLimitedLog;
use crate::url::{redact_url, CacheUrl};
use outbox::Outbox;
use transport::{Link, Transport};

/// Environment variable read for the global registry's backplane URL (see
/// [`CacheRegistry::set_backplane_url`](crate::CacheRegistry::set_backplane_url)).
pub const BACKPLANE_URL_VAR: &str = "CACHESTACK_BACKPLANE_URL";

/// The channel used when the URL names none.
pub const DEFAULT_CHANNEL: &str = "cachestack";

/// Messages kept while the server is unreachable, by default.
pub const DEFAULT_QUEUE: usize = 10_000;

/// What receives a backplane's messages: a stack with in-process layers.
#[async_trait]
pub(crate) trait Receiver: Send + Sync {
    /// The cache name the messages name.
    fn cache_name(&self) -> String;
    /// Evicts what `change` names from the in-process layers.
    async fn apply(&self, change: &Change);
}

/// A backplane connection: see the [module](self). Cheap to clone; the connections and tasks end
/// when the last clone (and every stack attached to it) is dropped.
#[derive(Clone)]
pub struct Backplane {
    handle: Arc<Handle>,
}

struct Handle {
    core: Arc<Core>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What the backplane's tasks and its handles share.
pub(crate) struct Core {
    origin: u64,
    channel: String,
    shown: String,
    outbox: Outbox,
    receivers: Mutex<Vec<Weak<dyn Receiver>>>,
    subscribed: AtomicBool,
    sent: AtomicU64,
    received: AtomicU64,
    own: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    recovery_clears: AtomicU64,
    log: RateLimitedLog,
}

/// A snapshot of a backplane's counters ([`Backplane::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackplaneStats {
    /// Messages sent.
    pub sent: u64,
    /// Messages of other processes received (and applied to the attached caches).
    pub received: u64,
    /// Messages of this process received back, ignored.
    pub own: u64,
    /// Messages dropped from a full queue (each cache concerned got one clear instead).
    pub dropped: u64,
    /// Messages waiting to be sent.
    pub queued: u64,
    /// Failed connections, sends and unreadable messages.
    pub errors: u64,
    /// Subscriptions established again after a failure.
    pub reconnects: u64,
    /// Times the in-process layers were cleared because the subscription had been lost.
    pub recovery_clears: u64,
    /// Whether the subscription is up now.
    pub subscribed: bool,
}

impl fmt::Debug for Backplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backplane")
            .field("server", &self.handle.core.shown)
            .field("channel", &self.handle.core.channel)
            .field("origin", &format_args!("{:016x}", self.handle.core.origin))
            .finish()
    }
}

/// The options of a backplane URL.
struct Options {
    channel: String,
    queue: usize,
    connect_timeout: Duration,
    timeout: Duration,
}

const OPTIONS: &[&str] = &["channel", "queue", "connect_timeout", "timeout"];

impl Backplane {
    /// Connects a backplane (in the background: this never waits for the server):
    /// `redis://host:port/db?channel=myapp` (or `rediss://`, feature `redis`) or
    /// `postgres://user@host/db?channel=myapp` (feature `postgres`). Options: `channel` (default
    /// `cachestack`; every process of an application uses the same), `queue` (messages kept
    /// while the server is unreachable, default 10 000), `connect_timeout` (default 5 s) and
    /// `timeout` (one send, default 5 s). Fails on a malformed URL, an unknown option or a
    /// scheme whose feature is off.
    ///
    /// ```
    /// # #[cfg(feature = "redis")] {
    /// let backplane = cachestack::Backplane::from_url("redis://127.0.0.1:6379/0?channel=myapp").unwrap();
    /// assert_eq!(backplane.channel(), "myapp");
    /// # }
    /// let err = cachestack::Backplane::from_url("redis://127.0.0.1/0?chanel=x").unwrap_err();
    /// assert!(err.to_string().contains("chanel"), "{err}");
    /// ```
    pub fn from_url(url: &str) -> Result<Backplane> {
        let shown = redact_url(url);
        let in_url = |e: Error| match e {
            Error::Config { message } => Error::config(format!("backplane URL `{shown}`: {message}")),
            other => other,
        };
        let mut parsed = CacheUrl::parse(url).map_err(in_url)?;
        let options = Options::take(&mut parsed).map_err(in_url)?;
        let scheme = parsed.scheme.clone();
        let server = format!("{scheme}://{}", parsed.rest);
        let shown_server = redact_url(&server);
        parsed.finish(OPTIONS).map_err(in_url)?;
        let transport = open(&scheme, server, &shown_server)?;
        let link =
            Link::new(transport, shown_server, options.channel.clone(), options.connect_timeout, options.timeout);
        Backplane::start(Arc::new(link), options)
    }

    fn start(link: Arc<Link>, options: Options) -> Result<Backplane> {
        let runtime = crate::rt::handle()?;
        let core = Arc::new(Core {
            origin: new_origin(),
            channel: options.channel,
            shown: link.describe().to_owned(),
            outbox: Outbox::new(options.queue),
            receivers: Mutex::new(Vec::new()),
            subscribed: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            own: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            recovery_clears: AtomicU64::new(0),
            log: RateLimitedLog::default(),
        });
        let tasks = vec![
            runtime.spawn(task::publish(core.clone(), link.clone())).abort_handle(),
            runtime.spawn(task::subscribe(core.clone(), link)).abort_handle(),
        ];
        Ok(Backplane { handle: Arc::new(Handle { core, tasks }) })
    }

    /// The channel every process of the application publishes on.
    pub fn channel(&self) -> &str {
        &self.handle.core.channel
    }

    /// This backplane's origin id (random, one per backplane, so one per process in practice):
    /// its messages carry it, and it ignores the messages that do.
    pub fn origin(&self) -> u64 {
        self.handle.core.origin
    }

    /// Its counters.
    pub fn stats(&self) -> BackplaneStats {
        let core = &self.handle.core;
        BackplaneStats {
            sent: core.sent.load(Relaxed),
            received: core.received.load(Relaxed),
            own: core.own.load(Relaxed),
            dropped: core.outbox.dropped.load(Relaxed),
            queued: core.outbox.len() as u64,
            errors: core.errors.load(Relaxed),
            reconnects: core.reconnects.load(Relaxed),
            recovery_clears: core.recovery_clears.load(Relaxed),
            subscribed: core.subscribed.load(Relaxed),
        }
    }

    /// Waits until every message queued so far was sent, at most `limit` (then fails with
    /// [`Error::Timeout`]; the messages stay queued). For an orderly exit: a process that exits
    /// right after a change may otherwise exit before its message is sent.
    /// [`CacheRegistry::shutdown`](crate::CacheRegistry::shutdown) does it for the registry's
    /// backplane.
    ///
    /// ```no_run
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let backplane = cachestack::Backplane::from_url("redis://127.0.0.1:6379/0").unwrap();
    /// backplane.flush(std::time::Duration::from_secs(5)).await.unwrap();
    /// # });
    /// ```
    pub async fn flush(&self, limit: Duration) -> Result<()> {
        let drained = async {
            self.handle.core.outbox.drained().await;
            Ok(())
        };
        crate::layer::within("backplane", limit, drained).await
    }

    /// Queues a message about `cache` (never waits, never fails).
    pub(crate) fn announce(&self, cache: String, change: Change) {
        self.handle.core.outbox.push(Message { origin: self.handle.core.origin, cache, change });
    }

    /// Delivers the messages about `receiver`'s cache to it (while it lives).
    pub(crate) fn attach(&self, receiver: Weak<dyn Receiver>) {
        let mut receivers = self.handle.core.receivers();
        receivers.retain(|r| r.strong_count() > 0);
        receivers.push(receiver);
    }
}

impl Options {
    fn take(url: &mut CacheUrl) -> Result<Self> {
        let channel = url.take("channel").unwrap_or_else(|| DEFAULT_CHANNEL.to_owned());
        if channel.is_empty() || channel.len() > 63 || channel.chars().any(|c| c.is_control()) {
            return Err(Error::config(format!(
                "option `channel={channel}`: a channel is 1 to 63 characters, none a control character"
            )));
        }
        let queue = url.take_parsed::<usize>("queue")?.unwrap_or(DEFAULT_QUEUE);
        if queue == 0 {
            return Err(Error::config("option `queue=0`: the queue holds at least 1 message"));
        }
        Ok(Options {
            channel,
            queue,
            connect_timeout: url.take_ttl("connect_timeout")?.unwrap_or(Duration::from_secs(5)),
            timeout: url.take_ttl("timeout")?.unwrap_or(Duration::from_secs(5)),
        })
    }
}

/// The transport for `scheme`.
#[allow(unused_variables)] // without the transport features
fn open(scheme: &str, server: String, shown: &str) -> Result<Box<dyn Transport>> {
    match scheme {
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Ok(Box::new(redis::RedisTransport::new(&server, shown)?)),
        #[cfg(not(feature = "redis"))]
        "redis" | "rediss" => Err(Error::FeatureDisabled { scheme: scheme.to_owned(), feature: "redis" }),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Box::new(postgres::PostgresTransport::new(server))),
        #[cfg(not(feature = "postgres"))]
        "postgres" | "postgresql" => Err(Error::FeatureDisabled { scheme: scheme.to_owned(), feature: "postgres" }),
        other => Err(Error::config(format!(
            "backplane URL `{shown}`: unknown scheme `{other}://`; a backplane runs on redis:// or postgres://"
        ))),
    }
}

/// A random origin id (never 0).
fn new_origin() -> u64 {
    (fastrand::u64(..) ^ (u64::from(std::process::id()) << 32)).max(1)
}

impl Core {
    fn receivers(&self) -> std::sync::MutexGuard<'_, Vec<Weak<dyn Receiver>>> {
        self.receivers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live receivers.
    fn live(&self) -> Vec<Arc<dyn Receiver>> {
        self.receivers().iter().filter_map(Weak::upgrade).collect()
    }
}
