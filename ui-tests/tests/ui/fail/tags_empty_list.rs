use cachestack::cached;

#[cached(tags = [])]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
