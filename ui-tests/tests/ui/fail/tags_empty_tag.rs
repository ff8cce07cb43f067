use cachestack::cached;

#[cached(tags = ["user:<id>", ""])]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
