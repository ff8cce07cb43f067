//! A cached function over Redis. Needs a server; the URL comes from `CACHESTACK_TEST_REDIS_URL`
//! (set by `tests/run-all.sh`), else `redis://127.0.0.1:6379/9`.
//!
//! ```text
//! cargo run -p cachestack-examples --features redis --example redis
//! ```

#[tokio::main]
async fn main() -> Result<(), cachestack::Error> {
    let url = cachestack_examples::url_from_env(
        "CACHESTACK_TEST_REDIS_URL",
        "redis://127.0.0.1:6379/9",
        "namespace=cachestack-example",
    );
    cachestack_examples::run_demo(&url).await
}
