use cachestack::cached;

#[cached(tags = [7])]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
