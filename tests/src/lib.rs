//! Shared test support for cachestack: the backend conformance suite and helpers for tests that
//! need real servers.
#![allow(clippy::unwrap_used)]

pub mod conformance;
