use cachestack::invalidate;

#[invalidate(pattern = "team:<team>:*")]
fn rename(id: u64) {
    let _ = id;
}

fn main() {}
