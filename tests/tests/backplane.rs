//! The backplane across real processes: three `backplane_node` children (memory L1 over a shared
//! server, on one backplane) where one changes a key and the other two stop serving the old value,
//! over Redis pub/sub and over PostgreSQL LISTEN/NOTIFY; and the same across a restart of the
//! backplane's server (a Redis or a PostgreSQL cluster of the test's own), which shows the
//! recovery.
//!
//! Every step waits for the children's answers; "stop serving the old value" is polled with a
//! deadline (never a sleep asserted as a timing).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cachestack_tests::conformance::unique_namespace;
use cachestack_tests::own_postgres::OwnPostgres;
use cachestack_tests::own_server::{free_port, OwnServer};
use cachestack_tests::require_server;

/// The longest a child takes to answer one command, and the bound for an eviction to arrive.
const BOUND: Duration = Duration::from_secs(20);

/// One child process, driven line by line.
struct Node {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Node {
    /// Node `c` reads the backplane's URL from `CACHESTACK_BACKPLANE_URL`, the others get it in
    /// code (`CacheRegistry::set_backplane_url`).
    fn spawn(name: &'static str, cache_url: &str, backplane_url: &str) -> Node {
        let mut command = Command::new(env!("CARGO_BIN_EXE_backplane_node"));
        if name == "c" {
            command.args([cache_url, "env"]).env("CACHESTACK_BACKPLANE_URL", backplane_url);
        } else {
            command.args([cache_url, backplane_url]).env_remove("CACHESTACK_BACKPLANE_URL");
        }
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn backplane_node");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Node { name, child, stdin, lines }
    }

    /// Sends one command and waits for its answer.
    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").and_then(|()| self.stdin.flush()).unwrap();
        let answer =
            self.lines.recv_timeout(BOUND).unwrap_or_else(|e| panic!("{}: no answer to {command:?}: {e}", self.name));
        assert!(!answer.starts_with("error"), "{}: {command:?} -> {answer}", self.name);
        answer
    }

    /// Asks `command` until the answer satisfies `done`, within [`BOUND`].
    fn until(&mut self, command: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + BOUND;
        loop {
            let answer = self.ask(command);
            if done(&answer) {
                return answer;
            }
            assert!(Instant::now() < deadline, "{}: {what}: still {answer:?} after {BOUND:?}", self.name);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn subscribed(&mut self) {
        self.until("subscribed", "subscribed to the backplane", |a| a == "yes");
    }

    fn stat(&mut self, name: &str) -> u64 {
        stat(&self.ask("stats"), name)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One counter of a `stats` answer.
fn stat(answer: &str, name: &str) -> u64 {
    answer
        .split(' ')
        .find_map(|part| part.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {answer:?}"))
}

/// Waits until every message sent so far was received by every other node (so that a late
/// eviction of an earlier change cannot land after the next step reads).
fn settle(nodes: &mut [Node]) {
    let deadline = Instant::now() + BOUND;
    loop {
        let stats: Vec<String> = nodes.iter_mut().map(|n| n.ask("stats")).collect();
        let sent: u64 = stats.iter().map(|s| stat(s, "sent")).sum();
        let done = stats.iter().all(|s| stat(s, "queued") == 0 && stat(s, "received") >= sent - stat(s, "sent"));
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "messages still in flight after {BOUND:?}: {stats:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Three nodes on one backplane, subscribed.
fn three(cache_url: &str, backplane_url: &str) -> [Node; 3] {
    let mut nodes = ["a", "b", "c"].map(|name| Node::spawn(name, cache_url, backplane_url));
    for node in &mut nodes {
        node.subscribed();
    }
    nodes
}

/// A writes, B and C read (their L1 now holds the value); then every kind of change made by A
/// stops B and C serving the old value.
fn invalidations_cross(nodes: &mut [Node; 3]) {
    nodes[0].ask("set k v1");
    settle(nodes);
    let [a, b, c] = nodes;
    for node in [&mut *b, &mut *c] {
        assert_eq!(node.ask("get k"), "value v1");
    }
    // The shared tier changes behind everyone's back: the L1s keep serving what they hold.
    a.ask("set_below k quiet");
    assert_eq!(b.ask("get k"), "value v1", "B's L1 serves the key");

    // A set through the stack is announced: B and C read the new value.
    a.ask("set k v2");
    for node in [&mut *b, &mut *c] {
        node.until("get k", "a set crosses", |v| v == "value v2");
    }
    // A delete.
    a.ask("delete k");
    for node in [&mut *b, &mut *c] {
        node.until("get k", "a delete crosses", |v| v == "none");
    }
    // A `#[cached]` function's entry: B computes it, C reads B's value from the shared tier; A's
    // `profile_invalidate` makes both compute (or read) a new one.
    let first = b.ask("call 1");
    assert_eq!(c.ask("call 1"), first);
    a.ask("invalidate 1");
    for node in [&mut *b, &mut *c] {
        node.until("call 1", "an #[invalidate] crosses", |v| v != first);
    }
    // A pattern delete and a clear.
    a.ask("set user:1 u1");
    a.ask("set other o1");
    for node in [&mut *b, &mut *c] {
        assert_eq!(node.ask("get user:1"), "value u1");
        assert_eq!(node.ask("get other"), "value o1");
    }
    a.ask("delete_matching user:*");
    for node in [&mut *b, &mut *c] {
        node.until("get user:1", "a pattern delete crosses", |v| v == "none");
    }
    a.ask("clear");
    for node in [&mut *b, &mut *c] {
        node.until("get other", "a clear crosses", |v| v == "none");
    }
    // A never reacted to its own messages; the others received them.
    assert!(a.stat("own") > 0, "A hears its own messages and ignores them");
    assert!(a.stat("sent") >= 6);
    assert!(b.stat("received") >= 6 && c.stat("received") >= 6);
}

#[test]
fn three_processes_over_redis_pubsub() {
    let url = require_server!("CACHESTACK_TEST_REDIS_URL", "Redis");
    let ns = unique_namespace("backplane");
    let cache = format!("mem://?max_entries=1000 | {url}?namespace={ns}");
    let backplane = format!("{url}?channel={ns}");
    let mut nodes = three(&cache, &backplane);
    invalidations_cross(&mut nodes);
}

#[test]
fn three_processes_over_postgres_listen_notify() {
    let url = require_server!("CACHESTACK_TEST_POSTGRES_URL", "PostgreSQL");
    let ns = unique_namespace("backplane");
    let cache = format!("mem://?max_entries=1000 | {url}?namespace={ns}");
    let backplane = format!("{url}?channel={ns}");
    let mut nodes = three(&cache, &backplane);
    invalidations_cross(&mut nodes);
}

/// The server a backplane runs on in the recovery test: the test's own, stopped and started
/// again on the same port (never a shared server).
trait OwnBackplaneServer {
    /// The backplane URL on this server, with `channel`.
    fn backplane_url(&self, channel: &str) -> String;
    /// Stops the server; returns once it is down.
    fn stop(&mut self);
    /// Starts it again on the same port; returns once it accepts connections.
    fn start(&mut self);
}

/// The backplane's own Redis, on a port of this test's.
struct OwnRedis {
    port: u16,
    server: Option<OwnServer>,
}

impl OwnRedis {
    fn start_on(port: u16) -> OwnServer {
        let mut command = Command::new("redis-server");
        command.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        OwnServer::spawn(command, port, 1000, "redis-server")
    }
}

impl OwnBackplaneServer for OwnRedis {
    fn backplane_url(&self, channel: &str) -> String {
        format!("redis://127.0.0.1:{}/0?channel={channel}", self.port)
    }

    fn stop(&mut self) {
        // Killed: the connections break without a goodbye.
        self.server = None;
    }

    fn start(&mut self) {
        self.server = Some(OwnRedis::start_on(self.port));
    }
}

impl OwnBackplaneServer for OwnPostgres {
    fn backplane_url(&self, channel: &str) -> String {
        format!("{}?channel={channel}", self.url())
    }

    fn stop(&mut self) {
        // Fast shutdown: the server ends every session (LISTEN included) and exits.
        self.ctl("stop").unwrap();
    }

    fn start(&mut self) {
        self.ctl("start").unwrap();
    }
}

/// Auto-recovery, whatever the transport: three nodes whose data stays on the shared tier of
/// `cache`, while the backplane's own `server` is stopped and started again. A change made
/// during the outage is kept and sent on reconnect; the nodes that lost their subscription clear
/// their L1 when they subscribe again and serve the new value; then messages flow again.
fn recovery(cache: &str, ns: &str, server: &mut dyn OwnBackplaneServer) {
    let backplane = server.backplane_url(ns);
    let mut nodes = three(cache, &backplane);
    nodes[0].ask("set k v1");
    settle(&mut nodes);
    let [a, b, c] = &mut nodes;
    for node in [&mut *b, &mut *c] {
        assert_eq!(node.ask("get k"), "value v1");
    }
    let sent_before = a.stat("sent");

    server.stop();
    for node in [&mut *a, &mut *b, &mut *c] {
        node.until("subscribed", "the subscription is lost", |v| v == "no");
    }
    // A change while the backplane is down: stored in the shared tier, its message kept.
    a.ask("set k v2");
    a.until("stats", "the message is queued", |s| stat(s, "queued") >= 1);
    assert_eq!(a.stat("sent"), sent_before, "nothing was sent while the server is down");
    assert_eq!(b.ask("get k"), "value v1", "nothing reached B yet");

    server.start();
    // The queued message is sent once the server is back...
    a.until("stats", "the queued message is sent", |s| stat(s, "queued") == 0 && stat(s, "sent") > sent_before);
    // ...and B and C, which lost their subscription, cleared their L1 when they subscribed
    // again: whichever comes first, neither serves the old value.
    for node in [&mut *b, &mut *c] {
        node.subscribed();
        node.until("get k", "the change made during the outage crosses", |v| v == "value v2");
        let stats = node.ask("stats");
        assert!(stat(&stats, "reconnects") >= 1, "{stats}");
        assert!(stat(&stats, "recovery_clears") >= 1, "{stats}");
    }
    // After the recovery, messages flow again. A key no message named yet: B and C keep a value
    // written below the stack in their L1, so only the message of A's set can make them read
    // the new one.
    a.subscribed();
    a.ask("set_below after quiet");
    for node in [&mut *b, &mut *c] {
        assert_eq!(node.ask("get after"), "value quiet");
    }
    a.ask("set after v3");
    for node in [&mut *b, &mut *c] {
        node.until("get after", "a set after the recovery crosses", |v| v == "value v3");
    }
}

#[test]
fn recovery_after_the_backplane_server_restarts() {
    let url = require_server!("CACHESTACK_TEST_REDIS_URL", "Redis");
    let ns = unique_namespace("backplane");
    let port = free_port();
    let mut server = OwnRedis { port, server: Some(OwnRedis::start_on(port)) };
    // The data stays on the shared server; only the backplane's server goes away.
    recovery(&format!("mem://?max_entries=1000 | {url}?namespace={ns}"), &ns, &mut server);
}

#[test]
fn recovery_after_the_backplane_postgres_restarts() {
    let url = require_server!("CACHESTACK_TEST_POSTGRES_URL", "PostgreSQL");
    let Some(mut server) = OwnPostgres::start("backplane") else { return };
    let ns = unique_namespace("backplane");
    // The data stays on the shared PostgreSQL; only the backplane's own cluster restarts.
    recovery(&format!("mem://?max_entries=1000 | {url}?namespace={ns}"), &ns, &mut server);
}

/// A tag invalidated in one process reaches the tag times another process keeps, through the
/// backplane: with a tag freshness of an hour, only the backplane's message can make the second
/// cache see the invalidation. Two backplanes in this process (one origin each) stand for the
/// two processes; each cache is a `mem | redis` stack of the same name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_invalidation_crosses_the_backplane() {
    use cachestack::{Backplane, Cache, TieredCache};
    let url = require_server!("CACHESTACK_TEST_REDIS_URL", "Redis");
    let ns = unique_namespace("backplane-tags");
    let node = || {
        let backplane = Backplane::from_url(&format!("{url}?channel={ns}")).unwrap();
        let stack = cachestack::backend_from_url(&format!("mem://?max_entries=100 | {url}?namespace={ns}")).unwrap();
        let tiered: &TieredCache = stack.as_tiered().expect("a stack");
        assert!(tiered.attach_backplane(&backplane));
        (Cache::from_arc(stack).with_tag_freshness(Duration::from_secs(3600)), backplane)
    };
    let ((a, a_bus), (b, b_bus)) = (node(), node());
    let deadline = Instant::now() + BOUND;
    while !(a_bus.stats().subscribed && b_bus.stats().subscribed) {
        assert!(Instant::now() < deadline, "backplanes not subscribed");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    a.set_with_tags("profile:7", &"Ada".to_string(), None, &["user:7"]).await.unwrap();
    // B reads it (from Redis into its L1) and learns that `user:7` was never invalidated.
    assert_eq!(b.get::<String>("profile:7").await.unwrap().as_deref(), Some("Ada"));
    assert_eq!(b.get::<String>("profile:7").await.unwrap().as_deref(), Some("Ada"));

    a.invalidate_tag("user:7").await.unwrap();
    assert_eq!(a.get::<String>("profile:7").await.unwrap(), None, "the invalidating process");
    let deadline = Instant::now() + BOUND;
    while b.get::<String>("profile:7").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "B still serves a value of an invalidated tag");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(b_bus.stats().received >= 1);
}
