use cachestack::cached;

#[cached(ttl = "5m", timeout = "200ms")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
