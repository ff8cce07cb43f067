//! The typed-front suite (`fast_path_suite`) on the L1 of stacks `mem | file`, L1 on moka.

const ENGINE: cachestack::MemoryEngine = cachestack::MemoryEngine::Moka;
const LOWER: fast_path_suite::Lower = fast_path_suite::Lower::File;

mod fast_path_suite;
