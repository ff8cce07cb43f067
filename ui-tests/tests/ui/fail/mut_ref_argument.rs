use cachestack::cached;

#[cached]
fn fill(buffer: &mut Vec<u8>, n: u8) -> usize {
    buffer.push(n);
    buffer.len()
}

fn main() {}
