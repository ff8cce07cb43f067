use cachestack::cached;

#[cached(ttl = "5m", lock = "distributed", on_cache_error = "propagate")]
fn get(id: u64) -> Result<u64, cachestack::Error> {
    Ok(id)
}

fn main() {}
