//! Shared test support for cachestack: the backend conformance suite and helpers for tests that
//! need real servers.
#![allow(clippy::unwrap_used)]

pub mod browser;
pub mod errors;
pub mod faults;
pub mod own_postgres;
pub mod own_server;
pub mod proxy;
pub mod sync;

/// The conformance suite ships in the runtime crate (feature `conformance`).
pub use cachestack::conformance;
pub use cachestack::conformance_suite;

/// True when running in CI (`CI=true`), where a missing server fails the test instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The URL of a test server from the environment variable `var` (set by `tests/servers.sh`).
///
/// When it is missing: in CI this panics (the test fails); elsewhere it prints a loud SKIPPED
/// line to stderr and returns `None`, and the test returns early.
pub fn server_url(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if in_ci() => {
            panic!("{what} is required in CI but {var} is not set: run the tests with `bash tests/run-all.sh`")
        }
        _ => {
            eprintln!("\n**** SKIPPED: {what} not available ({var} is not set); run `bash tests/run-all.sh` to start it ****\n");
            None
        }
    }
}

/// Returns early from a test when the server is missing outside CI (see [`server_url`]).
#[macro_export]
macro_rules! require_server {
    ($var:expr, $what:expr) => {
        match $crate::server_url($var, $what) {
            Some(url) => url,
            None => return,
        }
    };
}
