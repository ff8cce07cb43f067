//! Attributes written on a cached function keep working: lint levels cover the body (which the
//! expansion moves into a helper), `#[expect]` is fulfilled, doc comments, `#[inline]` and
//! `#[must_use]` stay on the function.
#![deny(warnings)]

use cachestack::cached;

/// Doubles.
#[cached]
#[allow(unused_variables, unused_mut)]
#[inline]
#[must_use]
fn allowed(n: u32) -> u32 {
    let mut unused = 1;
    n * 2
}

#[cached]
#[expect(unused_variables)]
fn expected(n: u32) -> u32 {
    let unused = 1;
    n * 3
}

#[cached]
#[allow(unreachable_code)]
async fn allowed_async(n: u32) -> u32 {
    return n;
    n + 1
}

#[cached]
#[cfg_attr(all(), allow(unused_variables))]
fn conditional_lint(n: u32) -> u32 {
    let unused = 1;
    n
}

#[cached]
#[cfg(any())]
fn compiled_out(n: u32) -> u32 {
    does_not_exist(n)
}

struct Thing;

impl Thing {
    #[cached]
    #[allow(clippy::needless_return, unused_variables)]
    fn method(&self, n: u32) -> u32 {
        let unused = 0;
        return n;
    }
}

fn main() {
    assert_eq!(allowed(1), 2);
    assert_eq!(expected(1), 3);
    assert_eq!(Thing.method(4), 4);
    assert_eq!(conditional_lint(6), 6);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(rt.block_on(allowed_async(5)), 5);
}
