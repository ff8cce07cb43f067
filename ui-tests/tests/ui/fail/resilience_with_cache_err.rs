use cachestack::cached;

#[cached(ttl = "5m", stale_if_error = "1h", cache_err = true)]
fn get(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
