use cachestack::invalidate;

#[invalidate(tags = ["user:<uid>"])]
fn rename(id: u64) {
    let _ = id;
}

fn main() {}
