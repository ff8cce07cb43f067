use cachestack::cached;

// Rust cannot point inside a string literal on stable, so the message says where the
// placeholder is.
#[cached(key = "list:<user>:<page>:<sort>")]
fn list(user: u64, page: u32) -> Vec<u64> {
    vec![user, u64::from(page)]
}

fn main() {}
