use cachestack::cached;

#[cached(stale_while_revalidate = "30s")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
