use cachestack::cached;

#[cached(ttl = "5m", lock = "global")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
