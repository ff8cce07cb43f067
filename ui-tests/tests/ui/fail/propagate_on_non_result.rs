use cachestack::cached;

#[cached(on_cache_error = "propagate")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
