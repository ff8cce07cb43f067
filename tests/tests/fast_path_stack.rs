//! The typed-front suite (`fast_path_suite`) on the L1 of stacks `mem | file` (quick_cache).

const ENGINE: cachestack::MemoryEngine = cachestack::MemoryEngine::QuickCache;
const LOWER: fast_path_suite::Lower = fast_path_suite::Lower::File;

mod fast_path_suite;
