//! `lock = ...` of `#[cached]`: `false`, `true` or `"distributed"` (step 1, parsing; see
//! [`crate::parse`]).

use syn::Expr;

use crate::parse::{lit_str, Value};

/// `lock = ...`: who computes a missing key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lock {
    /// `lock = false`: every caller computes.
    Off,
    /// `lock = true` (the default): single flight in this process.
    Process,
    /// `lock = "distributed"`: single flight across the processes sharing the store.
    Distributed,
}

const LOCK_MODES: &str =
    "`lock = false` (no single flight), `lock = true` (single flight in this process, the default) \
     and `lock = \"distributed\"` (single flight across processes, through the store's lock)";

impl Value for Lock {
    fn read(expr: &Expr, name: &str) -> syn::Result<Self> {
        if let Some(text) = lit_str(expr) {
            return match text.value().trim() {
                "distributed" => Ok(Lock::Distributed),
                other => Err(syn::Error::new(
                    text.span(),
                    format!("unknown lock mode {other:?}; valid modes are {LOCK_MODES}"),
                )),
            };
        }
        match bool::read(expr, name) {
            Ok(true) => Ok(Lock::Process),
            Ok(false) => Ok(Lock::Off),
            Err(_) => Err(syn::Error::new_spanned(
                expr,
                format!("expected `true`, `false` or `\"distributed\"`: {LOCK_MODES}"),
            )),
        }
    }
}
