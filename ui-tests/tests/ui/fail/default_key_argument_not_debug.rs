use cachestack::cached;

struct Filter {
    min: u32,
}

#[cached]
fn count(filter: Filter) -> u32 {
    filter.min
}

fn main() {}
