use cachestack::invalidate;

#[invalidate(pattern = r"user:\<id>:*")]
fn rename(id: u64) {
    let _ = id;
}

#[invalidate(pattern = r"user:<id>:\")]
fn rename_all(id: u64) {
    let _ = id;
}

fn main() {}
