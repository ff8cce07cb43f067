//! Generated code names primitive types through `::core::primitive`: it compiles in a module
//! where a primitive type name is shadowed.
#![allow(dead_code, non_camel_case_types)]

mod shadowing {
    struct bool;

    #[cachestack::cached(key = "prim:<n>")]
    pub fn plain(n: u32) -> u32 {
        n
    }

    #[cachestack::cached]
    pub async fn asynchronous(n: u32) -> u32 {
        n
    }
}

fn main() {
    assert_eq!(shadowing::plain(1), 1);
    assert!(shadowing::plain_invalidate(&1).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(rt.block_on(shadowing::asynchronous(2)), 2);
    assert!(rt.block_on(shadowing::asynchronous_invalidate(&2)).unwrap());
}
