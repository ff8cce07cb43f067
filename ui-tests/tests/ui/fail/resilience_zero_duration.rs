use cachestack::cached;

#[cached(ttl = "5m", stale_if_error = "0s")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
