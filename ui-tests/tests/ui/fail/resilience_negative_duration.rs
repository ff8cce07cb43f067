use cachestack::cached;

#[cached(ttl = "5m", stale_if_error = "1h", timeout = "-200ms")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
