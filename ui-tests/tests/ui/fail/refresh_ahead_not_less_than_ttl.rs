use cachestack::cached;

#[cached(ttl = "5m", refresh_ahead = "10m")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
