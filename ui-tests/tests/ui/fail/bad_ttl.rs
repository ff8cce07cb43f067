use cachestack::cached;

#[cached(ttl = "5 parsecs")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
