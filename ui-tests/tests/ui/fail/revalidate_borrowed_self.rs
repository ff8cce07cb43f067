use cachestack::cached;

struct Users;

impl Users {
    #[cached(ttl = "5m", stale_while_revalidate = "30s")]
    async fn get(&self, id: u64) -> String {
        id.to_string()
    }
}

fn main() {}
