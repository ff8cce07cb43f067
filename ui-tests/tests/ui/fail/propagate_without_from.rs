use cachestack::cached;

#[cached(on_cache_error = "propagate")]
fn get(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
