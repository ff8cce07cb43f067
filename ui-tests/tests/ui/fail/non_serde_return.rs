use cachestack::cached;

#[derive(Clone)]
struct Report {
    lines: Vec<String>,
}

#[cached]
fn report(id: u64) -> Option<Report> {
    Some(Report { lines: vec![id.to_string()] })
}

fn main() {}
