use cachestack::invalidate;

// One mistake, one message: no second error about the missing `key`.
#[invalidate(keys = "user:<id>")]
fn rename(id: u64) {
    let _ = id;
}

fn main() {}
