use cachestack::cached;

#[cached(ttl)]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
