//! Single flight across processes (`#[cached(lock = "distributed")]`), with real processes over
//! real servers: Redis, PostgreSQL and Memcached.
//!
//! - Four processes (the `flight_worker` child binary) call one cold key from 50 tasks each: the
//!   body runs exactly once, counted in the store (an `incr` by the body).
//! - The process running the body is killed (SIGKILL) while it blocks: its lock ends with its
//!   lease (Redis, Memcached) or its connection (PostgreSQL), one of the other processes takes
//!   over (a second and last execution), and every caller of the survivors gets the value.
//!
//! The tests synchronise on the children's lines (`started`, `all-in`, `done`), never on sleeps.
//! Each test waits at most two minutes for a line, so a deadlock fails instead of hanging.
//!
//! Also: a store without a lock is a configuration error, from `get_or_compute`.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cachestack::{Cache, CallStatus, ComputeOptions, LockMode, MemoryBackend};
use cachestack_tests::require_server;

const PROCESSES: usize = 4;
const CALLERS: usize = 50;
/// How long a test waits for a child's next line before it fails (a deadlock, or a crash).
const PATIENCE: Duration = Duration::from_secs(120);

struct Worker {
    child: Child,
    stdin: ChildStdin,
}

/// The children, and the lines they print as `(child, line)`.
struct Workers {
    workers: Vec<Worker>,
    lines: mpsc::Receiver<(usize, String)>,
    alive: Vec<bool>,
}

impl Workers {
    fn start(url: &str, run: &str) -> Self {
        let (sender, lines) = mpsc::channel();
        let workers = (0..PROCESSES)
            .map(|i| {
                let mut child = Command::new(env!("CARGO_BIN_EXE_flight_worker"))
                    .args([url, run, &CALLERS.to_string()])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn flight_worker");
                let stdout = BufReader::new(child.stdout.take().unwrap());
                let sender = sender.clone();
                std::thread::spawn(move || {
                    for line in stdout.lines() {
                        let Ok(line) = line else { break };
                        if sender.send((i, line)).is_err() {
                            break;
                        }
                    }
                });
                let stdin = child.stdin.take().unwrap();
                Worker { child, stdin }
            })
            .collect();
        let mut workers = Workers { workers, lines, alive: vec![true; PROCESSES] };
        workers.expect_from_each("ready");
        workers
    }

    fn next(&self) -> (usize, String) {
        self.lines.recv_timeout(PATIENCE).expect("a child's next line (none came: deadlock or crash)")
    }

    /// Waits until every live child printed `line`; the other lines seen meanwhile, in order.
    fn expect_from_each(&mut self, line: &str) -> Vec<(usize, String)> {
        let mut pending: Vec<usize> = (0..PROCESSES).filter(|&i| self.alive[i]).collect();
        let mut others = Vec::new();
        while !pending.is_empty() {
            let (i, got) = self.next();
            if got == line {
                assert!(pending.contains(&i), "child {i} printed {line:?} twice");
                pending.retain(|&p| p != i);
            } else {
                others.push((i, got));
            }
        }
        others
    }

    fn send(&mut self, line: &str) {
        for (i, worker) in self.workers.iter_mut().enumerate() {
            if self.alive[i] {
                writeln!(worker.stdin, "{line}").and_then(|()| worker.stdin.flush()).expect("write to a child");
            }
        }
    }

    fn kill(&mut self, i: usize) {
        self.workers[i].child.kill().expect("SIGKILL a child");
        self.workers[i].child.wait().expect("reap the killed child");
        self.alive[i] = false;
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            let _ = worker.child.kill();
            let _ = worker.child.wait();
        }
    }
}

/// A run id no earlier run used (the key is cold), and the URL with a namespace of its own.
fn fresh(url: &str, test: &str) -> (String, String) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let prefix = std::env::var("CACHESTACK_TEST_REDIS_RUN").unwrap_or_else(|_| "run".into());
    let namespace = format!("{prefix}-flight-{test}-{}-{nanos}", std::process::id());
    let separator = if url.contains('?') { '&' } else { '?' };
    (format!("{url}{separator}namespace={namespace}"), format!("r{nanos}"))
}

/// How many times the body ran, as the store counted it.
async fn executions(url: &str, run: &str) -> i64 {
    let cache = Cache::from_url(url).unwrap();
    cache.get::<i64>(&format!("count:{run}")).await.unwrap().unwrap_or(0)
}

/// Four processes, fifty callers each, one cold key: one execution; every caller gets the value.
async fn one_execution(url: &str, test: &str) {
    let (url, run) = fresh(url, test);
    let mut workers = Workers::start(&url, &run);
    workers.send("call");
    let seen = workers.expect_from_each("all-in");
    let mut started: Vec<usize> = seen.iter().filter(|(_, l)| l == "started").map(|(i, _)| *i).collect();
    if started.is_empty() {
        // Every caller is in: the body has started, or is about to print so.
        let (i, line) = workers.next();
        assert_eq!(line, "started", "child {i}");
        started.push(i);
    }
    assert_eq!(started.len(), 1, "one body execution among {PROCESSES} processes: {seen:?}");
    workers.send("finish");
    let done = workers.expect_from_each(&format!("done {CALLERS}"));
    assert!(done.iter().all(|(_, l)| l != "started"), "a second execution: {done:?}");
    assert_eq!(executions(&url, &run).await, 1, "the store counted one execution");
}

/// The process running the body is killed: exactly one other process takes over.
async fn one_takeover(url: &str, test: &str) {
    let (url, run) = fresh(url, test);
    let mut workers = Workers::start(&url, &run);
    workers.send("call");
    let seen = workers.expect_from_each("all-in");
    let leader = match seen.iter().find(|(_, l)| l == "started") {
        Some((i, _)) => *i,
        None => {
            let (i, line) = workers.next();
            assert_eq!(line, "started", "child {i}");
            i
        }
    };
    workers.kill(leader);
    // The lock ends with the lease (or the connection): one survivor's body starts.
    let (taker, line) = workers.next();
    assert_eq!(line, "started", "child {taker}");
    assert_ne!(taker, leader);
    workers.send("finish");
    let done = workers.expect_from_each(&format!("done {CALLERS}"));
    assert!(done.iter().all(|(_, l)| l != "started"), "a second takeover: {done:?}");
    assert_eq!(executions(&url, &run).await, 2, "the killed execution and one takeover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_one_execution_across_four_processes() {
    let url = require_server!("CACHESTACK_TEST_REDIS_URL", "Redis");
    one_execution(&url, "once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_killed_leader_is_taken_over_once() {
    let url = require_server!("CACHESTACK_TEST_REDIS_URL", "Redis");
    one_takeover(&url, "kill").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_execution_across_four_processes() {
    let url = require_server!("CACHESTACK_TEST_POSTGRES_URL", "PostgreSQL");
    one_execution(&url, "once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_killed_leader_is_taken_over_once() {
    let url = require_server!("CACHESTACK_TEST_POSTGRES_URL", "PostgreSQL");
    one_takeover(&url, "kill").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_one_execution_across_four_processes() {
    let url = require_server!("CACHESTACK_TEST_MEMCACHED_URL", "Memcached");
    one_execution(&url, "once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_a_killed_leader_is_taken_over_once() {
    let url = require_server!("CACHESTACK_TEST_MEMCACHED_URL", "Memcached");
    one_takeover(&url, "kill").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_a_lock_is_a_configuration_error() {
    let cache = Cache::new(MemoryBackend::with_capacity(10));
    let options = ComputeOptions::builder().lock(LockMode::Distributed).build().unwrap();
    let err = cache
        .get_or_compute("k", &options, || async { Ok::<u8, cachestack::Error>(1) })
        .await
        .expect_err("no lock: never computed without it");
    assert!(matches!(err, cachestack::Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("lock = \"distributed\" needs a store whose lock every process shares"), "{err}");
    let (blocking, blocking_options) = (cache.clone(), options.clone());
    let err = tokio::task::spawn_blocking(move || {
        blocking.get_or_compute_blocking("k", &blocking_options, || Ok::<u8, cachestack::Error>(1)).unwrap_err()
    })
    .await
    .unwrap();
    assert!(matches!(err, cachestack::Error::Config { .. }), "{err}");
    // A hit needs no lock.
    let plain = ComputeOptions::default();
    cache.get_or_compute("h", &plain, || async { Ok::<u8, cachestack::Error>(2) }).await.unwrap();
    let (value, status) =
        cache.get_or_compute("h", &options, || async { Ok::<u8, cachestack::Error>(3) }).await.unwrap();
    assert_eq!((value, status), (2, CallStatus::Hit));
}

/// Two caches over one store have flights of their own, as two processes do: through the Cache
/// API (async leader, blocking waiter), the waiter gets the leader's value without computing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_get_or_compute_waits_for_another_flight_across_the_store() {
    let url = require_server!("CACHESTACK_TEST_REDIS_URL", "Redis");
    let (url, run) = fresh(&url, "api");
    let (leader_cache, waiter_cache) = (Cache::from_url(&url).unwrap(), Cache::from_url(&url).unwrap());
    let options = ComputeOptions::builder()
        .ttl(Duration::from_secs(600))
        .lock(LockMode::Distributed)
        .lock_lease(Duration::from_secs(3))
        .build()
        .unwrap();
    let (started, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let (finish, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let key = format!("api:{run}");
    let leading = {
        let (cache, options, key) = (leader_cache.clone(), options.clone(), key.clone());
        tokio::spawn(async move {
            cache
                .get_or_compute(&key, &options, move || async move {
                    started.send(()).unwrap();
                    finish_rx.await.unwrap();
                    Ok::<_, cachestack::Error>("from the leader".to_string())
                })
                .await
        })
    };
    started_rx.recv().await.expect("the leader computes");
    let waiting = {
        let (cache, options, key) = (waiter_cache.clone(), options.clone(), key.clone());
        tokio::task::spawn_blocking(move || {
            cache.get_or_compute_blocking(&key, &options, || -> Result<String, cachestack::Error> {
                panic!("the other flight holds the lock: this one must not compute")
            })
        })
    };
    // The waiter is in (polling the store) before the leader finishes.
    while waiter_cache.compute_stats().waiting == 0 {
        tokio::task::yield_now().await;
    }
    finish.send(()).unwrap();
    let (value, status) = leading.await.unwrap().unwrap();
    assert_eq!((value.as_str(), status), ("from the leader", CallStatus::Miss));
    let (value, status) = waiting.await.unwrap().unwrap();
    assert_eq!((value.as_str(), status), ("from the leader", CallStatus::Waited));
    assert_eq!(waiter_cache.compute_stats().misses, 0);
}
