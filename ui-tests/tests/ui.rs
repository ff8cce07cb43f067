//! Every misuse of `#[cached]` / `#[invalidate]` is a compile error with a precise message; each
//! case in `ui/fail` holds one mistake and its expected message (`.stderr`). The `ui/pass` cases
//! compile and run every supported shape, and check hygiene.
//!
//! Regenerate the expected output after a deliberate change with `TRYBUILD=overwrite`, then
//! read every changed `.stderr`.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
