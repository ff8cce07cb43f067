use cachestack::cached;

#[cached(ttl = "5m", refresh_ahead = "100%")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
