//! Two processes, each with memory as L1 over a shared Redis, kept honest by the backplane: the
//! parent changes a value, and the child (this same program, started by the parent) stops
//! serving the old value from its L1 as soon as the message arrives. Needs a Redis server; the
//! URL comes from `CACHESTACK_TEST_REDIS_URL` (set by `tests/run-all.sh`), else
//! `redis://127.0.0.1:6379/9`.
//!
//! ```text
//! cargo run -p cachestack-examples --features redis --example backplane
//! ```

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cachestack::{Cache, CacheRegistry, Error};

/// Registers the cache `users` (memory over Redis) on the backplane, as every process does.
fn setup(redis: &str, run: &str) -> Result<Cache, Error> {
    let registry = CacheRegistry::global();
    registry.set_backplane_url(&format!("{redis}?channel=cachestack-example-{run}"))?;
    registry.register_url("users", &format!("mem://?max_entries=1000 | {redis}?namespace=cachestack-example-{run}"))
}

/// Waits until the backplane's subscription is up (a message sent before would not reach us).
async fn subscribed() -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !CacheRegistry::global().backplane().is_some_and(|b| b.stats().subscribed) {
        if Instant::now() > deadline {
            return Err(Error::config("the backplane did not subscribe within 10 s: is Redis running?"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The child: on `read <n>` reads `user:1` once it received `n` messages; on `watch` reads until
/// the value changes.
async fn child(redis: &str, run: &str) -> Result<(), Error> {
    let cache = setup(redis, run)?;
    subscribed().await?;
    println!("ready");
    let mut last = None;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| Error::config(e.to_string()))?;
        match line.trim().split_once(' ').unwrap_or((line.trim(), "0")) {
            ("read", after) => {
                // First the messages of the parent's earlier changes (a late one would evict what
                // this read puts in L1).
                let after: u64 = after.parse().unwrap_or(0);
                let backplane = CacheRegistry::global().backplane();
                while backplane.as_ref().is_some_and(|b| b.stats().received < after) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                last = cache.get::<String>("user:1").await?;
                println!("{}", last.as_deref().unwrap_or("(none)"));
            }
            ("watch", _) => {
                let started = Instant::now();
                let mut reads = 0u32;
                let now = loop {
                    reads += 1;
                    let now = cache.get::<String>("user:1").await?;
                    if now != last || started.elapsed() > Duration::from_secs(10) {
                        break now;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                };
                let received = CacheRegistry::global().backplane().map_or(0, |b| b.stats().received);
                println!(
                    "{} after {reads} reads of its L1 ({:.1?}; messages received: {received})",
                    now.as_deref().unwrap_or("(none)"),
                    started.elapsed()
                );
            }
            _ => break,
        }
        std::io::stdout().flush().map_err(|e| Error::config(e.to_string()))?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let redis = std::env::var("CACHESTACK_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/9".into());
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, run] = args.as_slice() {
        if role == "child" {
            return child(&redis, run).await;
        }
    }
    let run = std::process::id().to_string();
    let cache = setup(&redis, &run)?;
    subscribed().await?;

    let exe = std::env::current_exe().map_err(|e| Error::config(e.to_string()))?;
    let mut process = Command::new(exe)
        .args(["child", &run])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::config(format!("cannot start the child process: {e}")))?;
    let (Some(mut to_child), Some(from_child)) = (process.stdin.take(), process.stdout.take()) else {
        return Err(Error::config("no pipes to the child"));
    };
    let mut from_child = BufReader::new(from_child).lines();
    let mut ask = |line: &str| -> Result<String, Error> {
        if !line.is_empty() {
            writeln!(to_child, "{line}").map_err(|e| Error::config(e.to_string()))?;
        }
        match from_child.next() {
            Some(Ok(answer)) => Ok(answer),
            _ => Err(Error::config("the child process stopped")),
        }
    };
    assert_eq!(ask("")?, "ready");

    cache.set("user:1", &"Ada".to_string(), None).await?;
    println!("parent: set user:1 = Ada");
    println!("child:  reads user:1 = {} (now in its memory L1)", ask("read 1")?);

    cache.set("user:1", &"Ada Lovelace".to_string(), None).await?;
    println!("parent: set user:1 = Ada Lovelace (Redis written, one message published)");
    let seen = ask("watch")?;
    println!("child:  reads user:1 = {seen}");
    drop(ask("quit"));
    let _ = process.wait();
    assert!(seen.starts_with("Ada Lovelace"), "the child still serves the old value: {seen}");
    if let Some(backplane) = CacheRegistry::global().backplane() {
        println!("parent: backplane {:?}", backplane.stats());
    }
    cache.clear().await?;
    Ok(())
}
