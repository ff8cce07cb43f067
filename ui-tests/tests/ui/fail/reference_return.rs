use cachestack::cached;

#[cached]
fn label(n: u32) -> &'static str {
    if n > 0 { "positive" } else { "zero" }
}

fn main() {}
