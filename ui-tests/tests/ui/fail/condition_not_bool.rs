use cachestack::cached;

#[cached(condition = |n: &u64| *n + 1)]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
