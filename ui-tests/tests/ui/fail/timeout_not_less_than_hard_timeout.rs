use cachestack::cached;

#[cached(ttl = "5m", stale_if_error = "1h", timeout = "2s", hard_timeout = "2s")]
fn get(id: u64) -> Result<u64, cachestack::Error> {
    Ok(id)
}

fn main() {}
