//! Reading a value never allocates more than the configured limit, whatever the bytes claim:
//! compression bombs, sizes that lie, and small values read under a large limit.
//!
//! The peak is measured by an instrumented global allocator (Rust allocations; zstd's own
//! decoder state is allocated by its C code and not counted). The allocator is process-wide, so
//! this file holds one test and runs alone in its binary.

use std::alloc::System;

use cachestack::{Compression, Error, Value, ValueFormat};
use peakmem_alloc::{PeakMemAlloc, PeakMemAllocTrait, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &PeakMemAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bookkeeping of a read beyond its payload (error messages, the value's handle).
const SLACK: usize = 64 * 1024;

/// Opens `bytes` and returns the result with the peak of memory allocated meanwhile.
fn open_measured(format: &ValueFormat, bytes: &[u8]) -> (Result<usize, Error>, usize) {
    GLOBAL.reset_peak_memory();
    let result = format.open("key", bytes).map(|(value, _)| value.approx_size());
    (result, GLOBAL.get_peak_memory())
}

#[test]
fn reads_allocate_what_the_value_holds_never_more_than_the_limit() {
    let mut compressions = Vec::new();
    compressions.extend(cfg!(feature = "zstd").then_some(Compression::Zstd { level: 3 }));
    compressions.extend(cfg!(feature = "lz4").then_some(Compression::Lz4));
    for compression in compressions {
        let format = ValueFormat { compression, compress_min_bytes: 0, ..ValueFormat::default() };

        // A small value under the default limit (64 MiB): the read holds the value's size.
        let small = format.seal("key", &Value::new("x".repeat(200)), None).unwrap();
        let (result, peak) = open_measured(&format, &small);
        assert_eq!(result.unwrap(), 202, "{compression:?}");
        assert!(peak < SLACK, "{compression:?}: reading 202 bytes allocated {peak} bytes");

        // A bomb: 8 MiB of zeros in a few KiB, read under a 1 MiB limit.
        let limit = 1 << 20;
        let big = ValueFormat { max_value_bytes: 16 << 20, ..format.clone() };
        let bomb = big.seal("key", &Value::new(vec![0u8; 8 << 20]), None).unwrap();
        let tight = ValueFormat { max_value_bytes: limit, ..format.clone() };
        let (result, peak) = open_measured(&tight, &bomb);
        assert!(matches!(result, Err(Error::ValueTooLarge { .. })), "{compression:?}: {result:?}");
        assert!(peak <= SLACK, "{compression:?}: a refused bomb allocated {peak} bytes");

        // A value just under the limit: allocated once, at its size.
        let fits = tight.seal("key", &Value::new(vec![7u8; limit - 16]), None).unwrap();
        let (result, peak) = open_measured(&tight, &fits);
        assert!(result.is_ok(), "{compression:?}: {result:?}");
        assert!(peak <= limit + SLACK, "{compression:?}: reading {limit} bytes allocated {peak}");
    }
}
