use cachestack::cached;

#[cached(key = "user:<uid>")]
fn get_user(id: u64, name: String) -> String {
    format!("{id} {name}")
}

fn main() {}
