use cachestack::cached;

#[cached(ttl = "5m", lock_lease = "2s")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
