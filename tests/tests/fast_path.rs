//! The typed-front suite (`fast_path_suite`) on the quick_cache engine.

const ENGINE: cachestack::MemoryEngine = cachestack::MemoryEngine::QuickCache;

mod fast_path_suite;
