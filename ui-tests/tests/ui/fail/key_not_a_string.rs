use cachestack::cached;

#[cached(key = id)]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
