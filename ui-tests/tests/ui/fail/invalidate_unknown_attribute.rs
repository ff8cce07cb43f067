use cachestack::invalidate;

#[invalidate(key = "user:<id>", after = true)]
fn rename(id: u64) {
    let _ = id;
}

fn main() {}
