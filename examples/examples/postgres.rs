//! A cached function over PostgreSQL. Needs a server; the URL comes from `CACHESTACK_TEST_POSTGRES_URL`
//! (set by `tests/run-all.sh`), else `postgres://postgres@127.0.0.1:5432/test`.
//!
//! ```text
//! cargo run -p cachestack-examples --features postgres --example postgres
//! ```

#[tokio::main]
async fn main() -> Result<(), cachestack::Error> {
    let url = cachestack_examples::url_from_env(
        "CACHESTACK_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
        "table=cachestack_example",
    );
    cachestack_examples::run_demo(&url).await
}
