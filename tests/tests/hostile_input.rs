//! Hostile bytes in every byte store: raw bytes planted under the exact key a cache reads, with
//! the store's own client (the file system, redis, sqlx, memcache-async), with and without a
//! signer. Whatever is planted, a read is a miss (never a panic, never an error for a plain
//! `get`), and with a signer never the planted value: not garbage, not a truncated or
//! length-forged envelope, not a genuine envelope of another namespace, key or (memcached)
//! generation, not an unsigned one.
//!
//! Each store describes how it frames an envelope (the file frame, the memcached record, nothing
//! for Redis and PostgreSQL); a control case checks that a correctly framed genuine envelope is
//! served, so every refusal below is the store's checks at work, not a framing mistake.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::Arc;

use cachestack::{Backend, Cache, FileBackend, FileConfig, MemcachedConfig, Signer, Value, ValueFormat};
use cachestack_tests::conformance::unique_namespace;

const SECRET: &str = "hostile-input test secret, 16+ bytes";
/// Size of the envelope header; the payload length is at 21..25, the expiry at 13..21.
const HEADER: usize = 25;

type Open = Box<dyn Fn(&str, ValueFormat) -> Arc<dyn Backend>>;
type Raw = Box<dyn Fn(&str, &str) -> Option<Vec<u8>>>;
type Plant = Box<dyn Fn(&str, &str, &[u8])>;
type Frame = Box<dyn Fn(&str, &str, &[u8]) -> Vec<u8>>;
type Unframe = Box<dyn Fn(&[u8]) -> Vec<u8>>;
type Scope = Box<dyn Fn(&str) -> String>;

/// One byte store, reached through its API and below it.
struct Store {
    name: &'static str,
    open: Open,
    /// The raw bytes stored for (namespace, key).
    read: Raw,
    /// Plants raw bytes for (namespace, key).
    plant: Plant,
    /// Frames an envelope as the store stores it for (namespace, key).
    frame: Frame,
    /// The envelope inside stored bytes.
    unframe: Unframe,
    /// The namespace an envelope of this store is signed for (memcached: with its generation).
    scope: Scope,
    /// Memcached: records carry a namespace generation, which `clear` renews.
    generations: bool,
}

fn block<F: Future + Send + 'static>(future: F) -> F::Output
where
    F::Output: Send + 'static,
{
    cachestack::rt::block_on(future).unwrap()
}

fn format(signed: bool) -> ValueFormat {
    ValueFormat { signer: signed.then(|| Signer::new(SECRET).unwrap()), ..ValueFormat::default() }
}

fn seal(signed: bool, scope: &str, key: &str, text: &str) -> Vec<u8> {
    format(signed).seal_in(scope, key, &Value::new(text.to_string()), None).unwrap()
}

fn get(backend: &Arc<dyn Backend>, key: &str) -> Option<String> {
    let cache = Cache::from_arc(Arc::clone(backend));
    let key = key.to_string();
    // Through the typed API: a miss, never an error.
    block(async move { cache.get::<String>(&key).await }).unwrap()
}

fn set(backend: &Arc<dyn Backend>, key: &str, text: &str) {
    let (backend, key, value) = (Arc::clone(backend), key.to_string(), Value::new(text.to_string()));
    block(async move { backend.set(&key, value, cachestack::Expiry::Default).await }).unwrap();
}

fn run_matrix(store: &Store) {
    for signed in [true, false] {
        let ns = unique_namespace(&format!("hostile-{}", store.name));
        let other_ns = unique_namespace(&format!("hostile-other-{}", store.name));
        let backend = (store.open)(&ns, format(signed));
        let other = (store.open)(&other_ns, format(signed));
        let what = |case: &str| format!("{} ({}signed): {case}", store.name, if signed { "" } else { "un" });
        // A write makes the namespace's generation (memcached) before envelopes are framed.
        set(&backend, "warm-up", "x");
        set(&other, "k", "from the other namespace");
        set(&backend, "j", "for another key");

        let scope = (store.scope)(&ns);
        let genuine = seal(signed, &scope, "k", "genuine");
        let plant_envelope = |envelope: &[u8]| (store.plant)(&ns, "k", &(store.frame)(&ns, "k", envelope));

        // Control: a genuine envelope, framed by hand, is served.
        plant_envelope(&genuine);
        assert_eq!(get(&backend, "k").as_deref(), Some("genuine"), "{}", what("control"));

        // Never served, signed or not: garbage, truncations, a forged length.
        let mut forged_len = genuine.clone();
        forged_len[21..25].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut unframed = vec![b"\x00garbage\xff".to_vec(), Vec::new(), vec![0xff; 4096]];
        unframed.push(genuine.clone());
        for (i, raw) in unframed.iter().enumerate() {
            (store.plant)(&ns, "k", raw);
            if i < 3 || store.name == "file" || store.name == "memcached" {
                assert_eq!(get(&backend, "k"), None, "{}", what(&format!("unframed bytes #{i}")));
            }
        }
        for (case, envelope) in [
            ("garbage envelope", b"CS\x01\x00garbage".to_vec()),
            ("truncated by one byte", genuine[..genuine.len() - 1].to_vec()),
            ("header only", genuine[..HEADER].to_vec()),
            ("truncated header", genuine[..10].to_vec()),
            ("payload length u32::MAX", forged_len),
        ] {
            plant_envelope(&envelope);
            assert_eq!(get(&backend, "k"), None, "{}", what(case));
        }

        // Genuine envelopes that belong elsewhere, and edited headers: never served when
        // signed; without a signer they may be (that is what signing is for), but never panic.
        let mut huge_expiry = genuine.clone();
        huge_expiry[13..21].copy_from_slice(&u64::MAX.to_le_bytes());
        let moved = (store.unframe)(&(store.read)(&other_ns, "k").unwrap());
        let mut foreign = vec![
            ("envelope of another namespace", seal(signed, &(store.scope)(&other_ns), "k", "planted")),
            ("envelope of another key", seal(signed, &scope, "j", "planted")),
            ("stored bytes moved from another namespace", moved),
            ("expiry u64::MAX", huge_expiry),
        ];
        if signed {
            foreign.push(("unsigned envelope", seal(false, &scope, "k", "planted")));
            let wrong = ValueFormat { signer: Some(Signer::new("another secret, 16+ bytes").unwrap()), ..format(true) };
            foreign.push((
                "another secret",
                wrong.seal_in(&scope, "k", &Value::new("planted".to_string()), None).unwrap(),
            ));
        }
        if store.generations {
            foreign.push(("envelope of another generation", seal(signed, &format!("{scope}0"), "k", "planted")));
        }
        for (case, envelope) in foreign {
            plant_envelope(&envelope);
            let found = get(&backend, "k");
            if signed {
                assert_eq!(found, None, "{}", what(case));
            }
        }
        if signed && store.generations {
            // A record from before clear(), its generation field edited to the current one.
            set(&backend, "k", "cleared");
            let before = (store.unframe)(&(store.read)(&ns, "k").unwrap());
            let cache = Arc::clone(&backend);
            block(async move { cache.clear().await }).unwrap();
            set(&backend, "warm-up", "x");
            plant_envelope(&before);
            assert_eq!(get(&backend, "k"), None, "{}", what("record from before clear() with an edited generation"));
        }

        // Errors were counted, and the key works again.
        assert!(backend.stats().errors > 0, "{}", what("no errors counted"));
        set(&backend, "k", "fresh");
        assert_eq!(get(&backend, "k").as_deref(), Some("fresh"), "{}", what("after the planted bytes"));
        let (b, o) = (Arc::clone(&backend), Arc::clone(&other));
        block(async move {
            let _ = b.clear().await;
            let _ = o.clear().await;
        });
    }
}

// ---- file ---------------------------------------------------------------------------------------

fn file_frame(key: &str, envelope: &[u8]) -> Vec<u8> {
    let mut out = b"CSF\x01".to_vec();
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&u32::try_from(key.len()).unwrap().to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(envelope);
    let checksum = xxhash_rust::xxh3::xxh3_64(&out[12..]);
    out[4..12].copy_from_slice(&checksum.to_le_bytes());
    out
}

#[test]
fn file_store() {
    let root = Arc::new(tempfile::tempdir().unwrap());
    let at = {
        let root = Arc::clone(&root);
        move |ns: &str, key: &str| {
            FileBackend::new(FileConfig::new(root.path()).with_namespace(ns)).unwrap().path_for(key)
        }
    };
    let (read_at, plant_at) = (at.clone(), at);
    let open_root = Arc::clone(&root);
    run_matrix(&Store {
        name: "file",
        open: Box::new(move |ns, format| {
            Arc::new(
                FileBackend::new(FileConfig::new(open_root.path()).with_namespace(ns).with_format(format)).unwrap(),
            )
        }),
        read: Box::new(move |ns, key| std::fs::read(read_at(ns, key)).ok()),
        plant: Box::new(move |ns, key, bytes| {
            let path = plant_at(ns, key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }),
        frame: Box::new(|_, key, envelope| file_frame(key, envelope)),
        unframe: Box::new(|raw| {
            let key_len = u32::from_le_bytes(raw[12..16].try_into().unwrap()) as usize;
            raw[16 + key_len..].to_vec()
        }),
        scope: Box::new(str::to_string),
        generations: false,
    });
}

// ---- Redis --------------------------------------------------------------------------------------

#[test]
fn redis_store() {
    let Some(url) = cachestack_tests::server_url("CACHESTACK_TEST_REDIS_URL", "redis") else { return };
    let run = std::env::var("CACHESTACK_TEST_REDIS_RUN").unwrap_or_else(|_| "run".into());
    let client = Arc::new(redis::Client::open(url.as_str()).unwrap());
    let full = |ns: &str, key: &str| format!("cachestack:{ns}:{key}");
    let (reader, planter) = (Arc::clone(&client), Arc::clone(&client));
    run_matrix(&Store {
        name: "redis",
        open: Box::new(move |ns, format| {
            let config = cachestack::RedisConfig::new(&url).with_namespace(format!("{run}-{ns}")).with_format(format);
            Arc::new(cachestack::RedisBackend::new(config).unwrap())
        }),
        read: Box::new(move |ns, key| {
            let run = std::env::var("CACHESTACK_TEST_REDIS_RUN").unwrap_or_else(|_| "run".into());
            redis::cmd("GET")
                .arg(full(&format!("{run}-{ns}"), key))
                .query(&mut reader.get_connection().unwrap())
                .unwrap()
        }),
        plant: Box::new(move |ns, key, bytes| {
            let run = std::env::var("CACHESTACK_TEST_REDIS_RUN").unwrap_or_else(|_| "run".into());
            let () = redis::cmd("SET")
                .arg(full(&format!("{run}-{ns}"), key))
                .arg(bytes)
                .query(&mut planter.get_connection().unwrap())
                .unwrap();
        }),
        frame: Box::new(|_, _, envelope| envelope.to_vec()),
        unframe: Box::new(<[u8]>::to_vec),
        scope: Box::new(|ns| {
            let run = std::env::var("CACHESTACK_TEST_REDIS_RUN").unwrap_or_else(|_| "run".into());
            format!("{run}-{ns}")
        }),
        generations: false,
    });
}

// ---- PostgreSQL ---------------------------------------------------------------------------------

fn pg<T: Send + 'static>(
    url: &str,
    f: impl FnOnce(sqlx::PgConnection) -> std::pin::Pin<Box<dyn Future<Output = T> + Send>> + Send + 'static,
) -> T {
    use sqlx::Connection;
    let url = url.to_string();
    block(async move { f(sqlx::PgConnection::connect(&url).await.unwrap()).await })
}

#[test]
fn postgres_store() {
    let Some(url) = cachestack_tests::server_url("CACHESTACK_TEST_POSTGRES_URL", "postgres") else { return };
    const TABLE: &str = "cachestack_hostile";
    let (open_url, read_url, plant_url) = (url.clone(), url.clone(), url);
    run_matrix(&Store {
        name: "postgres",
        open: Box::new(move |ns, format| {
            let config =
                cachestack::PostgresConfig::new(&open_url).with_table(TABLE).with_namespace(ns).with_format(format);
            Arc::new(cachestack::PostgresBackend::new(config).unwrap())
        }),
        read: Box::new(move |ns, key| {
            let (ns, key) = (ns.to_string(), key.to_string());
            pg(&read_url, move |mut conn| {
                Box::pin(async move {
                    let sql = format!("SELECT value FROM \"{TABLE}\" WHERE namespace = $1 AND key = $2");
                    sqlx::query_scalar(&sql).bind(ns).bind(key).fetch_optional(&mut conn).await.unwrap()
                })
            })
        }),
        plant: Box::new(move |ns, key, bytes| {
            let (ns, key, bytes) = (ns.to_string(), key.to_string(), bytes.to_vec());
            pg(&plant_url, move |mut conn| {
                Box::pin(async move {
                    let sql = format!(
                        "INSERT INTO \"{TABLE}\" (namespace, key, full_key, value) VALUES ($1, $2, NULL, $3) \
                         ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, full_key = NULL, expires_at = NULL"
                    );
                    sqlx::query(&sql).bind(ns).bind(key).bind(bytes).execute(&mut conn).await.unwrap();
                })
            })
        }),
        frame: Box::new(|_, _, envelope| envelope.to_vec()),
        unframe: Box::new(<[u8]>::to_vec),
        scope: Box::new(str::to_string),
        generations: false,
    });
}

// ---- Memcached ----------------------------------------------------------------------------------

async fn mc(addr: String) -> memcache_async::ascii::Protocol<tokio::net::TcpStream> {
    memcache_async::ascii::Protocol::new(tokio::net::TcpStream::connect(addr).await.unwrap())
}

fn mc_get(addr: &str, key: &str) -> Option<Vec<u8>> {
    let (addr, key) = (addr.to_string(), key.to_string());
    block(async move { mc(addr).await.get(&key).await.ok() })
}

fn mc_generation(addr: &str, ns: &str) -> u64 {
    let raw = mc_get(addr, &format!("cs:{ns}#gen")).expect("a generation");
    std::str::from_utf8(&raw).unwrap().trim().parse().unwrap()
}

#[test]
fn memcached_store() {
    let Some(url) = cachestack_tests::server_url("CACHESTACK_TEST_MEMCACHED_URL", "memcached") else { return };
    let base = MemcachedConfig::from_url(&url).unwrap();
    let addr = base.servers[0].clone();
    let (a1, a2, a3) = (addr.clone(), addr.clone(), addr);
    run_matrix(&Store {
        name: "memcached",
        open: Box::new(move |ns, format| {
            let config = base.clone().with_namespace(ns).with_format(format);
            Arc::new(cachestack::MemcachedBackend::new(config).unwrap())
        }),
        read: Box::new(move |ns, key| mc_get(&a1, &format!("cs:{ns}:{key}"))),
        plant: Box::new(move |ns, key, bytes| {
            let (addr, wire, bytes) = (a2.clone(), format!("cs:{ns}:{key}"), bytes.to_vec());
            block(async move {
                let mut conn = mc(addr).await;
                conn.set(&wire, &bytes, 0).await.unwrap();
                conn.version().await.unwrap();
            });
        }),
        // b"CM" | version 1 | generation | namespace length u16 | key length u32 | ns | key | envelope
        frame: {
            let addr = a3.clone();
            Box::new(move |ns, key, envelope| {
                let mut out = b"CM\x01".to_vec();
                out.extend_from_slice(&mc_generation(&addr, ns).to_le_bytes());
                out.extend_from_slice(&u16::try_from(ns.len()).unwrap().to_le_bytes());
                out.extend_from_slice(&u32::try_from(key.len()).unwrap().to_le_bytes());
                out.extend_from_slice(ns.as_bytes());
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(envelope);
                out
            })
        },
        unframe: Box::new(|raw| {
            let ns_len = u16::from_le_bytes(raw[11..13].try_into().unwrap()) as usize;
            let key_len = u32::from_le_bytes(raw[13..17].try_into().unwrap()) as usize;
            raw[17 + ns_len + key_len..].to_vec()
        }),
        scope: Box::new(move |ns| format!("{ns}#{}", mc_generation(&a3, ns))),
        generations: true,
    });
}
