use cachestack::cached;

#[cached(key = "user:<id")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
