use cachestack::cached;

#[cached(ttl = 300)]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
