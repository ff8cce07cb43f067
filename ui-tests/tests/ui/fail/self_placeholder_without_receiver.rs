use cachestack::cached;

#[cached(key = "tenant:<self.tenant>:<id>")]
fn get(id: u64) -> u64 {
    id
}

fn main() {}
