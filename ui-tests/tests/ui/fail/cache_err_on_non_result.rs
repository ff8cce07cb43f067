use cachestack::cached;

#[cached(cache_err = true)]
fn get(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
