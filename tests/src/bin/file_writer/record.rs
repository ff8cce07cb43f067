//! Self-checking values for the file backend's crash and concurrency tests, shared by the
//! `file_writer` child process and `tests/file.rs`.
//!
//! A record is `(writer, seq, data)` where the length and every byte of `data` follow from
//! `(writer, seq)`: a value cut short or mixed from two writes never passes [`is_complete`]. A
//! plain tuple keeps the type fingerprint (`std::any::type_name`) identical in both binaries.

// Each includer uses its half (the writer builds records, the test checks them).
#![allow(dead_code)]

/// The value type written by the test writers.
pub type Record = (u32, u64, Vec<u8>);

/// Number of distinct keys the writers cycle through.
pub const KEYS: u64 = 16;

/// The key of the `seq`-th write.
pub fn key(seq: u64) -> String {
    format!("crash:{}", seq % KEYS)
}

fn len(writer: u32, seq: u64) -> usize {
    // From 0 bytes to about 192 KiB, so some writes take long enough to be interrupted.
    ((u64::from(writer) * 7919 + seq * 104_729) % (192 * 1024)) as usize
}

fn byte(writer: u32, seq: u64, i: usize) -> u8 {
    (writer as u8).wrapping_mul(31) ^ (seq as u8) ^ (i as u8).wrapping_mul(7)
}

/// The record `writer` writes as its `seq`-th value.
pub fn record(writer: u32, seq: u64) -> Record {
    let data = (0..len(writer, seq)).map(|i| byte(writer, seq, i)).collect();
    (writer, seq, data)
}

/// True when `record` is exactly what `record(writer, seq)` produced.
pub fn is_complete(record: &Record) -> bool {
    let (writer, seq, data) = record;
    data.len() == len(*writer, *seq) && data.iter().enumerate().all(|(i, b)| *b == byte(*writer, *seq, i))
}
