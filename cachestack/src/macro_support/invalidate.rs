//! `<fn>_invalidate` companions and `#[invalidate]`: removing keys from a function's cache.
//!
//! As in `call`, the synchronous and asynchronous twins share their decisions (the in-process
//! fast path, what a failure means) and keep only their I/O.

use super::front::{front_remove, FastKeyBuf};
use super::state::CachedFn;
use super::{Cache, CacheRegistry, Result};
use crate::error::Error;
use crate::KeyPattern;

// ---------------------------------------------------------------------------------------------
// Shared decisions (no I/O)
// ---------------------------------------------------------------------------------------------

/// Removes `keys` from an in-process store directly (nothing to block on or await): the number
/// removed, or `None` when the cache must be reached through its backend.
fn delete_local(cache: &Cache, keys: &[String]) -> Option<u64> {
    let local = cache.backend().as_local()?;
    Some(keys.iter().map(|key| u64::from(local.remove(key))).sum())
}

/// What `#[invalidate]` returns: nothing when the keys are gone; a failure is logged and, when
/// `propagate` is set, returned.
fn invalidation_outcome(
    function: &'static str,
    keys: &[String],
    deleted: Result<u64>,
    propagate: bool,
) -> Option<Error> {
    match deleted {
        Ok(_) => None,
        Err(err) => {
            tracing::warn!(function, ?keys, error = %err, "cachestack: #[invalidate] could not remove keys");
            propagate.then_some(err)
        }
    }
}

/// The caches `keys` belong to, each with its keys: the cache `cache` names, else each key's
/// [route](CacheRegistry::route) (or the default cache).
fn keys_by_cache(cache: Option<&str>, keys: &[String]) -> Result<Vec<(Cache, Vec<String>)>> {
    let registry = CacheRegistry::global();
    if let (Some(name), false) = (cache, keys.is_empty()) {
        return Ok(vec![(registry.get(name)?, keys.to_vec())]);
    }
    let groups = registry.group_by_route(keys.iter().map(String::as_str))?;
    Ok(groups.into_iter().map(|(cache, at)| (cache, at.into_iter().map(|i| keys[i].clone()).collect())).collect())
}

/// The patterns `#[invalidate(pattern = ...)]` rendered, parsed, each with the caches that may
/// hold matching keys: the cache `cache` names, else those the pattern's routes reach.
fn patterns_by_cache(cache: Option<&str>, patterns: &[String]) -> Result<Vec<(Cache, KeyPattern)>> {
    let registry = CacheRegistry::global();
    let mut targets = Vec::with_capacity(patterns.len());
    for pattern in patterns {
        let pattern = KeyPattern::new(pattern)?;
        let caches = match cache {
            Some(name) => vec![registry.get(name)?],
            None => registry.caches_for_pattern(&pattern)?,
        };
        targets.extend(caches.into_iter().map(|c| (c, pattern.clone())));
    }
    Ok(targets)
}

// ---------------------------------------------------------------------------------------------
// Synchronous twin
// ---------------------------------------------------------------------------------------------

fn delete_sync(cache: &Cache, keys: &[String]) -> Result<u64> {
    if let Some(removed) = delete_local(cache, keys) {
        return Ok(removed);
    }
    let backend = cache.backend().clone();
    let keys = keys.to_vec();
    crate::rt::block_on(async move {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        backend.delete_many(&keys).await
    })?
}

/// `<fn>_invalidate` for synchronous functions: removes `key` from the function's cache (and
/// the entry of these arguments, `fast`, from its typed partition of a memory cache).
pub fn invalidate_sync(
    state: &'static CachedFn,
    key: String,
    fast: impl FnOnce(&mut FastKeyBuf) -> bool,
) -> Result<bool> {
    let cache = state.cache_for_key(&key)?;
    // The typed entry first: the key's delete then makes anything computed meanwhile stale.
    let typed = front_remove(&cache, state as *const CachedFn as usize, fast);
    Ok(delete_sync(&cache, &[key])? > 0 || typed)
}

/// `#[invalidate]` on a synchronous function: removes `keys`; a failure is logged and, when
/// `propagate` is set, returned.
pub fn invalidate_keys_sync(
    function: &'static str,
    cache: Option<&'static str>,
    keys: &[String],
    propagate: bool,
) -> Option<Error> {
    let deleted = keys_by_cache(cache, keys).and_then(|groups| {
        groups.iter().try_fold(0u64, |sum, (cache, keys)| Ok(sum.saturating_add(delete_sync(cache, keys)?)))
    });
    invalidation_outcome(function, keys, deleted, propagate)
}

fn delete_matching_sync(targets: Vec<(Cache, KeyPattern)>) -> Result<u64> {
    crate::rt::block_on(delete_matching_async(targets))?
}

/// `#[invalidate(pattern = ...)]` on a synchronous function: removes the keys matching
/// `patterns`; a failure is logged and, when `propagate` is set, returned.
pub fn invalidate_patterns_sync(
    function: &'static str,
    cache: Option<&'static str>,
    patterns: &[String],
    propagate: bool,
) -> Option<Error> {
    let deleted = patterns_by_cache(cache, patterns).and_then(delete_matching_sync);
    invalidation_outcome(function, patterns, deleted, propagate)
}

// ---------------------------------------------------------------------------------------------
// Asynchronous twin
// ---------------------------------------------------------------------------------------------

async fn delete_async(cache: &Cache, keys: &[String]) -> Result<u64> {
    if let Some(removed) = delete_local(cache, keys) {
        return Ok(removed);
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    cache.backend().delete_many(&keys).await
}

/// `<fn>_invalidate` for asynchronous functions.
pub async fn invalidate_async(
    state: &'static CachedFn,
    key: String,
    fast: impl FnOnce(&mut FastKeyBuf) -> bool,
) -> Result<bool> {
    let cache = state.cache_for_key(&key)?;
    let typed = front_remove(&cache, state as *const CachedFn as usize, fast);
    Ok(delete_async(&cache, &[key]).await? > 0 || typed)
}

/// `#[invalidate]` on an asynchronous function.
pub async fn invalidate_keys_async(
    function: &'static str,
    cache: Option<&'static str>,
    keys: &[String],
    propagate: bool,
) -> Option<Error> {
    let deleted = async {
        let mut deleted = 0u64;
        for (cache, keys) in keys_by_cache(cache, keys)? {
            deleted = deleted.saturating_add(delete_async(&cache, &keys).await?);
        }
        Ok(deleted)
    }
    .await;
    invalidation_outcome(function, keys, deleted, propagate)
}

async fn delete_matching_async(targets: Vec<(Cache, KeyPattern)>) -> Result<u64> {
    let mut deleted = 0u64;
    for (cache, pattern) in targets {
        deleted = deleted.saturating_add(cache.backend().delete_matching(&pattern).await?);
    }
    Ok(deleted)
}

/// `#[invalidate(pattern = ...)]` on an asynchronous function.
pub async fn invalidate_patterns_async(
    function: &'static str,
    cache: Option<&'static str>,
    patterns: &[String],
    propagate: bool,
) -> Option<Error> {
    let deleted = match patterns_by_cache(cache, patterns) {
        Ok(targets) => delete_matching_async(targets).await,
        Err(err) => Err(err),
    };
    invalidation_outcome(function, patterns, deleted, propagate)
}

// ---------------------------------------------------------------------------------------------
// Tags
// ---------------------------------------------------------------------------------------------

/// The cache whose tags `#[invalidate(tags = ...)]` invalidates: the one it names, else the
/// default cache (tags are not keys: prefix routes do not apply to them).
fn tag_cache(cache: Option<&str>) -> Result<Cache> {
    let registry = CacheRegistry::global();
    match cache {
        Some(name) => registry.get(name),
        None => Ok(registry.default_cache()),
    }
}

/// What `#[invalidate(tags = ...)]` returns: nothing once every tag is invalidated; a failure is
/// logged and, when `propagate` is set, returned.
fn tags_outcome(function: &'static str, tags: &[String], done: Result<()>, propagate: bool) -> Option<Error> {
    match done {
        Ok(()) => None,
        Err(err) => {
            tracing::warn!(function, ?tags, error = %err, "cachestack: #[invalidate] could not invalidate tags");
            propagate.then_some(err)
        }
    }
}

/// `#[invalidate(tags = ...)]` on an `async fn`: invalidates `tags` (see
/// [`Cache::invalidate_tag`]); a failure is logged and, when `propagate` is set, returned.
pub async fn invalidate_tags_async(
    function: &'static str,
    cache: Option<&'static str>,
    tags: &[String],
    propagate: bool,
) -> Option<Error> {
    let done = async {
        let cache = tag_cache(cache)?;
        for tag in tags {
            cache.invalidate_tag(tag).await?;
        }
        Ok(())
    };
    tags_outcome(function, tags, done.await, propagate)
}

/// `#[invalidate(tags = ...)]` on a synchronous function (see [`invalidate_tags_async`]).
pub fn invalidate_tags_sync(
    function: &'static str,
    cache: Option<&'static str>,
    tags: &[String],
    propagate: bool,
) -> Option<Error> {
    let done = tag_cache(cache).and_then(|cache| tags.iter().try_for_each(|tag| cache.invalidate_tag_blocking(tag)));
    tags_outcome(function, tags, done, propagate)
}
