use cachestack::cached;

#[cached(ttl = "5m", jitter = "10")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
