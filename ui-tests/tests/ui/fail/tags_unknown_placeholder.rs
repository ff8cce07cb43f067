use cachestack::cached;

#[cached(tags = ["user:<uid>"])]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
