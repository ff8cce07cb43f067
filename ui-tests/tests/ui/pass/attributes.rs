//! Every attribute, alone and together.
use std::time::Duration;

use cachestack::{cached, invalidate};

const TTL: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct AppError;

impl From<cachestack::Error> for AppError {
    fn from(_: cachestack::Error) -> Self {
        AppError
    }
}

#[cached(
    ttl = "2h30m",
    key = "all:<id>:<<literal",
    condition = |r: &Result<u64, AppError>| r.is_ok(),
    cache = "custom",
    namespace = "app",
    version = 3,
    lock = false,
    on_cache_error = "ignore",
    crate = ::cachestack
)]
fn everything(id: u64) -> Result<u64, AppError> {
    Ok(id)
}

#[cached(ttl = TTL, cache_none = false)]
fn option(id: u64) -> Option<u64> {
    Some(id)
}

#[cached(ttl = Duration::from_millis(10 * 100), cache_err = true, on_cache_error = "propagate")]
fn result(id: u64) -> Result<u64, AppError> {
    Ok(id)
}

impl serde::Serialize for AppError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}
impl<'de> serde::Deserialize<'de> for AppError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|_| AppError)
    }
}
impl Clone for AppError {
    fn clone(&self) -> Self {
        AppError
    }
}

#[cached(version = "2024-06", crate = "cachestack")]
fn string_version(id: u64) -> u64 {
    id
}

#[invalidate(key = "all:<id>:<<literal", key = "other:<id>", cache = "custom", namespace = "app", version = 3, before = true)]
fn invalidate_everything(id: u64) -> Result<(), AppError> {
    let _ = id;
    Ok(())
}

#[invalidate(key = "x:<id>", on_cache_error = "propagate", crate = ::cachestack)]
fn invalidate_propagating(id: u64) -> Result<(), AppError> {
    let _ = id;
    Ok(())
}

#[invalidate(pattern = "all:<id>:*", pattern = r"x:\*<id>?", on_cache_error = "propagate", namespace = "app")]
async fn invalidate_pattern(id: u64) -> Result<(), AppError> {
    let _ = id;
    Ok(())
}

fn main() {
    cachestack::CacheRegistry::global().register_url("custom", "mem://").unwrap();
    assert_eq!(everything(1).unwrap(), 1);
    assert_eq!(everything_key(&1), "app:v3:all:1:<literal");
    assert_eq!(option(1), Some(1));
    assert_eq!(result(1).unwrap(), 1);
    assert_eq!(string_version(1), 1);
    invalidate_everything(1).unwrap();
    invalidate_propagating(1).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(invalidate_pattern(1)).unwrap();
}
