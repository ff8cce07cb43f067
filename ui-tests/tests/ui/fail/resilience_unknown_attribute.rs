use cachestack::cached;

#[cached(ttl = "5m", stale_if_eror = "1h")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
