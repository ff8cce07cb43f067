//! Child process for the file backend's crash test (`tests/file.rs`): writes self-checking
//! records from several tasks at once until it is killed, so that a kill finds writes in every
//! phase (encoding, writing the temporary file, renaming).
//!
//! Usage: `file_writer <directory> <writer id> <writes before "ready">`. It first writes every key
//! once, then starts the tasks; once they have completed the given number of writes it prints `ready` on stdout (the test's cue to kill it with SIGKILL) and keeps
//! writing. As a safety net it exits by itself after two minutes.

mod record;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachestack::{Cache, FileBackend};

/// Concurrent writing tasks; task `t` of writer `w` writes records of writer id `w * TASKS + t`.
const TASKS: u32 = 4;

fn fail(message: String) -> ! {
    eprintln!("file_writer: {message}");
    std::process::exit(1);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(writer), Some(ready_after)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: file_writer <directory> <writer id> <writes before ready>");
        std::process::exit(2);
    };
    let (Ok(writer), Ok(ready_after)) = (writer.parse::<u32>(), ready_after.parse::<u64>()) else {
        eprintln!("file_writer: writer id and write count must be numbers");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap_or_else(|e| fail(format!("cannot start a runtime: {e}")));
    let cache = FileBackend::open(&dir).map(Cache::new).unwrap_or_else(|e| fail(format!("cannot open the cache: {e}")));
    let deadline = Instant::now() + Duration::from_secs(120);
    let completed = Arc::new(AtomicU64::new(0));

    runtime.block_on(async move {
        // Every key holds a value before the concurrent writes (and the kills) begin.
        for seq in 0..record::KEYS {
            if let Err(e) = cache.set(&record::key(seq), &record::record(writer * TASKS, seq), None).await {
                fail(format!("write failed: {e}"));
            }
        }
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (cache, completed) = (cache.clone(), Arc::clone(&completed));
                tokio::spawn(async move {
                    let id = writer * TASKS + t;
                    let mut seq = u64::from(t);
                    while Instant::now() < deadline {
                        if let Err(e) = cache.set(&record::key(seq), &record::record(id, seq), None).await {
                            fail(format!("write failed: {e}"));
                        }
                        seq += 1;
                        if completed.fetch_add(1, Ordering::SeqCst) + 1 == ready_after {
                            let mut out = std::io::stdout().lock();
                            if writeln!(out, "ready").and_then(|()| out.flush()).is_err() {
                                std::process::exit(1);
                            }
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    });
}
