use cachestack::cached;

#[cached(cache = "")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
