//! The PostgreSQL backend against a real server: the shared conformance suite, then what is
//! special to PostgreSQL (table creation races, identifier checks, hashed keys, expiry and purge,
//! size bounds, a server restart under load).
//!
//! The shared server comes from `CACHESTACK_TEST_POSTGRES_URL` (set by `tests/servers.sh`). Every
//! test uses its own tables (`cachestack_test_*`) or namespaces and drops what it created. The
//! restart test runs a private cluster on a free port and never touches the shared server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cachestack::{Backend, Cache, Deadline, Error, Expiry, PostgresBackend, PostgresConfig, Value, ValueFormat};
use cachestack_tests::conformance::{unique_namespace, Harness};
use cachestack_tests::own_postgres::OwnPostgres;
use cachestack_tests::own_server::free_port;
use sqlx::{Connection, PgConnection};

const VAR: &str = "CACHESTACK_TEST_POSTGRES_URL";
const WHAT: &str = "PostgreSQL";
const CONFORMANCE_TABLE: &str = "cachestack_test_conformance";

/// A table name no other run uses.
fn unique_table(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("cachestack_test_{tag}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn config(url: &str, table: &str, namespace: &str) -> PostgresConfig {
    PostgresConfig::new(url).with_table(table).with_namespace(namespace)
}

/// Runs one statement on a fresh connection (below the backend's API).
async fn exec(url: &str, sql: &str) {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// Runs `f` with a fresh connection on cachestack's runtime, from sync code (raw writers).
fn with_conn_blocking<T: Send + 'static>(
    url: &str,
    f: impl for<'c> FnOnce(&'c mut PgConnection) -> futures_lite::BoxFuture<'c, T> + Send + 'static,
) -> T {
    let url = url.to_owned();
    cachestack::rt::block_on(async move {
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let out = f(&mut conn).await;
        conn.close().await.unwrap();
        out
    })
    .unwrap()
}

mod futures_lite {
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

async fn count_rows(url: &str, table: &str, namespace: &str) -> i64 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{table}\" WHERE namespace = $1"))
        .bind(namespace)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

fn harness(
    url: String,
    table: &'static str,
    schema: Option<&'static str>,
    format: ValueFormat,
    unlogged: bool,
) -> Harness {
    // Rows of earlier runs (unique namespaces nobody reads again) are removed once per process
    // and table.
    static SWEPT: Mutex<Vec<&str>> = Mutex::new(Vec::new());
    let qualified = match schema {
        Some(s) => format!("\"{s}\".\"{table}\""),
        None => format!("\"{table}\""),
    };
    let open = {
        let url = url.clone();
        let format = format.clone();
        move |namespace: &str| {
            PostgresConfig { schema: schema.map(str::to_owned), unlogged, ..config(&url, table, namespace) }
                .with_format(format.clone())
        }
    };
    let first = {
        let mut swept = SWEPT.lock().unwrap();
        let first = !swept.contains(&table);
        swept.push(table);
        first
    };
    if first {
        let sweep = format!("DELETE FROM {qualified} WHERE written_at < now() - interval '1 hour'");
        let exists = format!("SELECT to_regclass('{qualified}') IS NOT NULL");
        with_conn_blocking(&url, move |conn| {
            Box::pin(async move {
                let present: bool = sqlx::query_scalar(&exists).fetch_one(&mut *conn).await.unwrap();
                if present {
                    sqlx::query(&sweep).execute(&mut *conn).await.unwrap();
                }
            })
        });
    }
    let plant_url = url.clone();
    let plant_table = qualified.clone();
    let mut h = Harness::new(move |namespace| Arc::new(PostgresBackend::new(open(namespace)).unwrap()));
    h.raw_writer = Some(Arc::new(move |namespace: &str, key: &str, bytes: &[u8]| {
        let sql = format!(
            "INSERT INTO {plant_table} (namespace, key, full_key, value) VALUES ($1, $2, NULL, $3) \
             ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, full_key = NULL, expires_at = NULL"
        );
        let (namespace, key, bytes) = (namespace.to_owned(), key.to_owned(), bytes.to_vec());
        with_conn_blocking(&plant_url, move |conn| {
            Box::pin(async move {
                sqlx::query(&sql).bind(namespace).bind(key).bind(bytes).execute(&mut *conn).await.unwrap();
            })
        });
    }));
    h.unreachable_silent = Some(Arc::new(|namespace: &str| {
        let url = format!(
            "postgres://postgres@127.0.0.1:1/test?namespace={namespace}&silent=true&timeout=500ms&connect_timeout=200ms"
        );
        cachestack::backend_from_url(&url).unwrap()
    }));
    h
}

cachestack_tests::conformance_suite!(postgres, || {
    let url = cachestack_tests::server_url(VAR, WHAT)?;
    Some(harness(url, CONFORMANCE_TABLE, None, ValueFormat::default(), false))
});

// The same behaviours in a schema of its own, in an UNLOGGED table, with signed and compressed
// values.
cachestack_tests::conformance_suite!(postgres_unlogged_signed_in_schema, || {
    let url = cachestack_tests::server_url(VAR, WHAT)?;
    let format = ValueFormat {
        signer: Some(cachestack::Signer::new("a test secret of some length").unwrap()),
        compression: cachestack::Compression::Zstd { level: 3 },
        ..ValueFormat::default()
    };
    Some(harness(url, "cachestack_test_conformance_u", Some("cachestack_test_schema"), format, true))
});

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_pools_race_to_create_schema_and_table() {
    let url = cachestack_tests::require_server!(VAR, WHAT);
    for round in 0..4 {
        let schema = unique_table("race_schema");
        let table = unique_table("race");
        let barrier = Arc::new(tokio::sync::Barrier::new(16));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                // One backend, so one pool, per task: 16 independent clients.
                let backend = PostgresBackend::new(PostgresConfig {
                    schema: Some(schema.clone()),
                    max_entries: (i % 2 == 0).then_some(1000),
                    ..config(&url, &table, "race")
                })
                .unwrap();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    backend.set(&format!("k{i}"), Value::new(i), cachestack::Expiry::Default).await
                })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            task.await.unwrap().unwrap_or_else(|e| panic!("round {round}, client {i}: {e}"));
        }
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{schema}\".\"{table}\""))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(rows, 16);
        let indexes: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND tablename = $2")
                .bind(&schema)
                .bind(&table)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(indexes, 3, "primary key, expiry index, write-time index");
        sqlx::raw_sql(&format!("DROP SCHEMA \"{schema}\" CASCADE")).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    }
}

/// The collision made certain: another session holds an uncommitted `CREATE SCHEMA` of the same
/// name, so all 16 clients find nothing and try to create it while that creation is in flight
/// (where `IF NOT EXISTS` does not help: PostgreSQL waits on the catalog's unique index, then
/// reports a duplicate). Once every client is blocked, the other session commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_pools_creating_while_another_session_creates_the_schema() {
    let url = cachestack_tests::require_server!(VAR, WHAT);
    let schema = unique_table("held_schema");
    let table = unique_table("held");
    let application = format!("cachestack_race_{}", std::process::id());
    let sep = if url.contains('?') { '&' } else { '?' };
    let client_url = format!("{url}{sep}application_name={application}");
    let mut holder = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(&format!("BEGIN; CREATE SCHEMA \"{schema}\"")).execute(&mut holder).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let backend = PostgresBackend::new(
                PostgresConfig { schema: Some(schema.clone()), ..config(&client_url, &table, "race") }
                    .with_timeout(Duration::from_secs(60)),
            )
            .unwrap();
            tokio::spawn(async move { backend.set(&format!("k{i}"), Value::new(i), cachestack::Expiry::Default).await })
        })
        .collect();
    // The event: all 16 client sessions wait on a lock (one on the schema, the rest on
    // cachestack's advisory lock, or all on the schema without it).
    let mut watcher = PgConnection::connect(&url).await.unwrap();
    wait_for_lock_waiters(&mut watcher, &application, 16, "clients reached the creation").await;
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    for (i, task) in tasks.into_iter().enumerate() {
        task.await.unwrap().unwrap_or_else(|e| panic!("client {i}: {e}"));
    }
    let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{schema}\".\"{table}\""))
        .fetch_one(&mut watcher)
        .await
        .unwrap();
    assert_eq!(rows, 16);
    sqlx::raw_sql(&format!("DROP SCHEMA \"{schema}\" CASCADE")).execute(&mut watcher).await.unwrap();
    holder.close().await.unwrap();
    watcher.close().await.unwrap();
}

#[test]
fn bad_table_and_schema_names_are_config_errors() {
    let long = "t".repeat(100);
    let names = ["cache\"; DROP TABLE users; --", "cache;drop", "ca'che", long.as_str(), "", "Cache", "cache.x"];
    for name in names {
        let err = PostgresBackend::new(PostgresConfig::default().with_table(name)).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{name:?}: {err:?}");
        assert!(err.to_string().contains("invalid table name"), "{name:?}: {err}");
        let err = PostgresBackend::new(PostgresConfig::default().with_schema(name)).unwrap_err();
        assert!(err.to_string().contains("invalid schema name"), "{name:?}: {err}");
    }
    assert!(PostgresBackend::new(PostgresConfig::default().with_table(long.as_str()))
        .unwrap_err()
        .to_string()
        .contains("100 bytes"));
    // The same through URLs (percent-encoded quote and semicolon).
    for url in [
        "postgres://h/db?table=cache%22%3B%20DROP%20TABLE%20x",
        "postgres://h/db?table=a%3Bb",
        &format!("postgres://h/db?table={long}"),
    ] {
        let err = cachestack::backend_from_url(url).unwrap_err();
        assert!(matches!(err, Error::Config { .. }) && err.to_string().contains("invalid table name"), "{url}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_table_with_the_same_name_is_refused_and_untouched() {
    let url = cachestack_tests::require_server!(VAR, WHAT);
    let table = unique_table("foreign");
    exec(&url, &format!("CREATE TABLE \"{table}\" (namespace text, key text, payload int); INSERT INTO \"{table}\" VALUES ('default', 'k', 1)")).await;
    let backend = PostgresBackend::new(config(&url, &table, "default")).unwrap();
    let err = backend.get("k").await.unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert!(err.to_string().contains("not a cachestack cache table"), "{err}");
    assert!(backend.clear().await.is_err());
    assert_eq!(count_rows(&url, &table, "default").await, 1, "the foreign table was modified");
    let err = PostgresBackend::connect(config(&url, &table, "default")).await.unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    exec(&url, &format!("DROP TABLE \"{table}\"")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_without_create_table_is_a_config_error() {
    let url = cachestack_tests::require_server!(VAR, WHAT);
    let table = unique_table("absent");
    let err = PostgresBackend::connect(PostgresConfig { create_table: false, ..config(&url, &table, "x") })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }) && err.to_string().contains("does not exist"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_and_nul_keys_are_hashed_and_the_full_key_is_checked() {
    let url = cachestack_tests::require_server!(VAR, WHAT);
    let table = unique_table("keys");
    let backend = Arc::new(PostgresBackend::connect(config(&url, &table, "keys")).await.unwrap());
    let long = "long-key/".repeat(200);
    let cache = Cache::from_arc(backend.clone());
    cache.set(&long, &1u32, None).await.unwrap();
    cache.set("nul\0key", &2u32, None).await.unwrap();
    cache.set("plain", &3u32, None).await.unwrap();
    assert_eq!(cache.get::<u32>(&long).await.unwrap(), Some(1));
    assert_eq!(cache.get::<u32>("nul\0key").await.unwrap(), Some(2));

    let mut conn = PgConnection::connect(&url).await.unwrap();
    let rows: Vec<(String, Option<Vec<u8>>)> =
        sqlx::query_as(&format!("SELECT key, full_key FROM \"{table}\" ORDER BY key"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(rows.len(), 3);
    for (key, full) in &rows {
        assert!(key.len() <= 512, "stored key of {} bytes", key.len());
        match key.as_str() {
            "plain" => assert_eq!(full, &None),
            _ => {
                assert!(full.as_deref() == Some(long.as_bytes()) || full.as_deref() == Some(&b"nul\0key"[..]), "{key}")
            }
        }
    }
    // Another key's row under the same stored key (what a hash collision would give) is a miss,
    // never that key's value.
    sqlx::query(&format!("UPDATE \"{table}\" SET full_key = $1 WHERE full_key = $2"))
        .bind(b"some other key".to_vec())
        .bind(long.as_bytes().to_vec())
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(cache.get::<u32>(&long).await.unwrap(), None);
    assert!(backend.get_many(&[long.as_str(), "plain"]).await.unwrap()[0].is_none());
    assert!(!backend.delete(&long).await.unwrap(), "a row of another key is not reported as present");
    // Writing the key again takes the row back.
    cache.set(&long, &4u32, None).await.unwrap();
    assert_eq!(cache.get::<u32>(&long).await.unwrap(), Some(4));
    sqlx::raw_sql(&format!("DROP TABLE \"{table}\"")).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_rows_are_never_returned_and_are_purged_in_batches() {
    let url = cachestack_tests::require_server!(VAR, WHAT);
    let table = unique_table("purge");
    let backend =
        PostgresBackend::connect(PostgresConfig { batch_size: 100, ..config(&url, &table, "mine") }).await.unwrap();
    let other = PostgresBackend::connect(config(&url, &table, "theirs")).await.unwrap();
    // Valid envelopes whose rows expired a second ago (planted, so no waiting for time to pass).
    let format = ValueFormat::default();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let plant = format!(
        "INSERT INTO \"{table}\" (namespace, key, value, expires_at) \
         SELECT $1, 'expired:' || i, $2, now() - interval '1 second' FROM generate_series(1, $3) AS i"
    );
    let bytes = format.seal("expired:1", &Value::new(7u32), None).unwrap();
    sqlx::query(&plant).bind("mine").bind(&bytes).bind(250i32).execute(&mut conn).await.unwrap();
    sqlx::query(&plant).bind("theirs").bind(&bytes).bind(5i32).execute(&mut conn).await.unwrap();
    for i in 0..10 {
        backend
            .set(&format!("live:{i}"), Value::new(i), cachestack::Expiry::after(Duration::from_secs(3600)))
            .await
            .unwrap();
    }
    backend.set("forever", Value::new(1u8), cachestack::Expiry::Default).await.unwrap();

    assert!(backend.get("expired:1").await.unwrap().is_none(), "an expired row was returned");
    assert!(!backend.exists("expired:2").await.unwrap());
    let got = backend.get_many(&["expired:1", "live:3", "expired:3"]).await.unwrap();
    assert!(got[0].is_none() && got[1].is_some() && got[2].is_none());
    assert!(!backend.delete("expired:4").await.unwrap(), "deleting an expired row reports it absent");
    assert_eq!(count_rows(&url, &table, "mine").await, 249 + 11, "expired rows are still stored before the purge");

    assert_eq!(backend.purge_expired().await.unwrap(), 249, "purges every expired row, over several batches");
    assert_eq!(count_rows(&url, &table, "mine").await, 11);
    assert_eq!(count_rows(&url, &table, "theirs").await, 5, "purge is scoped to the namespace");
    assert_eq!(other.purge_expired().await.unwrap(), 5);
    assert_eq!(backend.purge_expired().await.unwrap(), 0);
    for i in 0..10 {
        assert!(backend.get(&format!("live:{i}")).await.unwrap().is_some());
    }
    sqlx::raw_sql(&format!("DROP TABLE \"{table}\"")).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// The `expires_at` of a row in Unix milliseconds (rounded down), read below the backend's API.
async fn row_expiry_ms(url: &str, table: &str, namespace: &str, key: &str) -> Option<i64> {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let ms: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT floor(EXTRACT(EPOCH FROM expires_at) * 1000)::int8 FROM \"{table}\" WHERE namespace = $1 AND key = $2"
    ))
    .bind(namespace)
    .bind(key)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    ms
}

/// Absolute expiry: the deadline the writer fixed is the one stored (in the envelope and in
/// `expires_at`, computed from the deadline rather than from the server's `now()` when the write
/// arrives) and the one every read returns, to the millisecond.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_return_the_deadline_the_writer_fixed() {
    let url = cachestack_tests::require_server!(VAR, WHAT);
    let namespace = unique_namespace("deadline");
    let ttl = Duration::from_secs(600);
    let backend = PostgresBackend::new(config(&url, CONFORMANCE_TABLE, &namespace).with_default_ttl(ttl)).unwrap();

    let fixed = Deadline::after(Duration::from_secs(3600));
    backend.set("fixed", Value::new(1u8), Expiry::At(fixed)).await.unwrap();
    assert_eq!(backend.get("fixed").await.unwrap().expect("live entry").expires, Some(fixed));
    assert_eq!(backend.get_many(&["fixed"]).await.unwrap()[0].as_ref().and_then(|e| e.expires), Some(fixed));
    let stored = row_expiry_ms(&url, CONFORMANCE_TABLE, &namespace, "fixed").await;
    assert_eq!(stored, Some(fixed.unix_millis() as i64), "expires_at is the writer's deadline");

    let many = Deadline::after(Duration::from_secs(7200));
    backend.set_many(&[("a", Value::new(2u8)), ("b", Value::new(3u8))], Expiry::At(many)).await.unwrap();
    for entry in backend.get_many(&["a", "b"]).await.unwrap() {
        assert_eq!(entry.expect("live entry").expires, Some(many));
    }
    assert_eq!(row_expiry_ms(&url, CONFORMANCE_TABLE, &namespace, "b").await, Some(many.unix_millis() as i64));

    // The default TTL is resolved once, when the write reaches the store.
    let earliest = Deadline::after(ttl);
    backend.set("default", Value::new(4u8), Expiry::Default).await.unwrap();
    let latest = Deadline::after(ttl);
    let resolved = backend.get("default").await.unwrap().expect("live entry").expires.expect("a deadline");
    assert!(earliest <= resolved && resolved <= latest, "{resolved:?}");
    assert_eq!(
        row_expiry_ms(&url, CONFORMANCE_TABLE, &namespace, "default").await,
        Some(resolved.unix_millis() as i64)
    );

    backend.set("never", Value::new(5u8), Expiry::Never).await.unwrap();
    assert_eq!(backend.get("never").await.unwrap().expect("live entry").expires, None);
    assert_eq!(row_expiry_ms(&url, CONFORMANCE_TABLE, &namespace, "never").await, None);
    backend.clear().await.unwrap();
}

/// A write whose deadline passed while it was in transit (queued, retried, slow) is never
/// served: it does not get a new life from the moment it reaches the server. And the client
/// checks the deadline sealed in the envelope on every read, whatever the row's `expires_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passed_in_transit_is_never_served() {
    let url = cachestack_tests::require_server!(VAR, WHAT);
    let namespace = unique_namespace("passed");
    let backend = PostgresBackend::new(config(&url, CONFORMANCE_TABLE, &namespace)).unwrap();
    let passed = Deadline::at(SystemTime::now() - Duration::from_secs(1));
    let just_passed = Deadline::at(SystemTime::now() - Duration::from_millis(1));

    backend.set("k", Value::new(1u8), Expiry::after(Duration::from_secs(3600))).await.unwrap();
    backend.set("k", Value::new(2u8), Expiry::At(passed)).await.unwrap();
    assert!(backend.get("k").await.unwrap().is_none(), "an expired write was served (or the old value kept)");
    assert!(!backend.exists("k").await.unwrap());
    backend.set("j", Value::new(3u8), Expiry::At(just_passed)).await.unwrap();
    assert!(backend.get("j").await.unwrap().is_none());
    backend.set_many(&[("m1", Value::new(4u8)), ("m2", Value::new(5u8))], Expiry::At(passed)).await.unwrap();
    assert!(backend.get_many(&["m1", "m2", "k"]).await.unwrap().iter().all(Option::is_none));
    // Stored with that deadline, so they are expired rows for the purge too.
    assert_eq!(row_expiry_ms(&url, CONFORMANCE_TABLE, &namespace, "k").await, Some(passed.unix_millis() as i64));
    assert_eq!(backend.purge_expired().await.unwrap(), 4);

    // Rows whose expires_at is an hour away (a foreign writer, or clock skew) but whose sealed
    // deadline has passed are misses; of two deadlines, the earlier is the one returned.
    let format = ValueFormat::default();
    let in_an_hour = Deadline::after(Duration::from_secs(3600));
    let in_two_hours = Deadline::after(Duration::from_secs(7200));
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let plant = format!(
        "INSERT INTO \"{CONFORMANCE_TABLE}\" (namespace, key, value, expires_at) \
         VALUES ($1, $2, $3, timestamptz 'epoch' + $4::int8 * interval '1 millisecond')"
    );
    for (key, sealed, row) in [("sealed-passed", passed, in_an_hour), ("both", in_two_hours, in_an_hour)] {
        let bytes = format.seal(key, &Value::new(6u8), Some(sealed.time())).unwrap();
        sqlx::query(&plant)
            .bind(&namespace)
            .bind(key)
            .bind(bytes)
            .bind(row.unix_millis() as i64)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();
    assert!(backend.get("sealed-passed").await.unwrap().is_none(), "the sealed deadline was not checked");
    assert!(backend.get_many(&["sealed-passed"]).await.unwrap()[0].is_none());
    assert_eq!(backend.get("both").await.unwrap().expect("live entry").expires, Some(in_an_hour));
    // Expired entries are misses, not errors.
    assert_eq!(backend.stats().errors, 0, "{:?}", backend.stats());
    backend.clear().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_bounds_trim_the_oldest_rows_of_the_namespace_only() {
    let url = cachestack_tests::require_server!(VAR, WHAT);
    let table = unique_table("trim");
    let bounded = |namespace: &str, max_entries: Option<u64>, max_bytes: Option<u64>| {
        PostgresBackend::new(PostgresConfig {
            max_entries,
            max_bytes,
            batch_size: 20,
            trim_interval: Duration::from_secs(3600),
            ..config(&url, &table, namespace)
        })
        .unwrap()
    };
    let untouched = PostgresBackend::connect(config(&url, &table, "unbounded")).await.unwrap();
    for i in 0..120 {
        untouched.set(&format!("k{i}"), Value::new(i), cachestack::Expiry::Default).await.unwrap();
    }

    // Entries: explicit trim keeps the 50 newest writes.
    let entries = bounded("entries", Some(50), None);
    for i in 0..200 {
        entries.set(&format!("k{i}"), Value::new(i), cachestack::Expiry::Default).await.unwrap();
    }
    entries.trim().await.unwrap();
    assert_eq!(count_rows(&url, &table, "entries").await, 50);
    for i in 0..200 {
        let kept = entries.get(&format!("k{i}")).await.unwrap().is_some();
        assert_eq!(kept, i >= 150, "k{i}");
    }
    assert_eq!(count_rows(&url, &table, "unbounded").await, 120, "another namespace was trimmed");

    // Bytes: 1 KiB values under a 20 KiB bound.
    let bytes = bounded("bytes", None, Some(20 * 1024));
    for i in 0..60 {
        bytes.set(&format!("k{i}"), Value::new(vec![i as u8; 1024]), cachestack::Expiry::Default).await.unwrap();
    }
    bytes.trim().await.unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let (rows, total): (i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*), coalesce(sum(octet_length(key) + octet_length(value)), 0)::int8 FROM \"{table}\" WHERE namespace = 'bytes'"
    ))
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(total <= 20 * 1024 && rows >= 15, "{rows} rows, {total} bytes");
    assert!(bytes.get("k59").await.unwrap().is_some() && bytes.get("k0").await.unwrap().is_none());

    // The background task trims on its own after enough writes (here every 5).
    let background = bounded("background", Some(50), None);
    for i in 0..300 {
        background.set(&format!("k{i}"), Value::new(i), cachestack::Expiry::Default).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count_rows(&url, &table, "background").await > 50 {
        assert!(tokio::time::Instant::now() < deadline, "the background trim never brought the namespace to its bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(background.stats().evictions >= 250, "{:?}", background.stats());
    assert!(background.get("k299").await.unwrap().is_some());
    assert_eq!(count_rows(&url, &table, "unbounded").await, 120);
    drop((entries, bytes, background, untouched));
    sqlx::raw_sql(&format!("DROP TABLE \"{table}\"")).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_calls_with_repeated_keys() {
    let url = cachestack_tests::require_server!(VAR, WHAT);
    let backend = PostgresBackend::new(config(&url, CONFORMANCE_TABLE, &unique_namespace("repeated"))).unwrap();
    let long = "x".repeat(300);
    // The last of two writes to one key wins, as with two sets.
    backend
        .set_many(
            &[("a", Value::new(1u8)), (long.as_str(), Value::new(2u8)), ("a", Value::new(3u8))],
            cachestack::Expiry::Default,
        )
        .await
        .unwrap();
    let got = backend.get_many(&["a", long.as_str(), "a", "missing", long.as_str()]).await.unwrap();
    let read: Vec<Option<u8>> = got.iter().map(|e| e.as_ref().map(|e| e.value.get::<u8>().unwrap())).collect();
    assert_eq!(read, [Some(3), Some(2), Some(3), None, Some(2)]);
    assert_eq!(backend.delete_many(&["a", "a", long.as_str(), "missing"]).await.unwrap(), 2);
    assert!(backend.get_many(&["a", long.as_str()]).await.unwrap().iter().all(Option::is_none));
}

#[tokio::test]
async fn sync_calls_work_inside_a_current_thread_runtime() {
    let url = cachestack_tests::require_server!(VAR, WHAT);
    let backend = PostgresBackend::new(config(&url, CONFORMANCE_TABLE, &unique_namespace("sync"))).unwrap();
    let cache = Cache::new(backend);
    // The blocking calls park this runtime's only thread; the backend must not need it.
    cache.set_blocking("k", &"v".to_string(), None).unwrap();
    assert_eq!(cache.get_blocking::<String>("k").unwrap().as_deref(), Some("v"));
    assert_eq!(cache.get::<String>("k").await.unwrap().as_deref(), Some("v"));
    assert!(cache.delete_blocking("k").unwrap());
    cache.clear().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_build_working_backends() {
    let url = cachestack_tests::require_server!(VAR, WHAT);
    let table = unique_table("url");
    let sep = if url.contains('?') { '&' } else { '?' };
    let backend =
        cachestack::backend_from_url(&format!("{url}{sep}table={table}&namespace=url&pool_max=2&ttl=1h&unlogged=true"))
            .unwrap();
    let cache = Cache::from_arc(backend.clone());
    cache.set("k", &5u64, None).await.unwrap();
    let (value, ttl) = cache.get_with_ttl::<u64>("k").await.unwrap().unwrap();
    assert_eq!(value, 5);
    assert!(ttl.is_some_and(|t| t <= Duration::from_secs(3600) && t > Duration::from_secs(3000)), "{ttl:?}");
    let stats = backend.stats();
    assert_eq!(stats.details["table_ready"], "true");
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let persistence: String =
        sqlx::query_scalar("SELECT relpersistence::text FROM pg_class WHERE oid = to_regclass($1)")
            .bind(format!("\"{table}\""))
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(persistence, "u", "unlogged=true creates an UNLOGGED table");
    sqlx::raw_sql(&format!("DROP TABLE \"{table}\"")).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// The one I/O rule: an operation whose caller stops waiting is aborted, and its connection,
/// with a statement still in flight, is closed instead of going back to the pool (where the next
/// user would have to wait for the abandoned statement). Here the statement waits on a row lock
/// held by another session; the event that it is in flight is the server's `pg_stat_activity`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_statement_closes_its_connection() {
    let url = cachestack_tests::require_server!(VAR, WHAT);
    let namespace = unique_namespace("abandoned");
    let application = format!("cachestack_abandon_{}", std::process::id());
    let sep = if url.contains('?') { '&' } else { '?' };
    let client_url = format!("{url}{sep}application_name={application}");
    let backend = Arc::new(
        PostgresBackend::new(
            PostgresConfig { pool_max: 1, ..config(&client_url, CONFORMANCE_TABLE, &namespace) }
                .with_timeout(Duration::from_secs(60)),
        )
        .unwrap(),
    );
    backend.set("k", Value::new(1u8), Expiry::Never).await.unwrap();
    assert_eq!(backend.stats().details["pool_size"], "1");

    let mut holder = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query(&format!("SELECT 1 FROM \"{CONFORMANCE_TABLE}\" WHERE namespace = $1 AND key = 'k' FOR UPDATE"))
        .bind(&namespace)
        .execute(&mut holder)
        .await
        .unwrap();
    let writer = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.set("k", Value::new(2u8), Expiry::Never).await })
    };
    let mut watcher = PgConnection::connect(&url).await.unwrap();
    wait_for_lock_waiters(&mut watcher, &application, 1, "write reached the row lock").await;
    writer.abort();
    assert!(writer.await.unwrap_err().is_cancelled());
    // Closed while the statement is still blocked (returned to the pool, it would still count).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while backend.stats().details["pool_size"] != "0" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the abandoned connection was not closed: {:?}",
            backend.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sqlx::raw_sql("ROLLBACK").execute(&mut holder).await.unwrap();
    // A fresh connection serves the next operation.
    assert!(backend.get("k").await.unwrap().is_some());
    backend.clear().await.unwrap();
    holder.close().await.unwrap();
    watcher.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_an_error_or_in_silent_mode_a_miss() {
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", free_port());
    let quick = |silent| {
        PostgresConfig::new(url.as_str())
            .with_silent(silent)
            .with_connect_timeout(Duration::from_millis(300))
            .with_timeout(Duration::from_millis(500))
    };
    let hang = Duration::from_secs(10);
    let loud = PostgresBackend::new(quick(false)).unwrap();
    let err = tokio::time::timeout(hang, loud.get("k")).await.expect("hang").unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let silent = PostgresBackend::new(quick(true)).unwrap();
    assert!(tokio::time::timeout(hang, silent.get("k")).await.expect("hang").unwrap().is_none());
    tokio::time::timeout(hang, silent.set("k", Value::new(1u8), cachestack::Expiry::Default))
        .await
        .expect("hang")
        .unwrap();
    assert!(!tokio::time::timeout(hang, silent.delete("k")).await.expect("hang").unwrap());
    assert_eq!(silent.stats().errors, 3);
    assert_eq!(silent.stats().misses, 1);
}

// ---------------------------------------------------------------------------------------------
// Restart under load, on a private cluster (`OwnPostgres`).

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// The value just written was read back.
    Hit,
    /// A miss (or an older value of this task's, when the write failed).
    Degraded,
}

/// Waits until each of `tasks` workers has reported `want` (reports sent before the call are
/// dropped first).
async fn wait_all(outcomes: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, Outcome)>, tasks: usize, want: Outcome) {
    while outcomes.try_recv().is_ok() {}
    let mut seen = HashSet::new();
    while seen.len() < tasks {
        let (t, outcome) = outcomes.recv().await.expect("workers ended early");
        if outcome == want {
            seen.insert(t);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_under_load_degrades_to_misses_and_recovers() {
    // Needs the server tools only, not the shared server; CI always has them.
    let Some(cluster) = tokio::task::spawn_blocking(|| OwnPostgres::start("restart")).await.unwrap() else { return };
    let cluster = Arc::new(cluster);
    let timeout = Duration::from_secs(1);
    let hang = timeout * 10;
    let settings = |silent| {
        PostgresConfig { pool_max: 4, ..config(&cluster.url(), "cachestack_test_restart", "restart") }
            .with_silent(silent)
            .with_timeout(timeout)
            .with_connect_timeout(Duration::from_millis(500))
    };
    let backend = Arc::new(PostgresBackend::connect(settings(true)).await.unwrap());
    let loud = PostgresBackend::connect(settings(false)).await.unwrap();

    let tasks = 16;
    let stop = Arc::new(AtomicBool::new(false));
    let (events, mut outcomes) = tokio::sync::mpsc::unbounded_channel::<(usize, Outcome)>();
    let workers: Vec<_> = (0..tasks)
        .map(|t| {
            let (backend, stop, events) = (backend.clone(), stop.clone(), events.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("t{t}:{}", i % 8);
                    // Every call must return within its own timeout: 10x is a hang.
                    tokio::time::timeout(hang, backend.set(&key, Value::new(i), cachestack::Expiry::Default))
                        .await
                        .expect("set hung")
                        .expect("silent mode never returns errors");
                    let got =
                        tokio::time::timeout(hang, backend.get(&key)).await.expect("get hung").expect("silent get");
                    // A silent set that failed leaves the key's previous value: a value this
                    // task wrote for this key earlier is a stale read, anything else is wrong.
                    let outcome = match got.map(|entry| entry.value.get::<u64>().unwrap()) {
                        Some(v) if v == i => Outcome::Hit,
                        Some(v) => {
                            assert!(v < i && v % 8 == i % 8, "task {t} read {v} under the key of write {i}");
                            Outcome::Degraded
                        }
                        None => Outcome::Degraded,
                    };
                    if events.send((t, outcome)).is_err() {
                        return;
                    }
                    i += 1;
                }
            })
        })
        .collect();
    drop(events);

    let phase = Duration::from_secs(120);
    tokio::time::timeout(phase, wait_all(&mut outcomes, tasks, Outcome::Hit))
        .await
        .expect("no hits before the restart");

    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.ctl("stop")).await.unwrap().unwrap();
    tokio::time::timeout(phase, wait_all(&mut outcomes, tasks, Outcome::Degraded))
        .await
        .expect("tasks did not degrade to misses");
    let err = tokio::time::timeout(hang, loud.get("t0:0")).await.expect("hang").unwrap_err();
    assert!(err.is_unavailable(), "a non-silent backend reports the outage: {err:?}");
    let errors_while_down = backend.stats().errors;
    assert!(errors_while_down >= tasks as u64, "{:?}", backend.stats());

    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.ctl("start")).await.unwrap().unwrap();
    // The same backend, with its same pool, recovers by itself.
    tokio::time::timeout(phase, wait_all(&mut outcomes, tasks, Outcome::Hit)).await.expect("the pool did not recover");
    assert!(loud.get("t0:0").await.is_ok());

    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("a worker failed");
    }
    drop((backend, loud));
    let cluster = Arc::try_unwrap(cluster).expect("cluster still shared");
    tokio::task::spawn_blocking(move || drop(cluster)).await.unwrap();
}

/// Waits (bounded: 30 s) until `expected` sessions of `application` wait on a lock: the event the
/// server exposes, polled, since PostgreSQL sends no notification for it.
async fn wait_for_lock_waiters(watcher: &mut PgConnection, application: &str, expected: i64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(application)
        .fetch_one(&mut *watcher)
        .await
        .unwrap();
        if waiting == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {waiting} of {expected} {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
