use cachestack::invalidate;

#[invalidate(key = "user:<id>", pattern = "user:<id>:*")]
fn rename(id: u64) {
    let _ = id;
}

fn main() {}
