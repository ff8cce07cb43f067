//! The typed-front suite (`fast_path_suite`) on the L1 of stacks `mem | redis` (quick_cache;
//! `CACHESTACK_TEST_REDIS_URL`, skipped without it outside CI).

const ENGINE: cachestack::MemoryEngine = cachestack::MemoryEngine::QuickCache;
const LOWER: fast_path_suite::Lower = fast_path_suite::Lower::Redis;

mod fast_path_suite;
