use cachestack::cached;

#[cached(ttl = "5m", stale_if_error = "1h", lock = false)]
fn get(id: u64) -> Result<u64, cachestack::Error> {
    Ok(id)
}

fn main() {}
