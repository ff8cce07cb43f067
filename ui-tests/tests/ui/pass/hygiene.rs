//! Generated code names only `::cachestack::__private` and `::core`: it compiles when the
//! caller's scope shadows the prelude and the standard crates.
#![allow(dead_code, non_camel_case_types)]

struct Option;
struct Result;
struct Box;
struct String;
struct Vec;
struct Some;
struct None;
struct Ok;
struct Err;
struct Duration;
struct Send;
struct Sync;
struct Clone;
struct Default;
mod std {}
mod core {}
mod cachestack {}
fn drop() {}
fn panic() {}

#[::cachestack::cached(ttl = "1m", key = "h:<n>")]
fn templated(n: u32) -> u32 {
    n
}

#[::cachestack::cached]
fn by_default(n: u32, label: &str) -> ::core::option::Option<u32> {
    let _ = label;
    ::core::option::Option::Some(n)
}

#[::cachestack::cached(condition = |r| r.is_ok(), on_cache_error = "propagate")]
async fn fallible(n: u32) -> ::core::result::Result<u32, AppError> {
    ::core::result::Result::Ok(n)
}

#[::cachestack::invalidate(key = "h:<n>")]
fn remove(n: u32) -> ::core::result::Result<(), AppError> {
    let _ = n;
    ::core::result::Result::Ok(())
}

#[derive(Debug)]
struct AppError;

impl ::core::convert::From<::cachestack::Error> for AppError {
    fn from(_: ::cachestack::Error) -> Self {
        AppError
    }
}

struct Thing;

impl Thing {
    #[::cachestack::cached]
    fn method(&self, n: u32) -> u32 {
        n
    }
}

fn main() {
    assert_eq!(templated(1), 1);
    assert_eq!(by_default(1, "a"), ::core::option::Option::Some(1));
    assert_eq!(Thing.method(2), 2);
    remove(1).unwrap();
    let rt = ::tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(rt.block_on(fallible(3)).unwrap(), 3);
}
