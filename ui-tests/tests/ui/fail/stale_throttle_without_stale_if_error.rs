use cachestack::cached;

#[cached(ttl = "5m", stale_throttle = "30s")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
