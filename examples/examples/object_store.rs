//! Large artefacts cached in S3 under a memory tier. Needs an S3-compatible server; the URL comes
//! from `CACHESTACK_TEST_S3_URL` (set by `tests/run-all.sh`: moto on loopback), else MinIO's
//! default `s3://cachestack-example?endpoint=http://127.0.0.1:9000&allow_http=true` with
//! credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
//!
//! ```text
//! cargo run -p cachestack-examples --features object-store --example object_store
//! ```

use std::time::Instant;

use cachestack::Cache;

#[tokio::main]
async fn main() -> Result<(), cachestack::Error> {
    let s3 = cachestack_examples::url_from_env(
        "CACHESTACK_TEST_S3_URL",
        "s3://cachestack-example?endpoint=http://127.0.0.1:9000&allow_http=true&region=us-east-1",
        "namespace=cachestack-example",
    );
    // The cached function of the other examples, with S3 under memory.
    let url = format!("mem://?max_entries=1000 | {s3}");
    cachestack_examples::run_demo(&url).await?;

    // What object storage is for: an artefact too large for Redis (8 MiB), written once, read by
    // another process (here: a second memory tier over the same bucket).
    let report: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let writer = Cache::from_url(&url)?;
    let started = Instant::now();
    writer.set("report:2026-11", &report, Some(std::time::Duration::from_secs(3600))).await?;
    println!("{:<44} {:>10.1?}", "8 MiB report written through to S3", started.elapsed());
    let reader = Cache::from_url(&url)?;
    let started = Instant::now();
    let read = reader.get::<Vec<u8>>("report:2026-11").await?;
    println!("{:<44} {:>10.1?}", "read by another process (from S3)", started.elapsed());
    let started = Instant::now();
    let again = reader.get::<Vec<u8>>("report:2026-11").await?;
    println!("{:<44} {:>10.1?}", "read again (from its memory tier)", started.elapsed());
    if read.as_ref() != Some(&report) || again.as_ref() != Some(&report) {
        return Err(cachestack::Error::config("the report did not round-trip"));
    }
    writer.delete("report:2026-11").await?;
    Ok(())
}
