//! The typed-front suite (`fast_path_suite`) on the moka engine.

const ENGINE: cachestack::MemoryEngine = cachestack::MemoryEngine::Moka;

mod fast_path_suite;
