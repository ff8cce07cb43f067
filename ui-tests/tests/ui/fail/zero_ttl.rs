use cachestack::cached;

#[cached(ttl = "0s")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
