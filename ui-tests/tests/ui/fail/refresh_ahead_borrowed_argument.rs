use cachestack::cached;

#[cached(ttl = "5m", refresh_ahead = "80%")]
async fn get(name: &str) -> String {
    name.to_uppercase()
}

fn main() {}
