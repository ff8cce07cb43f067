use cachestack::cached;

struct User {
    id: u64,
}

#[cached(key = "user:<user.uid>")]
fn name(user: &User) -> String {
    user.id.to_string()
}

fn main() {}
