use cachestack::cached;

#[cached(ttl = "5m", lock = "distributed", lock_lease = "0s")]
async fn get(id: u64) -> u64 {
    id
}

fn main() {}
