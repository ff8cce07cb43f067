//! Collects every problem found in one macro invocation so they are reported together
//! (serde_derive's `Ctxt`, in miniature).
//!
//! The errors are `syn::Error`s rather than `darling::Error`s: a `syn::Error` made with
//! `new_spanned` keeps the first and the last token of what it points at, so a message about a
//! value of several tokens underlines all of it, where a `darling::Error` keeps one span (the first
//! token, on stable Rust). darling's own errors are converted as they come in.

use proc_macro2::{Span, TokenStream};

/// The errors found so far.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    /// Adds an error (a `syn::Error`, or a `darling::Error` from the attribute parser).
    pub fn push(&mut self, err: impl Into<syn::Error>) {
        let err = err.into();
        match &mut self.0 {
            Some(first) => first.combine(err),
            None => self.0 = Some(err),
        }
    }

    /// Adds an error with `message` at `span`.
    pub fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    /// The value of `result`, or `None` with its error recorded.
    pub fn take<T>(&mut self, result: Result<T, syn::Error>) -> Option<T> {
        result.map_err(|err| self.push(err)).ok()
    }

    /// The errors as `compile_error!` invocations (nothing when there are none).
    pub fn into_compile_errors(self) -> TokenStream {
        self.0.map(|e| e.into_compile_error()).unwrap_or_default()
    }
}
