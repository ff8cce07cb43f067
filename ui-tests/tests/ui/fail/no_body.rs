use cachestack::cached;

trait Store {
    #[cached]
    fn load(&self, id: u64) -> String;
}

fn main() {}
