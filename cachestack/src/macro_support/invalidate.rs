//! `<fn>_invalidate` companions and `#[invalidate]`: removing keys from a function's cache.

use super::state::{resolve, CachedFn};
use super::{Cache, Result};
use crate::error::Error;

fn delete_sync(cache: &Cache, keys: &[String]) -> Result<u64> {
    if let Some(local) = cache.backend().as_local() {
        return Ok(keys.iter().map(|key| u64::from(local.remove(key))).sum());
    }
    let backend = cache.backend().clone();
    let keys = keys.to_vec();
    crate::rt::block_on(async move {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        backend.delete_many(&keys).await
    })?
}

async fn delete_async(cache: &Cache, keys: &[String]) -> Result<u64> {
    if let Some(local) = cache.backend().as_local() {
        return Ok(keys.iter().map(|key| u64::from(local.remove(key))).sum());
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    cache.backend().delete_many(&keys).await
}

/// `<fn>_invalidate` for synchronous functions: removes `key` from the function's cache.
pub fn invalidate_sync(state: &CachedFn, key: String) -> Result<bool> {
    let cache = state.cache()?;
    Ok(delete_sync(&cache, &[key])? > 0)
}

/// `<fn>_invalidate` for asynchronous functions.
pub async fn invalidate_async(state: &CachedFn, key: String) -> Result<bool> {
    let cache = state.cache()?;
    Ok(delete_async(&cache, &[key]).await? > 0)
}

fn invalidation_failed(function: &'static str, keys: &[String], err: Error, propagate: bool) -> Option<Error> {
    tracing::warn!(function, ?keys, error = %err, "cachestack: #[invalidate] could not remove keys");
    propagate.then_some(err)
}

/// `#[invalidate]` on a synchronous function: removes `keys`; a failure is logged and, when
/// `propagate` is set, returned.
pub fn invalidate_keys_sync(
    function: &'static str,
    cache: Option<&'static str>,
    keys: &[String],
    propagate: bool,
) -> Option<Error> {
    match resolve(cache).and_then(|cache| delete_sync(&cache, keys)) {
        Ok(_) => None,
        Err(err) => invalidation_failed(function, keys, err, propagate),
    }
}

/// `#[invalidate]` on an asynchronous function.
pub async fn invalidate_keys_async(
    function: &'static str,
    cache: Option<&'static str>,
    keys: &[String],
    propagate: bool,
) -> Option<Error> {
    let result = match resolve(cache) {
        Ok(cache) => delete_async(&cache, keys).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(_) => None,
        Err(err) => invalidation_failed(function, keys, err, propagate),
    }
}
