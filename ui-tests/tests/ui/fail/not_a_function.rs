use cachestack::cached;

#[cached]
struct Config {
    ttl: u64,
}

fn main() {}
