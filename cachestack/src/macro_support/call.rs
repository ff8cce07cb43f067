//! The rest of a call that [`lookup`](super::lookup) did not answer: reading a remote cache,
//! computing under single flight, storing the result.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::lookup::{Miss, Site, Target};
use super::policy::Condition;
use super::{Cache, Expiry, Result, Value};
use crate::singleflight::{Join, Outcome};
use crate::store::Entry;

/// What to do after reading a remote cache.
enum Read<R> {
    Hit(R),
    Miss,
    Fail(R),
}

fn after_read<R>(site: &Site<R>, cache: &Cache, key: &str, read: Result<Option<Entry>>) -> Read<R> {
    let state = site.state;
    match read {
        Ok(Some(entry)) => match (site.policy.load)(cache, key, &entry.value) {
            Some(hit) => {
                state.hits.add(1);
                Read::Hit(hit)
            }
            None => {
                state.errors.fetch_add(1, Relaxed);
                state.misses.fetch_add(1, Relaxed);
                Read::Miss
            }
        },
        Ok(None) => {
            state.misses.fetch_add(1, Relaxed);
            Read::Miss
        }
        Err(err) => {
            state.misses.fetch_add(1, Relaxed);
            match site.fail("read", key, err) {
                Some(failed) => Read::Fail(failed),
                None => Read::Miss,
            }
        }
    }
}

fn recheck_local<R>(site: &Site<R>, cache: &Cache, key: &str) -> Option<(R, Value)> {
    let value = cache.backend().as_local()?.get_value(key)?;
    let hit = (site.policy.load)(cache, key, &value)?;
    Some((hit, value))
}

/// Whether a new leader must read a remote cache again before computing: its first read was
/// sent when the flight counter stood at `seen`, and a flight that ended since may have stored
/// the key after that read looked (the read's miss is then stale).
fn reread_needed<R>(site: &Site<R>, seen: Option<u64>) -> bool {
    seen.is_some_and(|seen| site.state.flights.ended() != seen)
}

/// A second read of a remote cache by a new leader (see [`reread_needed`]): a hit is shared with
/// the waiters; a failure is counted and logged, and the leader computes (the call already went
/// on as a miss after its first read).
fn reread<R>(site: &Site<R>, cache: &Cache, key: &str, read: Result<Option<Entry>>) -> Option<(R, Value)> {
    match read {
        Ok(Some(entry)) => {
            let hit = (site.policy.load)(cache, key, &entry.value)?;
            Some((hit, entry.value))
        }
        Ok(None) => None,
        Err(err) => {
            site.state.record_error("read", key, &err);
            None
        }
    }
}

fn write_sync(cache: &Cache, key: &str, value: Value, ttl: Option<Duration>) -> Result<()> {
    let ttl = Expiry::from_ttl(ttl);
    if let Some(local) = cache.backend().as_local() {
        local.set_value(key, value, ttl);
        return Ok(());
    }
    let backend = cache.backend().clone();
    let key = key.to_owned();
    crate::rt::block_on(async move { backend.set(&key, value, ttl).await })?
}

async fn write_async(cache: &Cache, key: &str, value: Value, ttl: Option<Duration>) -> Result<()> {
    let ttl = Expiry::from_ttl(ttl);
    if let Some(local) = cache.backend().as_local() {
        local.set_value(key, value, ttl);
        return Ok(());
    }
    cache.backend().set(key, value, ttl).await
}

fn read_sync(cache: &Cache, key: &str) -> Result<Option<Entry>> {
    if let Some(local) = cache.backend().as_local() {
        return Ok(local.get_entry(key));
    }
    let backend = cache.backend().clone();
    let key = key.to_owned();
    crate::rt::block_on(async move { backend.get(&key).await })?
}

/// Stores what `settle` chose; returns the function's result (or, when propagating, the write
/// error as the function's `Err`) and the value to share with waiters.
fn store_sync<R>(site: &Site<R>, cache: &Cache, key: &str, result: R, stored: Option<Value>) -> R {
    if let Some(value) = stored {
        if let Err(err) = write_sync(cache, key, value, site.ttl) {
            if let Some(failed) = site.fail("write", key, err) {
                return failed;
            }
        }
    }
    result
}

async fn store_async<R>(site: &Site<R>, cache: &Cache, key: &str, result: R, stored: Option<Value>) -> R {
    if let Some(value) = stored {
        if let Err(err) = write_async(cache, key, value, site.ttl).await {
            if let Some(failed) = site.fail("write", key, err) {
                return failed;
            }
        }
    }
    result
}

/// The rest of a synchronous call that [`lookup`](super::lookup) did not answer: reads a remote cache (through
/// [`crate::rt::block_on`], which works on plain threads and inside tokio runtimes), then runs
/// `body` under single flight and stores its result.
pub fn miss_sync<R>(site: &Site<R>, miss: Miss, body: impl FnOnce() -> R, condition: Condition<'_, R>) -> R {
    let Miss { key, target } = miss;
    // `seen`: for a remote cache, the flight counter when its read was sent.
    let (cache, seen) = match target {
        Target::Unavailable(err) => return site.fail("resolve", &key, *err).unwrap_or_else(body),
        Target::Refresh(cache) => {
            let result = body();
            let stored = site.settle(&result, condition);
            return store_sync(site, &cache, &key, result, stored);
        }
        Target::Local(cache) => (cache, None),
        Target::Remote(cache) => {
            let seen = site.state.flights.ended();
            match after_read(site, &cache, &key, read_sync(&cache, &key)) {
                Read::Hit(hit) | Read::Fail(hit) => return hit,
                Read::Miss => (cache, Some(seen)),
            }
        }
    };
    if !site.lock {
        let result = body();
        let stored = site.settle(&result, condition);
        return store_sync(site, &cache, &key, result, stored);
    }
    let mut waited = false;
    loop {
        match site.state.flights.join(&key) {
            Join::Reentrant => {
                tracing::debug!(
                    function = site.state.name,
                    key,
                    "cachestack: recursive call with its own key runs uncached"
                );
                return body();
            }
            Join::Leader(leader) => {
                let recheck = if reread_needed(site, seen) {
                    reread(site, &cache, &key, read_sync(&cache, &key))
                } else {
                    recheck_local(site, &cache, &key)
                };
                if let Some((hit, value)) = recheck {
                    leader.complete(|| Some(value));
                    return hit;
                }
                let result = leader.run(body);
                let stored = site.settle(&result, condition);
                let shared = stored.clone();
                let result = store_sync(site, &cache, &key, result, stored);
                leader.complete(|| shared.or_else(|| (site.policy.share)(&result)));
                return result;
            }
            Join::Waiter(waiter) => {
                // A call that waits again (its leader was abandoned) is still one call that waited.
                if !core::mem::replace(&mut waited, true) {
                    site.state.waits.fetch_add(1, Relaxed);
                }
                match waiter.wait() {
                    Outcome::Shared(value) => {
                        if let Some(shared) = (site.policy.load)(&cache, &key, &value) {
                            return shared;
                        }
                        site.state.errors.fetch_add(1, Relaxed);
                        return body();
                    }
                    Outcome::NotShared => {
                        let result = body();
                        let stored = site.settle(&result, condition);
                        return store_sync(site, &cache, &key, result, stored);
                    }
                    // The leader panicked: one of its waiters takes over.
                    Outcome::Abandoned => continue,
                }
            }
        }
    }
}

/// The rest of an asynchronous call that [`lookup`](super::lookup) did not answer: awaits a remote cache, then
/// awaits `body` under single flight and stores its result.
pub async fn miss_async<R, F>(site: &Site<R>, miss: Miss, body: F, condition: Condition<'_, R>) -> R
where
    F: core::future::Future<Output = R>,
{
    let Miss { key, target } = miss;
    // `seen`: for a remote cache, the flight counter when its read was sent.
    let (cache, seen) = match target {
        Target::Unavailable(err) => {
            return match site.fail("resolve", &key, *err) {
                Some(failed) => failed,
                None => body.await,
            }
        }
        Target::Refresh(cache) => {
            let result = body.await;
            let stored = site.settle(&result, condition);
            return store_async(site, &cache, &key, result, stored).await;
        }
        Target::Local(cache) => (cache, None),
        Target::Remote(cache) => {
            let seen = site.state.flights.ended();
            let read = cache.backend().get(&key).await;
            match after_read(site, &cache, &key, read) {
                Read::Hit(hit) | Read::Fail(hit) => return hit,
                Read::Miss => (cache, Some(seen)),
            }
        }
    };
    if !site.lock {
        let result = body.await;
        let stored = site.settle(&result, condition);
        return store_async(site, &cache, &key, result, stored).await;
    }
    let mut waited = false;
    loop {
        match site.state.flights.join(&key) {
            Join::Reentrant => {
                tracing::debug!(
                    function = site.state.name,
                    key,
                    "cachestack: recursive call with its own key runs uncached"
                );
                return body.await;
            }
            Join::Leader(leader) => {
                let recheck = if reread_needed(site, seen) {
                    reread(site, &cache, &key, cache.backend().get(&key).await)
                } else {
                    recheck_local(site, &cache, &key)
                };
                if let Some((hit, value)) = recheck {
                    leader.complete(|| Some(value));
                    return hit;
                }
                let result = leader.run_async(body).await;
                let stored = site.settle(&result, condition);
                let shared = stored.clone();
                let result = store_async(site, &cache, &key, result, stored).await;
                leader.complete(|| shared.or_else(|| (site.policy.share)(&result)));
                return result;
            }
            Join::Waiter(waiter) => {
                // A call that waits again (its leader was abandoned) is still one call that waited.
                if !core::mem::replace(&mut waited, true) {
                    site.state.waits.fetch_add(1, Relaxed);
                }
                match waiter.wait_async().await {
                    Outcome::Shared(value) => {
                        if let Some(shared) = (site.policy.load)(&cache, &key, &value) {
                            return shared;
                        }
                        site.state.errors.fetch_add(1, Relaxed);
                        return body.await;
                    }
                    Outcome::NotShared => {
                        let result = body.await;
                        let stored = site.settle(&result, condition);
                        return store_async(site, &cache, &key, result, stored).await;
                    }
                    // The leader panicked or was cancelled: one of its waiters takes over.
                    Outcome::Abandoned => continue,
                }
            }
        }
    }
}
