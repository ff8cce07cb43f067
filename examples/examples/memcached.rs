//! A cached function over Memcached. Needs a server; the URL comes from `CACHESTACK_TEST_MEMCACHED_URL`
//! (set by `tests/run-all.sh`), else `memcached://127.0.0.1:11211`.
//!
//! ```text
//! cargo run -p cachestack-examples --features memcached --example memcached
//! ```

#[tokio::main]
async fn main() -> Result<(), cachestack::Error> {
    let url = cachestack_examples::url_from_env(
        "CACHESTACK_TEST_MEMCACHED_URL",
        "memcached://127.0.0.1:11211",
        "namespace=cachestack-example",
    );
    cachestack_examples::run_demo(&url).await
}
