use cachestack::cached;

#[derive(serde::Serialize, serde::Deserialize)]
struct Report {
    lines: Vec<String>,
}

#[cached]
fn report(id: u64) -> Report {
    Report { lines: vec![id.to_string()] }
}

fn main() {}
