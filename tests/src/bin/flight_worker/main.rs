//! Child process for the distributed single-flight tests (`tests/distributed_lock.rs`): a
//! `#[cached(lock = "distributed")]` function called by many tasks at once, over the cache URL
//! it is given, controlled over stdin and stdout lines.
//!
//! Usage: `flight_worker <cache url> <run id> <callers>`. The cache is registered as `flight`.
//!
//! - It prints `ready` once the cache is registered.
//! - `call` (stdin): `<callers>` tasks call `flight(<run id>)` at once. The body counts its
//!   execution in the store (`incr` of `count:<run id>`), prints `started`, and waits for
//!   `finish`. Once every task of this process is either running the body or waiting for a value
//!   (the cache's compute stats say so), it prints `all-in`; when every task has returned, it
//!   prints `done <tasks that got the value>`.
//! - `finish` (stdin): bodies waiting for it return their value.
//!
//! As a safety net it exits by itself after two minutes, or when stdin closes.

use std::io::{BufRead, Write};
use std::sync::LazyLock;
use std::time::Duration;

use cachestack::{cached, CacheRegistry};
use tokio::sync::watch;

/// Set when `finish` arrives.
static FINISH: LazyLock<watch::Sender<bool>> = LazyLock::new(|| watch::channel(false).0);

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(1);
    }
}

fn fail(message: String) -> ! {
    eprintln!("flight_worker: {message}");
    std::process::exit(1);
}

/// The value every caller of `run` must get.
fn expected(run: &str) -> String {
    format!("computed once for {run}")
}

#[cached(cache = "flight", key = "flight:<run>", ttl = "10m", lock = "distributed", lock_lease = "3s")]
async fn flight(run: String) -> Result<String, cachestack::Error> {
    let cache = CacheRegistry::global().get("flight")?;
    cache.incr(&format!("count:{run}"), 1).await?;
    say("started");
    let mut finish = FINISH.subscribe();
    if finish.wait_for(|finish| *finish).await.is_err() {
        fail("the finish signal went away".into());
    }
    Ok(expected(&run))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(run), Some(callers)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: flight_worker <cache url> <run id> <callers>");
        std::process::exit(2);
    };
    let Ok(callers) = callers.parse::<usize>() else { fail("callers must be a number".into()) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("cannot start a runtime: {e}")));
    let cache = CacheRegistry::global()
        .register_url("flight", &url)
        .unwrap_or_else(|e| fail(format!("cannot open the cache: {e}")));
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(120));
        fail("still running after two minutes".into());
    });
    say("ready");
    let (commands, mut received) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if commands.send(line.trim().to_owned()).is_err() {
                break;
            }
        }
        std::process::exit(0);
    });
    runtime.block_on(async move {
        while let Some(command) = received.recv().await {
            match command.as_str() {
                "call" => {
                    let tasks: Vec<_> = (0..callers).map(|_| tokio::spawn(flight(run.clone()))).collect();
                    let cache = cache.clone();
                    tokio::spawn(async move {
                        // Every caller is in: running the body, or waiting for its value.
                        loop {
                            let stats = cache.compute_stats();
                            if stats.running + stats.waiting >= callers {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        say("all-in");
                    });
                    let run = run.clone();
                    tokio::spawn(async move {
                        let mut got = 0;
                        for task in tasks {
                            match task.await {
                                Ok(Ok(value)) if value == expected(&run) => got += 1,
                                Ok(Ok(value)) => fail(format!("a caller got {value:?}")),
                                Ok(Err(err)) => fail(format!("a caller failed: {err}")),
                                Err(err) => fail(format!("a caller panicked: {err}")),
                            }
                        }
                        say(&format!("done {got}"));
                    });
                }
                "finish" => {
                    FINISH.send_replace(true);
                }
                other => fail(format!("unknown command {other:?}")),
            }
        }
    });
}
