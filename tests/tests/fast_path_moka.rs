//! The typed-front suite (`fast_path_suite`) on the moka engine.

const ENGINE: cachestack::MemoryEngine = cachestack::MemoryEngine::Moka;

const LOWER: fast_path_suite::Lower = fast_path_suite::Lower::None;

mod fast_path_suite;
