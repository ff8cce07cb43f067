#![deny(unused_must_use)]

use cachestack::cached;

#[cached]
#[must_use = "the price is the point"]
fn price(n: u32) -> u32 {
    n * 2
}

fn main() {
    price(1);
}
