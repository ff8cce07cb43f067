use cachestack::cached;

#[cached(ttl = "5m", hard_timeout = "2s")]
fn get(ids: &[u64]) -> Result<u64, cachestack::Error> {
    Ok(ids.iter().sum())
}

fn main() {}
