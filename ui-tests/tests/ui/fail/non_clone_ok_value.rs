use cachestack::cached;

#[derive(serde::Serialize, serde::Deserialize)]
struct Report {
    lines: Vec<String>,
}

#[cached]
async fn report(id: u64) -> Result<Report, std::io::Error> {
    Ok(Report { lines: vec![id.to_string()] })
}

fn main() {}
