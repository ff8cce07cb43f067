use cachestack::cached;

#[cached(key = "user:<user id>")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
