//! Fixtures shared by cachestack's comparative benchmarks (`benches/hit.rs`,
//! `benches/stampede.rs`) and the report generator (`src/bin/report.rs`).
//!
//! The peers (`cached`, `quick_cache`, `moka`) are dev-dependencies of this unpublished crate only;
//! nothing here reaches cachestack's users. `bash benchmarks/run.sh` runs everything and writes
//! `BENCHMARKS.md`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Distinct keys in the hit benchmarks.
pub const KEYS: usize = 100_000;

/// Concurrent callers of one cold key in the stampede benchmarks.
pub const CALLERS: usize = 1000;

/// How long the body of a stampede benchmark's function takes.
pub const BODY_TIME: Duration = Duration::from_millis(1);

/// The memoized value: 200 bytes inline (`size_of`), two short heap strings, so a hit's clone
/// costs what a typical small record's does (two allocations and a copy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The key it was computed for.
    pub id: u64,
    /// About 11 bytes.
    pub name: String,
    /// About 21 bytes.
    pub email: String,
    /// Fixed-size data.
    pub scores: [u64; 18],
}

impl Payload {
    /// The value computed for `id`.
    ///
    /// ```
    /// let p = cachestack_benchmarks::Payload::new(7);
    /// assert_eq!((p.id, p.name.as_str()), (7, "user-7"));
    /// assert_eq!(std::mem::size_of_val(&p), 200);
    /// ```
    pub fn new(id: u64) -> Self {
        let mut scores = [0u64; 18];
        for (i, s) in scores.iter_mut().enumerate() {
            *s = id.wrapping_mul(31).wrapping_add(i as u64);
        }
        Payload { id, name: format!("user-{id}"), email: format!("user{id}@example.com"), scores }
    }

    /// The value computed for a text key (same shape as [`Payload::new`]).
    pub fn for_text(key: &str) -> Self {
        Payload::new(fnv1a(key.as_bytes()) % 1_000_000_000)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A deterministic xorshift generator (the benchmarks need repeatable orders, not good randomness).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = XorShift::new(seed);
    for i in (1..items.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// `0..n` in a fixed shuffled order: the order hits are requested in, so consecutive lookups touch
/// unrelated memory, as real traffic does.
///
/// ```
/// let ids = cachestack_benchmarks::shuffled_ids(1000);
/// let mut sorted = ids.clone();
/// sorted.sort();
/// assert_eq!(sorted, (0..1000).collect::<Vec<u64>>());
/// assert_ne!(ids, sorted);
/// ```
pub fn shuffled_ids(n: usize) -> Vec<u64> {
    let mut ids: Vec<u64> = (0..n as u64).collect();
    shuffle(&mut ids, 0x9e37_79b9_7f4a_7c15);
    ids
}

/// A 36-byte text key for `i`, shaped like a UUID (`8-4-4-4-12` hex digits).
///
/// ```
/// let k = cachestack_benchmarks::text_key(42);
/// assert_eq!(k.len(), 36);
/// assert_ne!(k, cachestack_benchmarks::text_key(43));
/// ```
pub fn text_key(i: u64) -> String {
    let mut rng = XorShift::new(i.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5851_f42d_4c95_7f2d);
    let (a, b) = (rng.next_u64(), rng.next_u64());
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// [`text_key`] of `0..n`, in the order of [`shuffled_ids`].
pub fn shuffled_text_keys(n: usize) -> Vec<String> {
    shuffled_ids(n).into_iter().map(text_key).collect()
}

/// Walks a slice forever, starting at `start` (no division on the hot path).
#[derive(Debug)]
pub struct Cycle<'a, T> {
    items: &'a [T],
    at: usize,
}

impl<'a, T> Cycle<'a, T> {
    /// A walk over `items` (not empty) from index `start % items.len()`.
    pub fn new(items: &'a [T], start: usize) -> Self {
        assert!(!items.is_empty(), "nothing to cycle over");
        Cycle { items, at: start % items.len() }
    }

    /// The next item.
    #[inline(always)]
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> &'a T {
        let item = &self.items[self.at];
        self.at += 1;
        if self.at == self.items.len() {
            self.at = 0;
        }
        item
    }
}

/// Runs `call` on 2 threads at once, each `iters` times, released together by a barrier; returns
/// the wall time of the slower thread: the time for `2 * iters` calls in aggregate.
pub fn on_two_threads<F>(iters: u64, call: F) -> Duration
where
    F: Fn(usize, u64) + Sync,
{
    on_threads(2, iters, call)
}

/// Runs `call` on `threads` threads at once, each `iters` times, released together by a barrier;
/// returns the wall time of the slowest thread: the time for `threads * iters` calls in aggregate.
pub fn on_threads<F>(threads: usize, iters: u64, call: F) -> Duration
where
    F: Fn(usize, u64) + Sync,
{
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let (barrier, call) = (&barrier, &call);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    call(thread, iters);
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("benchmark thread panicked")).max().unwrap_or_default()
    })
}

/// A Zipf-distributed trace: `len` draws of keys `0..keys` where the key of rank `k` (1-based) is
/// drawn with probability proportional to `1 / k^s`; ranks are mapped to keys through
/// [`shuffled_ids`], so hot keys are not neighbours. Deterministic for a given `seed` (inverse
/// CDF over the precomputed cumulative weights, drawn with [`XorShift`]).
///
/// ```
/// let trace = cachestack_benchmarks::zipf_trace(1000, 10_000, 1.0, 7);
/// assert_eq!(trace, cachestack_benchmarks::zipf_trace(1000, 10_000, 1.0, 7));
/// assert!(trace.iter().all(|&k| k < 1000));
/// // The hottest key is drawn far more often than the average (10 per key here).
/// let hottest = cachestack_benchmarks::shuffled_ids(1000)[0];
/// assert!(trace.iter().filter(|&&k| k == hottest).count() > 500);
/// ```
pub fn zipf_trace(keys: usize, len: usize, s: f64, seed: u64) -> Vec<u64> {
    let mut cumulative = Vec::with_capacity(keys);
    let mut total = 0.0;
    for rank in 1..=keys {
        total += 1.0 / (rank as f64).powf(s);
        cumulative.push(total);
    }
    let ids = shuffled_ids(keys);
    let mut rng = XorShift::new(seed);
    (0..len)
        .map(|_| {
            // 53 random bits as a uniform number in [0, total).
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
            let rank = cumulative.partition_point(|&c| c <= u).min(keys - 1);
            ids[rank]
        })
        .collect()
}

/// A crowd of `CALLERS` parked threads that call one function with the same key at the same
/// moment, round after round (threads are spawned once: spawning 1000 threads per round would cost
/// far more than what is measured).
pub struct Crowd {
    start: Arc<Barrier>,
    done: Arc<Barrier>,
    key: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Crowd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crowd").field("callers", &self.threads.len()).finish()
    }
}

impl Crowd {
    /// `callers` threads, each calling `call(key)` once per round.
    pub fn new(callers: usize, call: impl Fn(u64) + Send + Sync + 'static) -> Self {
        let start = Arc::new(Barrier::new(callers + 1));
        let done = Arc::new(Barrier::new(callers + 1));
        let key = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let call = Arc::new(call);
        let threads = (0..callers)
            .map(|i| {
                let (start, done, key, stop, call) =
                    (start.clone(), done.clone(), key.clone(), stop.clone(), call.clone());
                std::thread::Builder::new()
                    .name(format!("caller-{i}"))
                    .stack_size(512 * 1024)
                    .spawn(move || loop {
                        start.wait();
                        if stop.load(Ordering::Acquire) {
                            return;
                        }
                        call(key.load(Ordering::Acquire));
                        done.wait();
                    })
                    .expect("cannot spawn a caller thread")
            })
            .collect();
        Crowd { start, done, key, stop, threads }
    }

    /// One round: every caller calls with `key`; returns the time until the last one returned.
    pub fn round(&self, key: u64) -> Duration {
        self.key.store(key, Ordering::Release);
        let began = Instant::now();
        self.start.wait();
        self.done.wait();
        began.elapsed()
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.start.wait();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Body executions per cold key over the rounds of one stampede benchmark.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Cold keys (rounds) measured.
    pub rounds: u64,
    /// Concurrent callers per round.
    pub callers: u64,
    /// Body executions over all rounds.
    pub executions: u64,
    /// Fewest executions in one round.
    pub min_per_key: u64,
    /// Most executions in one round.
    pub max_per_key: u64,
    /// Callers that received a value for another key (must be 0).
    pub wrong_values: u64,
    /// When the tally was written (seconds since the Unix epoch).
    pub unix_time: u64,
}

impl Tally {
    /// An empty tally for rounds of `callers` callers.
    pub fn new(callers: usize) -> Self {
        Tally { callers: callers as u64, min_per_key: u64::MAX, ..Tally::default() }
    }

    /// Records one round in which the body ran `executions` times.
    pub fn record(&mut self, executions: u64) {
        self.rounds += 1;
        self.executions += executions;
        self.min_per_key = self.min_per_key.min(executions);
        self.max_per_key = self.max_per_key.max(executions);
    }

    /// Executions per cold key, on average.
    pub fn mean(&self) -> f64 {
        if self.rounds == 0 {
            0.0
        } else {
            self.executions as f64 / self.rounds as f64
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Cargo's target directory for this workspace: `CARGO_TARGET_DIR`, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"),
    }
}

/// Where the stampede benchmarks record body executions (criterion records times only):
/// `CACHESTACK_STAMPEDE_JSON`, else `<target>/cachestack-bench/stampede.json`.
pub fn stampede_file() -> PathBuf {
    match std::env::var_os("CACHESTACK_STAMPEDE_JSON") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => target_dir().join("cachestack-bench").join("stampede.json"),
    }
}

/// The tallies in `path`, by `group/library` (empty when the file does not exist).
pub fn read_tallies(path: &Path) -> io::Result<std::collections::BTreeMap<String, Tally>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Default::default()),
        Err(err) => Err(err),
    }
}

/// Stores `tally` under `id` in `path`, keeping the other entries.
pub fn write_tally(path: &Path, id: &str, tally: &Tally) -> io::Result<()> {
    let mut all = read_tallies(path)?;
    all.insert(id.to_string(), Tally { unix_time: unix_now(), ..tally.clone() });
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec_pretty(&all).map_err(io::Error::other)?;
    fs::write(path, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_keys_are_distinct_and_36_bytes() {
        let keys = shuffled_text_keys(10_000);
        assert!(keys.iter().all(|k| k.len() == 36));
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len());
    }

    #[test]
    fn cycle_wraps_around() {
        let items = [1, 2, 3];
        let mut cycle = Cycle::new(&items, 2);
        let seen: Vec<i32> = (0..5).map(|_| *cycle.next()).collect();
        assert_eq!(seen, [3, 1, 2, 3, 1]);
    }

    #[test]
    fn a_crowd_calls_once_per_caller_per_round() {
        let calls = Arc::new(AtomicU64::new(0));
        let counted = calls.clone();
        let crowd = Crowd::new(8, move |key| {
            counted.fetch_add(key, Ordering::Relaxed);
        });
        crowd.round(1);
        crowd.round(10);
        drop(crowd);
        assert_eq!(calls.load(Ordering::Relaxed), 8 + 80);
    }

    #[test]
    fn tallies_round_trip_through_the_file() {
        let dir = std::env::temp_dir().join(format!("cachestack-bench-test-{}", std::process::id()));
        let path = dir.join("stampede.json");
        let mut tally = Tally::new(4);
        tally.record(1);
        tally.record(3);
        write_tally(&path, "threads/a", &tally).unwrap();
        write_tally(&path, "threads/b", &Tally::new(4)).unwrap();
        let back = read_tallies(&path).unwrap();
        assert_eq!((back["threads/a"].min_per_key, back["threads/a"].max_per_key), (1, 3));
        assert_eq!(back["threads/a"].mean(), 2.0);
        assert!(back.contains_key("threads/b"));
        let _ = fs::remove_dir_all(dir);
    }
}
