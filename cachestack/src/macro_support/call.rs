//! The rest of a call that `lookup` did not answer: reading a remote cache,
//! computing under single flight, storing the result.
//!
//! The synchronous and asynchronous paths are twins: every decision (what a miss does, what a
//! read or a write outcome means, what a waiter does with its leader's outcome, what a leader
//! shares) is a plain function shared by both, and each twin keeps only its I/O (blocking on
//! [`crate::rt::block_on`] or awaiting) and the calls of the function body.

use std::sync::atomic::Ordering::Relaxed;

use tracing::Instrument;

use super::front::tag_current;
use super::lookup::{mirror_l1, Fill, Miss, Site, Target};
use super::policy::Condition;
use super::{Cache, Expiry, Result, Value};
use crate::observe::calls::{CallObserver, Ended};
use crate::singleflight::{Join, Leader, Outcome};
use crate::store::Entry;

// ---------------------------------------------------------------------------------------------
// Shared decisions (no I/O)
// ---------------------------------------------------------------------------------------------

/// What a call does with a [`Miss`], decided before any I/O.
enum Plan<R> {
    /// Return this: the cache could not be resolved and the function propagates cache errors.
    Return(R),
    /// Call the function uncached: the cache could not be resolved.
    Uncached,
    /// `<fn>_refresh`: compute and store, without reading.
    Refresh(Cache),
    /// An in-process cache, already read: compute.
    Compute(Cache),
    /// Read the remote cache first.
    Read(Cache),
    /// Read the remote cache, compute without storing (a switch allows reads only).
    ReadOnly(Cache),
}

fn plan<R>(site: &Site<R>, key: &str, target: Target, call: &CallObserver) -> Plan<R> {
    let plan = match target {
        Target::Unavailable(err) => match site.fail("resolve", key, *err) {
            Some(failed) => Plan::Return(failed),
            None => Plan::Uncached,
        },
        Target::Refresh(cache) => Plan::Refresh(cache),
        Target::Local(cache) => Plan::Compute(cache),
        Target::Remote(cache) => Plan::Read(cache),
        Target::Off => Plan::Uncached,
        Target::ReadOnly(cache) => Plan::ReadOnly(cache),
    };
    match &plan {
        Plan::Return(_) => call.outcome(Ended::Error),
        Plan::Uncached => call.outcome(Ended::Uncached),
        Plan::Refresh(_) => call.outcome(Ended::Refresh),
        Plan::ReadOnly(cache) => {
            call.outcome(Ended::Uncached);
            call.layer(cache.backend().name());
        }
        Plan::Read(cache) => call.layer(cache.backend().name()),
        Plan::Compute(_) => {}
    }
    plan
}

/// After reading a remote cache: the call's answer (a hit or, when the function propagates cache
/// errors, the read failure as its result), or `None` to compute. Counts hits, misses, errors.
fn answered<R>(
    site: &Site<R>,
    cache: &Cache,
    key: &str,
    read: Result<Option<Entry>>,
    call: &CallObserver,
) -> Option<R> {
    let state = site.state;
    let answer = match read {
        Ok(Some(entry)) => match (site.policy.load)(cache, key, &entry.value) {
            Some(hit) => {
                state.hits.add(1);
                call.outcome(Ended::Hit);
                return Some(hit);
            }
            None => {
                state.errors.fetch_add(1, Relaxed);
                state.misses.fetch_add(1, Relaxed);
                None
            }
        },
        Ok(None) => {
            state.misses.fetch_add(1, Relaxed);
            None
        }
        Err(err) => {
            state.misses.fetch_add(1, Relaxed);
            let failed = site.fail("read", key, err);
            if failed.is_some() {
                call.outcome(Ended::Error);
            }
            failed
        }
    };
    call.layer("none");
    answer
}

/// Whether a new leader must read a remote cache again before computing: its first read was
/// sent when the flight counter stood at `seen`, and a flight that ended since may have stored
/// the key after that read looked (the read's miss is then stale).
fn reread_needed<R>(site: &Site<R>, seen: Option<u64>) -> bool {
    seen.is_some_and(|seen| site.state.flights.ended() != seen)
}

/// A new leader's last look before computing: the second read of a remote cache when
/// [`reread_needed`] (`read`), else the in-process cache. A hit is shared with the waiters.
fn recheck<R>(
    site: &Site<R>,
    cache: &Cache,
    key: &str,
    fill: Option<&Fill>,
    read: Option<Result<Option<Entry>>>,
) -> Option<(R, Value)> {
    match read {
        Some(read) => {
            let found = reread(site, cache, key, read)?;
            mirror_l1(site, cache, key, fill);
            Some(found)
        }
        None => recheck_local(site, cache, key, fill),
    }
}

fn recheck_local<R>(site: &Site<R>, cache: &Cache, key: &str, fill: Option<&Fill>) -> Option<(R, Value)> {
    // A flight that ended since this call missed stored its result in the typed partition.
    if let (Some(fill), Some(ops)) = (fill, site.policy.front)
        && let Some(hit) = (ops.get)(&fill.front, &fill.key)
    {
        let value = (site.policy.share)(&hit)?;
        return Some((hit, value));
    }
    let value = cache.backend().as_local()?.get_value(key)?;
    if cache.tags.known(&value) != Some(true) {
        return None;
    }
    let hit = (site.policy.load)(cache, key, &value)?;
    Some((hit, value))
}

/// A second read of a remote cache by a new leader: a failure is counted and logged, and the
/// leader computes (the call already went on as a miss after its first read).
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

/// Ends a flight whose leader found the key on its last look: the waiters get `value`.
fn complete_hit<R>(leader: Leader<'_>, (hit, value): (R, Value), call: &CallObserver) -> R {
    call.outcome(Ended::Hit);
    leader.complete(|| Some(value));
    hit
}

/// Ends a flight whose leader computed `result`: the waiters get what was stored or, when
/// nothing was, whatever of the result can be shared.
fn complete_computed<R>(site: &Site<R>, leader: Leader<'_>, stored: Option<Value>, result: &R) {
    leader.complete(|| stored.or_else(|| (site.policy.share)(result)));
}

/// A call that joined a flight with its own key (a recursive call) runs uncached.
fn log_reentrant<R>(site: &Site<R>, key: &str, call: &CallObserver) {
    call.outcome(Ended::Uncached);
    tracing::debug!(function = site.state.name, key, "cachestack: recursive call with its own key runs uncached");
}

/// Counts a call that waits; a call that waits again (its leader was abandoned) is still one call
/// that waited.
fn count_wait<R>(site: &Site<R>, waited: &mut bool) {
    if !core::mem::replace(waited, true) {
        site.state.waits.fetch_add(1, Relaxed);
    }
}

/// What a waiter does once its leader is done.
enum Waited<R> {
    /// Return the leader's value.
    Shared(R),
    /// The leader's value could not be read back (counted as an error): call the function
    /// without storing.
    Uncached,
    /// Nothing was shared: compute and store.
    Compute,
    /// The leader panicked or was cancelled: join again (one of the waiters takes over).
    Retry,
}

fn after_wait<R>(site: &Site<R>, cache: &Cache, key: &str, outcome: Outcome, call: &CallObserver) -> Waited<R> {
    match outcome {
        Outcome::Shared(value) => match (site.policy.load)(cache, key, &value) {
            Some(shared) => {
                call.outcome(Ended::Wait);
                Waited::Shared(shared)
            }
            None => {
                site.state.errors.fetch_add(1, Relaxed);
                call.outcome(Ended::Uncached);
                Waited::Uncached
            }
        },
        Outcome::NotShared => Waited::Compute,
        Outcome::Abandoned => Waited::Retry,
    }
}

/// The function's result after storing it: `result`, or (when the function propagates cache
/// errors) the write error as its result.
fn after_write<R>(site: &Site<R>, key: &str, result: R, written: Result<()>) -> R {
    match written {
        Ok(()) => result,
        Err(err) => site.fail("write", key, err).unwrap_or(result),
    }
}

/// Writes to an in-process store directly (nothing to block on or await): to the function's
/// typed partition when it has one, else by key; gives the value back (`Err`) when the cache must
/// be written through its backend.
fn write_local<R>(
    site: &Site<R>,
    cache: &Cache,
    key: &str,
    fill: Option<&Fill>,
    value: Value,
    ttl: Expiry,
) -> core::result::Result<(), Value> {
    if let (Some(fill @ Fill { mirror: false, .. }), Some(ops)) = (fill, site.policy.front) {
        (ops.put)(&fill.front, &fill.key, &value, ttl.resolve(cache.backend().default_ttl()), fill.tag);
        return Ok(());
    }
    match cache.backend().as_local() {
        Some(local) => {
            local.set_value(key, value, ttl);
            Ok(())
        }
        None => Err(value),
    }
}

/// Before a function of a stack with typed copies of its L1 writes its result through the
/// stack: false when a delete or clear reached the key's stripe since the call started (its
/// result may be computed from data that changed: not stored, as the typed partition would not
/// serve it either).
fn stack_write_allowed(cache: &Cache, fill: Option<&Fill>) -> bool {
    match fill {
        Some(fill @ Fill { mirror: true, .. }) => tag_current(cache, fill.tag),
        _ => true,
    }
}

/// After writing through such a stack: true when a delete or clear raced the write (it may have
/// run before the write reached a layer, which would then serve the older value): the caller
/// deletes the key again. Otherwise L1's entry is copied into the typed partition.
fn stack_write_raced<R>(site: &Site<R>, cache: &Cache, key: &str, fill: Option<&Fill>) -> bool {
    match fill {
        Some(fill @ Fill { mirror: true, .. }) if !tag_current(cache, fill.tag) => true,
        _ => {
            mirror_l1(site, cache, key, fill);
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Synchronous twin
// ---------------------------------------------------------------------------------------------

fn read_sync(cache: &Cache, key: &str) -> Result<Option<Entry>> {
    if let Some(local) = cache.backend().as_local()
        && let Some(read) = cache.tags.known_entry(local.get_entry(key))
    {
        return Ok(read);
    }
    let cache = cache.clone();
    let key = key.to_owned();
    // In the call's span, wherever the runtime polls it.
    crate::rt::block_on(async move { cache.read_entry(&key).await }.instrument(tracing::Span::current()))?
}

fn write_sync<R>(site: &Site<R>, cache: &Cache, key: &str, fill: Option<&Fill>, value: Value) -> Result<()> {
    let ttl = Expiry::from_ttl(site.ttl);
    let Err(value) = write_local(site, cache, key, fill, value, ttl) else { return Ok(()) };
    if !stack_write_allowed(cache, fill) {
        return Ok(());
    }
    let backend = cache.backend().clone();
    let owned = key.to_owned();
    crate::rt::block_on(async move { backend.set(&owned, value, ttl).await })??;
    if stack_write_raced(site, cache, key, fill) {
        let backend = cache.backend().clone();
        let owned = key.to_owned();
        crate::rt::block_on(async move { backend.delete(&owned).await })??;
    }
    Ok(())
}

/// Stores what `Site::settle` chose; returns the function's result (see [`after_write`]).
fn store_sync<R>(site: &Site<R>, cache: &Cache, key: &str, fill: Option<&Fill>, result: R, stored: Option<Value>) -> R {
    match stored {
        Some(value) => after_write(site, key, result, write_sync(site, cache, key, fill, value)),
        None => result,
    }
}

/// Runs `body` and stores its result, outside single flight.
fn compute_sync<R>(
    site: &Site<R>,
    cache: &Cache,
    key: &str,
    fill: Option<&Fill>,
    body: impl FnOnce() -> R,
    condition: Condition<'_, R>,
) -> R {
    let result = body();
    let stored = site.settle(&result, condition);
    store_sync(site, cache, key, fill, result, stored)
}

/// The rest of a synchronous call that `lookup` did not answer: reads a remote
/// cache (through [`crate::rt::block_on`], which works on plain threads and inside tokio
/// runtimes), then runs `body` under single flight and stores its result.
pub fn miss_sync<R>(site: &Site<R>, miss: Miss, body: impl FnOnce() -> R, condition: Condition<'_, R>) -> R {
    let call = CallObserver::start(site.state.name, site.state.cache);
    let result = call.span().in_scope(|| observed_miss_sync(site, miss, body, condition, &call));
    call.finish();
    result
}

fn observed_miss_sync<R>(
    site: &Site<R>,
    miss: Miss,
    body: impl FnOnce() -> R,
    condition: Condition<'_, R>,
    call: &CallObserver,
) -> R {
    let Miss { key, target, fill } = miss;
    let fill = fill.as_ref();
    // `seen`: for a remote cache, the flight counter when its read was sent.
    let (cache, seen) = match plan(site, &key, target, call) {
        Plan::Return(failed) => return failed,
        Plan::Uncached => return body(),
        Plan::ReadOnly(cache) => {
            return answered(site, &cache, &key, read_sync(&cache, &key), call).unwrap_or_else(body)
        }
        Plan::Refresh(cache) => return compute_sync(site, &cache, &key, fill, body, condition),
        Plan::Compute(cache) => (cache, None),
        Plan::Read(cache) => {
            let seen = site.state.flights.ended();
            if let Some(answer) = answered(site, &cache, &key, read_sync(&cache, &key), call) {
                mirror_l1(site, &cache, &key, fill);
                return answer;
            }
            (cache, Some(seen))
        }
    };
    if !site.lock {
        return compute_sync(site, &cache, &key, fill, body, condition);
    }
    flight_sync(site, &cache, &key, fill, seen, body, condition, call)
}

/// Runs `body` under single flight: the first call leads, the others wait for its value.
#[allow(clippy::too_many_arguments)]
fn flight_sync<R>(
    site: &Site<R>,
    cache: &Cache,
    key: &str,
    fill: Option<&Fill>,
    seen: Option<u64>,
    body: impl FnOnce() -> R,
    condition: Condition<'_, R>,
    call: &CallObserver,
) -> R {
    let mut waited = false;
    loop {
        match site.state.flights.join(key) {
            Join::Reentrant => {
                log_reentrant(site, key, call);
                return body();
            }
            Join::Leader(leader) => return lead_sync(site, leader, cache, key, fill, seen, body, condition, call),
            Join::Waiter(waiter) => {
                count_wait(site, &mut waited);
                match after_wait(site, cache, key, waiter.wait(), call) {
                    Waited::Shared(shared) => return shared,
                    Waited::Uncached => return body(),
                    Waited::Compute => return compute_sync(site, cache, key, fill, body, condition),
                    Waited::Retry => continue,
                }
            }
        }
    }
}

/// The leader of a flight: looks once more, else computes, stores and shares.
#[allow(clippy::too_many_arguments)]
fn lead_sync<R>(
    site: &Site<R>,
    leader: Leader<'_>,
    cache: &Cache,
    key: &str,
    fill: Option<&Fill>,
    seen: Option<u64>,
    body: impl FnOnce() -> R,
    condition: Condition<'_, R>,
    call: &CallObserver,
) -> R {
    let read = reread_needed(site, seen).then(|| read_sync(cache, key));
    if let Some(found) = recheck(site, cache, key, fill, read) {
        return complete_hit(leader, found, call);
    }
    let result = leader.run(body);
    let stored = site.settle(&result, condition);
    let shared = stored.clone();
    let result = store_sync(site, cache, key, fill, result, stored);
    complete_computed(site, leader, shared, &result);
    result
}

// ---------------------------------------------------------------------------------------------
// Asynchronous twin
// ---------------------------------------------------------------------------------------------

async fn write_async<R>(site: &Site<R>, cache: &Cache, key: &str, fill: Option<&Fill>, value: Value) -> Result<()> {
    let ttl = Expiry::from_ttl(site.ttl);
    let Err(value) = write_local(site, cache, key, fill, value, ttl) else { return Ok(()) };
    if !stack_write_allowed(cache, fill) {
        return Ok(());
    }
    cache.backend().set(key, value, ttl).await?;
    if stack_write_raced(site, cache, key, fill) {
        cache.backend().delete(key).await?;
    }
    Ok(())
}

async fn store_async<R>(
    site: &Site<R>,
    cache: &Cache,
    key: &str,
    fill: Option<&Fill>,
    result: R,
    stored: Option<Value>,
) -> R {
    match stored {
        Some(value) => after_write(site, key, result, write_async(site, cache, key, fill, value).await),
        None => result,
    }
}

async fn compute_async<R, F>(
    site: &Site<R>,
    cache: &Cache,
    key: &str,
    fill: Option<&Fill>,
    body: F,
    condition: Condition<'_, R>,
) -> R
where
    F: core::future::Future<Output = R>,
{
    let result = body.await;
    let stored = site.settle(&result, condition);
    store_async(site, cache, key, fill, result, stored).await
}

/// The rest of an asynchronous call that `lookup` did not answer: awaits a
/// remote cache, then awaits `body` under single flight and stores its result.
pub async fn miss_async<R, F>(site: &Site<R>, miss: Miss, body: F, condition: Condition<'_, R>) -> R
where
    F: core::future::Future<Output = R>,
{
    let call = CallObserver::start(site.state.name, site.state.cache);
    let result = observed_miss_async(site, miss, body, condition, &call).instrument(call.span().clone()).await;
    call.finish();
    result
}

async fn observed_miss_async<R, F>(
    site: &Site<R>,
    miss: Miss,
    body: F,
    condition: Condition<'_, R>,
    call: &CallObserver,
) -> R
where
    F: core::future::Future<Output = R>,
{
    let Miss { key, target, fill } = miss;
    let fill = fill.as_ref();
    // `seen`: for a remote cache, the flight counter when its read was sent.
    let (cache, seen) = match plan(site, &key, target, call) {
        Plan::Return(failed) => return failed,
        Plan::Uncached => return body.await,
        Plan::ReadOnly(cache) => {
            let read = cache.read_entry(&key).await;
            return match answered(site, &cache, &key, read, call) {
                Some(answer) => answer,
                None => body.await,
            };
        }
        Plan::Refresh(cache) => return compute_async(site, &cache, &key, fill, body, condition).await,
        Plan::Compute(cache) => (cache, None),
        Plan::Read(cache) => {
            let seen = site.state.flights.ended();
            let read = cache.read_entry(&key).await;
            if let Some(answer) = answered(site, &cache, &key, read, call) {
                mirror_l1(site, &cache, &key, fill);
                return answer;
            }
            (cache, Some(seen))
        }
    };
    if !site.lock {
        return compute_async(site, &cache, &key, fill, body, condition).await;
    }
    flight_async(site, &cache, &key, fill, seen, body, condition, call).await
}

#[allow(clippy::too_many_arguments)]
async fn flight_async<R, F>(
    site: &Site<R>,
    cache: &Cache,
    key: &str,
    fill: Option<&Fill>,
    seen: Option<u64>,
    body: F,
    condition: Condition<'_, R>,
    call: &CallObserver,
) -> R
where
    F: core::future::Future<Output = R>,
{
    let mut waited = false;
    loop {
        match site.state.flights.join(key) {
            Join::Reentrant => {
                log_reentrant(site, key, call);
                return body.await;
            }
            Join::Leader(leader) => {
                return lead_async(site, leader, cache, key, fill, seen, body, condition, call).await
            }
            Join::Waiter(waiter) => {
                count_wait(site, &mut waited);
                match after_wait(site, cache, key, waiter.wait_async().await, call) {
                    Waited::Shared(shared) => return shared,
                    Waited::Uncached => return body.await,
                    Waited::Compute => return compute_async(site, cache, key, fill, body, condition).await,
                    Waited::Retry => continue,
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn lead_async<R, F>(
    site: &Site<R>,
    leader: Leader<'_>,
    cache: &Cache,
    key: &str,
    fill: Option<&Fill>,
    seen: Option<u64>,
    body: F,
    condition: Condition<'_, R>,
    call: &CallObserver,
) -> R
where
    F: core::future::Future<Output = R>,
{
    let read = if reread_needed(site, seen) { Some(cache.read_entry(key).await) } else { None };
    if let Some(found) = recheck(site, cache, key, fill, read) {
        return complete_hit(leader, found, call);
    }
    let result = leader.run_async(body).await;
    let stored = site.settle(&result, condition);
    let shared = stored.clone();
    let result = store_async(site, cache, key, fill, result, stored).await;
    complete_computed(site, leader, shared, &result);
    result
}
