use cachestack::cached;

#[cached(ttl = "5m", hard_timeout = "2s")]
async fn get(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
