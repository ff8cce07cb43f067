use cachestack::cached;

#[derive(Debug)]
struct Query(u64);

#[cached(ttl = "5m", refresh_ahead = "80%")]
async fn get(query: Query) -> u64 {
    query.0
}

fn main() {}
