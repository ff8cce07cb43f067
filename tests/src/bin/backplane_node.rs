//! Child process for the backplane tests (`tests/backplane.rs`) and a stand-in for one host of a
//! service: registers the cache `bp` (a stack, memory over a shared server) on a backplane and
//! answers one line of stdout per line of stdin.
//!
//! Usage: `backplane_node <cache URL> <backplane URL>`; a backplane URL `env` leaves it to the
//! registry's `CACHESTACK_BACKPLANE_URL`. Commands:
//!
//! | command | answer |
//! |---|---|
//! | `subscribed` | `yes` or `no`: whether the backplane's subscription is up |
//! | `get <key>` | `value <text>` or `none` |
//! | `set <key> <text>` | `ok`: through the stack (announced) |
//! | `set_below <key> <text>` | `ok`: into the shared tier only (nobody is told) |
//! | `delete <key>` / `clear` / `delete_matching <pattern>` | `ok` |
//! | `call <id>` | `value <text>`: the `#[cached]` function `profile` |
//! | `invalidate <id>` | `ok`: `profile_invalidate` |
//! | `stats` | `stats sent=.. received=.. own=.. dropped=.. queued=.. reconnects=.. recovery_clears=.. subscribed=..` |
//!
//! An error answers `error <text>`. It exits when stdin closes.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use cachestack::{cached, Backend, Cache, CacheRegistry, Expiry, Value};

/// Body executions of `profile`, so that each computed value is distinct.
static RUNS: AtomicU64 = AtomicU64::new(0);

#[cached(cache = "bp", key = "profile:<id>", ttl = "10m")]
async fn profile(id: u64) -> String {
    format!("profile {id} computed by {} (run {})", std::process::id(), RUNS.fetch_add(1, Ordering::SeqCst))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cache_url, backplane_url] = args.as_slice() else {
        eprintln!("usage: backplane_node <cache URL> <backplane URL>");
        std::process::exit(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("backplane_node: cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    let registry = CacheRegistry::global();
    let setup = match backplane_url.as_str() {
        "env" => registry.register_url("bp", cache_url),
        url => registry.set_backplane_url(url).and_then(|_| registry.register_url("bp", cache_url)),
    };
    let cache = match setup {
        Ok(cache) => cache,
        Err(e) => {
            eprintln!("backplane_node: {e}");
            std::process::exit(1);
        }
    };
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let answer = runtime.block_on(run(&cache, line.trim())).unwrap_or_else(|e| format!("error {e}"));
        if writeln!(out, "{answer}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
}

async fn run(cache: &Cache, line: &str) -> cachestack::Result<String> {
    let mut words = line.splitn(3, ' ');
    let (command, first, second) = (words.next().unwrap_or(""), words.next().unwrap_or(""), words.next().unwrap_or(""));
    let backplane = || CacheRegistry::global().backplane();
    Ok(match command {
        "subscribed" => if backplane().is_some_and(|b| b.stats().subscribed) { "yes" } else { "no" }.into(),
        "get" => match cache.get::<String>(first).await? {
            Some(text) => format!("value {text}"),
            None => "none".into(),
        },
        "set" => {
            cache.set(first, &second.to_string(), None).await?;
            "ok".into()
        }
        "set_below" => {
            let stack = cache.backend().as_tiered().ok_or_else(|| cachestack::Error::config("not a stack"))?;
            let shared = stack.layer(stack.len() - 1).ok_or_else(|| cachestack::Error::config("no layer"))?;
            shared.set(first, Value::new(second.to_string()), Expiry::Default).await?;
            "ok".into()
        }
        "delete" => {
            cache.delete(first).await?;
            "ok".into()
        }
        "clear" => {
            cache.clear().await?;
            "ok".into()
        }
        "delete_matching" => {
            cache.delete_matching(first).await?;
            "ok".into()
        }
        "call" => format!("value {}", profile(first.parse().unwrap_or(0)).await),
        "invalidate" => {
            profile_invalidate(&first.parse().unwrap_or(0)).await?;
            "ok".into()
        }
        "stats" => match backplane() {
            Some(b) => {
                let s = b.stats();
                format!(
                    "stats sent={} received={} own={} dropped={} queued={} reconnects={} recovery_clears={} subscribed={}",
                    s.sent, s.received, s.own, s.dropped, s.queued, s.reconnects, s.recovery_clears, s.subscribed
                )
            }
            None => "error no backplane".into(),
        },
        other => format!("error unknown command {other:?}"),
    })
}
