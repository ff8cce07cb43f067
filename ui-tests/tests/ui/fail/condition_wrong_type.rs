use cachestack::cached;

#[cached(condition = |name: &String| !name.is_empty())]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
