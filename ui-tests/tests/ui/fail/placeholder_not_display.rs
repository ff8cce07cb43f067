use cachestack::cached;

#[derive(Debug)]
struct Query {
    text: String,
}

#[cached(key = "search:<query>")]
fn search(query: Query) -> Vec<String> {
    vec![query.text]
}

fn main() {}
