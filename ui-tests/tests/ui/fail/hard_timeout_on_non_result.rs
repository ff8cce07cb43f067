use cachestack::cached;

#[cached(ttl = "5m", hard_timeout = "2s")]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
