//! The object store backend against a real S3-compatible server (moto, started by
//! `tests/servers.sh`: `CACHESTACK_TEST_S3_URL`) and over object_store's in-memory store: the
//! conformance suite on both, then what is special to object stores: large values, object names
//! that never hold the key, a tier under memory, credentials never shown, stores that cannot write
//! conditionally, and a server killed and restarted under load (our own server on its own port).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cachestack::object_store::memory::InMemory;
use cachestack::object_store::path::Path;
use cachestack::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use cachestack::{Backend, Cache, Error, Expiry, ObjectStoreBackend, ObjectStoreConfig, S3Options, Value};
use cachestack_tests::conformance::{unique_namespace, Harness};
use cachestack_tests::own_server::{free_port, OwnServer};
use futures_util::StreamExt;

const URL_VAR: &str = "CACHESTACK_TEST_S3_URL";
/// The test credentials `tests/servers.sh` puts in the URL (moto accepts any).
const KEY_ID: &str = "cachestack-test-key";
const SECRET: &str = "cachestack-test-secret";

/// The settings of the test server, or `None` (the test is skipped) when it is missing.
fn test_config() -> Option<ObjectStoreConfig> {
    let url = cachestack_tests::server_url(URL_VAR, "an S3 server (moto)")?;
    Some(ObjectStoreConfig::from_url(&url).unwrap())
}

fn open(config: &ObjectStoreConfig, namespace: &str) -> ObjectStoreBackend {
    ObjectStoreBackend::new(config.clone().with_namespace(namespace)).unwrap()
}

/// Writes `bytes` as the object of `key`, below the backend.
fn plant(backend: &ObjectStoreBackend, key: &str, bytes: &[u8]) {
    let (store, path, bytes) = (backend.object_store().clone(), Path::from(backend.object_name(key)), bytes.to_vec());
    cachestack::rt::block_on(async move { store.put(&path, PutPayload::from(bytes)).await }).unwrap().unwrap();
}

fn common(h: &mut Harness) {
    h.max_value_bytes = 8 * 1024 * 1024;
    // Every increment is a conditional write round (two requests, more under contention): 16
    // tasks racing still, with fewer rounds each.
    h.race_rounds = 3;
}

fn s3_harness() -> Option<Harness> {
    let mut config = test_config()?;
    // moto answers in tens of milliseconds and takes one write at a time: the races of the suite
    // queue on it, far beyond what an operation would wait on S3.
    config.timeouts.operation = Duration::from_secs(60);
    let plant_config = config.clone();
    let mut h = Harness::new(move |namespace| Arc::new(open(&config, namespace)));
    common(&mut h);
    // Requests to the test server take tens of milliseconds (more when tests run side by side):
    // TTLs of seconds keep the checks clear.
    h.ttl_unit = Duration::from_secs(1);
    h.raw_writer = Some(Arc::new(move |namespace: &str, key: &str, bytes: &[u8]| {
        plant(&open(&plant_config, namespace), key, bytes);
    }));
    h.unreachable_silent = Some(Arc::new(|namespace: &str| {
        let url = format!(
            "s3://unreachable/p?endpoint=http://127.0.0.1:1&allow_http=true&region=us-east-1&access_key_id=k&secret_access_key=s&namespace={namespace}&silent=true&timeout=2s&connect_timeout=500ms&retries=0"
        );
        cachestack::backend_from_url(&url).unwrap()
    }));
    Some(h)
}

fn memory_harness() -> Harness {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let config = ObjectStoreConfig::new(S3Options::default()).with_prefix("cache");
    let (plant_store, plant_config) = (store.clone(), config.clone());
    let mut h = Harness::new(move |namespace| {
        Arc::new(ObjectStoreBackend::with_store(store.clone(), config.clone().with_namespace(namespace)).unwrap())
    });
    common(&mut h);
    h.raw_writer = Some(Arc::new(move |namespace: &str, key: &str, bytes: &[u8]| {
        let backend =
            ObjectStoreBackend::with_store(plant_store.clone(), plant_config.clone().with_namespace(namespace))
                .unwrap();
        plant(&backend, key, bytes);
    }));
    h
}

cachestack_tests::conformance_suite!(s3, s3_harness);
cachestack_tests::conformance_suite!(in_memory, || Some(memory_harness()));

/// Every object name of the namespace, listed below the backend.
async fn object_names(backend: &ObjectStoreBackend) -> Vec<String> {
    let prefix = Path::from(backend.object_name("k").rsplit_once('/').unwrap().0);
    let names: Vec<_> = backend.object_store().list(Some(&prefix)).collect().await;
    names.into_iter().map(|meta| meta.unwrap().location.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_names_are_bounded_hashes_that_never_hold_the_key() {
    let Some(config) = test_config() else { return };
    let backend = open(&config, &unique_namespace("names"));
    let keys = ["../../etc/passwd", "a/b/c", "crlf\r\nx", "名前 🦀", &"k".repeat(4096), "%2F", "."];
    for (i, key) in keys.iter().enumerate() {
        backend.set(key, Value::new(i), Expiry::Default).await.unwrap();
    }
    let names = object_names(&backend).await;
    assert_eq!(names.len(), keys.len(), "{names:?}");
    let root = backend.object_name("k").rsplit_once('/').unwrap().0.to_owned();
    for name in &names {
        let hash = name.strip_prefix(&format!("{root}/")).unwrap();
        assert!(hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(backend.get(key).await.unwrap().unwrap().value.get::<usize>().unwrap(), i, "{key:?}");
    }
    // An entry copied under another key's name is that other key's miss, not its value.
    let stolen = backend.object_store().get(&Path::from(backend.object_name(keys[0]))).await.unwrap();
    plant(&backend, "victim", &stolen.bytes().await.unwrap());
    let errors = backend.stats().errors;
    assert!(backend.get("victim").await.unwrap().is_none(), "an entry was served for another key");
    assert_eq!(backend.stats().errors, errors + 1, "the misplaced entry is counted");
    // keys_matching lists the keys, never the misplaced copy.
    let cache = Cache::new(backend.clone());
    let mut listed = cache.keys_matching("*").await.unwrap();
    listed.sort();
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_round_trip_and_the_limit_is_enforced_on_both_sides() {
    let Some(config) = test_config() else { return };
    let config = config.with_namespace(unique_namespace("large"));
    let cache = Cache::new(ObjectStoreBackend::new(config.clone()).unwrap());
    let big: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i * 7 % 253) as u8).collect();
    cache.set("big", &big, None).await.unwrap();
    assert_eq!(cache.get::<Vec<u8>>("big").await.unwrap().as_deref(), Some(big.as_slice()));
    // A store with a smaller limit refuses to write such a value, and does not download one.
    let mut small = config.clone();
    small.settings.format.max_value_bytes = 1024 * 1024;
    let small = ObjectStoreBackend::new(small).unwrap();
    let err = small.set("other", Value::new(big.clone()), Expiry::Default).await.unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { .. }), "{err}");
    let errors = small.stats().errors;
    assert!(small.get("big").await.unwrap().is_none(), "an over-limit object is a miss");
    assert_eq!(small.stats().errors, errors + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_as_a_lower_tier_under_memory() {
    let Some(_) = test_config() else { return };
    let url = cachestack_tests::server_url(URL_VAR, "an S3 server (moto)").unwrap();
    let namespace = unique_namespace("tier");
    let stacked = Cache::from_url(&format!("mem://?max_entries=100 | {url}&namespace={namespace}")).unwrap();
    stacked.set("report", &vec![1u8; 100_000], Some(Duration::from_secs(600))).await.unwrap();
    // A second process: a fresh memory tier over the same objects, backfilled on its first read.
    let other = Cache::from_url(&format!("mem://?max_entries=100 | {url}&namespace={namespace}")).unwrap();
    assert_eq!(other.get::<Vec<u8>>("report").await.unwrap().map(|v| v.len()), Some(100_000));
    let stats = other.stats();
    assert_eq!(stats.layers[1].hits, 1, "{stats:?}");
    assert_eq!(other.get::<Vec<u8>>("report").await.unwrap().map(|v| v.len()), Some(100_000));
    assert_eq!(other.stats().layers[0].hits, 1, "the second read is answered from memory");
    let ttl = other.ttl("report").await.unwrap().flatten().unwrap();
    assert!(ttl <= Duration::from_secs(600) && ttl > Duration::from_secs(500), "{ttl:?}");
    assert!(stacked.delete("report").await.unwrap());
    let direct = cachestack::backend_from_url(&format!("{url}&namespace={namespace}")).unwrap();
    assert!(direct.get("report").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_never_shown() {
    let Some(config) = test_config() else { return };
    assert_eq!(config.s3.secret_access_key.as_deref(), Some(SECRET), "the test URL carries credentials");
    let backend = open(&config, &unique_namespace("creds"));
    backend.set("k", Value::new(1u8), Expiry::Default).await.unwrap();
    let mut shown = vec![format!("{config:?}"), format!("{backend:?}"), format!("{:?}", backend.stats())];
    let url = cachestack_tests::server_url(URL_VAR, "an S3 server (moto)").unwrap();
    shown.push(cachestack::redact_url(&url));
    shown.push(format!("{:?}", cachestack::backend_from_url(&url).unwrap()));
    // Errors: a bad option, an unreachable server.
    shown.push(cachestack::backend_from_url(&format!("{url}&colour=blue")).unwrap_err().to_string());
    let unreachable = ObjectStoreBackend::new(
        ObjectStoreConfig {
            s3: S3Options { endpoint: Some("http://127.0.0.1:1".into()), ..config.s3.clone() },
            retries: 0,
            ..config.clone()
        }
        .with_timeout(Duration::from_secs(2)),
    )
    .unwrap();
    let err = unreachable.get("k").await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    shown.push(format!("{err} / {err:?}"));
    for text in &shown {
        assert!(!text.contains(SECRET) && !text.contains(KEY_ID), "credentials shown in: {text}");
    }
}

/// An object store that cannot write conditionally (like S3 with conditional writes disabled).
#[derive(Debug)]
struct NoConditions(InMemory);

impl std::fmt::Display for NoConditions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NoConditions")
    }
}

#[async_trait::async_trait]
impl ObjectStore for NoConditions {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: cachestack::object_store::PutOptions,
    ) -> cachestack::object_store::Result<cachestack::object_store::PutResult> {
        if opts.mode != cachestack::object_store::PutMode::Overwrite {
            return Err(cachestack::object_store::Error::NotImplemented {
                operation: "conditional put".into(),
                implementer: "NoConditions".into(),
            });
        }
        self.0.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: cachestack::object_store::PutMultipartOptions,
    ) -> cachestack::object_store::Result<Box<dyn cachestack::object_store::MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: cachestack::object_store::GetOptions,
    ) -> cachestack::object_store::Result<cachestack::object_store::GetResult> {
        self.0.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures_util::stream::BoxStream<'static, cachestack::object_store::Result<Path>>,
    ) -> futures_util::stream::BoxStream<'static, cachestack::object_store::Result<Path>> {
        self.0.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures_util::stream::BoxStream<'static, cachestack::object_store::Result<cachestack::object_store::ObjectMeta>>
    {
        self.0.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> cachestack::object_store::Result<cachestack::object_store::ListResult> {
        self.0.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: cachestack::object_store::CopyOptions,
    ) -> cachestack::object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_write_conditionally_says_so_and_changes_nothing() {
    let config = ObjectStoreConfig::new(S3Options::default()).with_namespace("plain");
    let cache = Cache::new(ObjectStoreBackend::with_store(Arc::new(NoConditions(InMemory::new())), config).unwrap());
    cache.set("n", &5i64, None).await.unwrap();
    assert_eq!(cache.get::<i64>("n").await.unwrap(), Some(5), "plain writes work");
    let err = cache.incr("n", 1).await.unwrap_err();
    assert!(err.is_unsupported(), "{err}");
    let err = cache.set_if_absent("fresh", &1u8, None).await.unwrap_err();
    assert!(err.is_unsupported(), "{err}");
    let err = cache.backend().expire("n", Expiry::Never).await.unwrap_err();
    assert!(err.is_unsupported(), "{err}");
    assert_eq!(cache.get::<i64>("n").await.unwrap(), Some(5), "the failed incr changed nothing");
    assert_eq!(cache.get::<u8>("fresh").await.unwrap(), None);
}

/// An S3 server of this test's own (tests/s3_server.py).
fn own_s3(port: u16) -> OwnServer {
    let mut command = Command::new("python3");
    command.args([concat!(env!("CARGO_MANIFEST_DIR"), "/s3_server.py"), &port.to_string(), "own-bucket"]);
    // moto takes a moment to import.
    OwnServer::spawn(command, port, 3000, "the S3 test server (python3 with moto)")
}

const RUNNING: usize = 0;
const KILLED: usize = 1;
const RESTARTED: usize = 2;
const DONE: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Hit,
    Miss,
    Failed,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_gives_clear_errors_and_is_used_again_after_a_restart() {
    // Needs the moto that tests/servers.sh installs; the server is our own.
    let Some(base) = test_config() else { return };
    let mut server = own_s3(free_port());
    let timeout = Duration::from_secs(2);
    let config = ObjectStoreConfig {
        s3: S3Options {
            bucket: "own-bucket".into(),
            endpoint: Some(format!("http://127.0.0.1:{}", server.port)),
            ..base.s3.clone()
        },
        retries: 0,
        ..base.clone()
    }
    .with_namespace(unique_namespace("kill"))
    .with_timeout(timeout)
    .with_connect_timeout(timeout);
    let backend = Arc::new(ObjectStoreBackend::new(config.clone()).unwrap());
    let silent = ObjectStoreBackend::new(config.clone().with_silent(true)).unwrap();
    let keys: Arc<Vec<String>> = Arc::new((0..50).map(|i| format!("key:{i}")).collect());
    for (i, key) in keys.iter().enumerate() {
        backend.set(key, Value::new(i), Expiry::Default).await.unwrap();
    }

    // Load: tasks read keys (writing back misses, as memoization would) and report every outcome
    // with the phase it started in. Each call is wrapped in a generous hang detector.
    let phase = Arc::new(AtomicUsize::new(RUNNING));
    let (events, mut outcomes) = tokio::sync::mpsc::unbounded_channel::<(usize, Outcome)>();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (backend, phase, events, keys) = (backend.clone(), phase.clone(), events.clone(), keys.clone());
            tokio::spawn(async move {
                let mut i = t * 7;
                loop {
                    let started = phase.load(Ordering::SeqCst);
                    if started == DONE {
                        break;
                    }
                    i = (i + 3) % keys.len();
                    let read = tokio::time::timeout(timeout * 10, backend.get(&keys[i])).await;
                    let outcome = match read.expect("a get hung past its timeout") {
                        Ok(Some(entry)) => {
                            assert_eq!(entry.value.get::<usize>().unwrap(), i);
                            Outcome::Hit
                        }
                        Ok(None) => {
                            let write = backend.set(&keys[i], Value::new(i), Expiry::Default);
                            let _ = tokio::time::timeout(timeout * 10, write).await.expect("a set hung");
                            Outcome::Miss
                        }
                        Err(err) => {
                            assert!(err.is_unavailable(), "not a clear error: {err}");
                            let text = err.to_string();
                            assert!(text.contains("unavailable") || text.contains("timed out"), "{text}");
                            Outcome::Failed
                        }
                    };
                    if events.send((started, outcome)).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    drop(events);

    let (mut seen, mut failures) = (0usize, 0usize);
    while let Some((started, outcome)) = outcomes.recv().await {
        seen += 1;
        assert!(seen < 200_000, "the restarted server was never used again");
        match (phase.load(Ordering::SeqCst), started) {
            (RUNNING, _) => {
                assert_eq!(outcome, Outcome::Hit, "before the kill");
                if seen >= 100 {
                    server.kill();
                    phase.store(KILLED, Ordering::SeqCst);
                }
            }
            (KILLED, KILLED) => {
                assert_eq!(outcome, Outcome::Failed, "after the kill");
                failures += 1;
                if failures == 1 {
                    // A silent backend turns the same failures into misses.
                    assert!(silent.get(&keys[0]).await.unwrap().is_none());
                    assert!(silent.stats().errors >= 1);
                }
                if failures >= 50 {
                    server = own_s3(server.port);
                    phase.store(RESTARTED, Ordering::SeqCst);
                }
            }
            // The server is back, empty: keys miss, are written again, then hit.
            (RESTARTED, RESTARTED) if outcome == Outcome::Hit => {
                phase.store(DONE, Ordering::SeqCst);
                break;
            }
            _ => {}
        }
    }
    phase.store(DONE, Ordering::SeqCst);
    drop(outcomes);
    for task in tasks {
        task.await.unwrap();
    }
    assert!(failures >= 50, "the load ended early");
    eprintln!("kill test: {seen} operations, {failures} clear failures while the server was down");
    // Everything works again, the atomic operations included.
    assert_eq!(Cache::from_arc(backend.clone()).incr("after", 2).await.unwrap(), 2);
    server.kill();
}
