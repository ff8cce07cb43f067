use cachestack::invalidate;

#[invalidate(key = "user:<id>", key = "team:<team>")]
fn rename(id: u64, name: String) -> Result<(), String> {
    let _ = (id, name);
    Ok(())
}

fn main() {}
