use cachestack::cached;

#[cached(cache_none = false)]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
