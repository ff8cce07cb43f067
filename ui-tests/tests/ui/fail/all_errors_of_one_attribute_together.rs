use cachestack::cached;

#[cached(ttl = "soon", lock = "no", key = "user:<uid>")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
