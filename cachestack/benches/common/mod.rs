//! Shared by the runtime crate's benchmarks: the cached value they all measure, and where a
//! network benchmark finds its server.
#![allow(dead_code)] // each benchmark uses part of it

use serde::{Deserialize, Serialize};

/// A realistic cached value: a few strings, a list and a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub id: u64,
    pub name: String,
    pub email: String,
    pub tags: Vec<String>,
    pub score: f64,
}

/// The profile of user `id`.
pub fn profile(id: u64) -> Profile {
    Profile {
        id,
        name: format!("User number {id}"),
        email: format!("user{id}@example.com"),
        tags: vec!["admin".into(), "beta".into(), "x".repeat(40)],
        score: id as f64 * 1.5,
    }
}

/// The first non-empty environment variable of `CACHESTACK_BENCH_<NAME>_URL` and
/// `CACHESTACK_TEST_<NAME>_URL` (as `tests/servers.sh` exports it).
pub fn server_url_from_env(name: &str) -> Option<String> {
    [format!("CACHESTACK_BENCH_{name}_URL"), format!("CACHESTACK_TEST_{name}_URL")]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
}
