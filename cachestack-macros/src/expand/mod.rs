//! Step 4: code generation, from a checked [`crate::model`]. Every runtime item is named through
//! `<crate>::__private` (default `::cachestack::__private`) or `::core`, so the output compiles
//! whatever the user's scope shadows. Locals the expansion introduces use mixed-site hygiene:
//! user code can neither see nor shadow them.
//!
//! This module holds what both macros use; `cached`, `invalidate` and `key` (the key renderers)
//! the rest.

mod cached;
mod invalidate;
mod key;
mod manifest;
mod resilient;

pub use cached::cached;
pub use invalidate::invalidate;

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{quote, ToTokens};
use syn::spanned::Spanned;
use syn::{Attribute, Ident, Meta, Type};

use crate::model::{Common, Function, Param};

/// Identifiers the expansion introduces.
pub(super) struct Names {
    pub(super) rt: TokenStream,
    pub(super) buf: Ident,
    pub(super) mode: Ident,
    pub(super) site: Ident,
    hit: Ident,
    miss: Ident,
    pub(super) slot: Ident,
    keys: Ident,
    result: Ident,
    err: Ident,
    failed: Ident,
}

impl Names {
    fn new(common: &Common) -> Self {
        let krate = match &common.krate {
            Some(path) => path.to_token_stream(),
            None => quote!(::cachestack),
        };
        let local = |name: &str| Ident::new(name, Span::mixed_site());
        Names {
            rt: quote!(#krate::__private),
            buf: local("__cachestack_buf"),
            mode: local("__cachestack_mode"),
            site: local("__cachestack_site"),
            hit: local("__cachestack_hit"),
            miss: local("__cachestack_miss"),
            slot: local("__CACHESTACK_SLOT"),
            keys: local("__cachestack_keys"),
            result: local("__cachestack_result"),
            err: local("__cachestack_err"),
            failed: local("__cachestack_failed"),
        }
    }
}

/// Gives every token of `tokens` the span `span` (for assertions whose error should point at an
/// option rather than at the type they check).
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(g) = &token {
                let mut group = Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                token = TokenTree::Group(group);
            }
            token.set_span(span);
            token
        })
        .collect()
}

/// `Some("name")` for `cache = "name"`, else `None`.
fn cache_name(common: &Common) -> TokenStream {
    match &common.cache {
        Some(name) => quote!(::core::option::Option::Some(#name)),
        None => quote!(::core::option::Option::None),
    }
}

/// `::<T, U, N>` for the function's own type and const parameters (empty without any).
fn turbofish(func: &Function) -> TokenStream {
    let params: Vec<&Ident> = func
        .sig
        .generics
        .params
        .iter()
        .filter_map(|p| match p {
            syn::GenericParam::Type(t) => Some(&t.ident),
            syn::GenericParam::Const(c) => Some(&c.ident),
            syn::GenericParam::Lifetime(_) => None,
        })
        .collect();
    if params.is_empty() {
        TokenStream::new()
    } else {
        quote!(::<#(#params),*>)
    }
}

/// `Self::name` in an impl block, `name` elsewhere.
fn item_path(func: &Function, name: &Ident) -> TokenStream {
    if func.in_impl {
        quote!(Self::#name)
    } else {
        quote!(#name)
    }
}

fn doc_link(func: &Function) -> String {
    if func.in_impl {
        format!("[`{0}`](Self::{0})", func.sig.ident)
    } else {
        format!("[`{0}`]", func.sig.ident)
    }
}

fn param_decl(p: &Param, keep_mut: bool) -> TokenStream {
    let Param { attrs, name, ty, .. } = p;
    let mutability = (keep_mut && p.mutable).then(|| quote!(mut));
    quote!(#(#attrs)* #mutability #name: #ty)
}

/// Lint levels, which apply to the code of the item they are written on.
const LINT_LEVELS: &[&str] = &["allow", "warn", "deny", "forbid", "expect"];

fn is_lint_level(attr: &Attribute) -> bool {
    attr.path().get_ident().is_some_and(|id| LINT_LEVELS.iter().any(|level| id == level))
}

/// The attributes of the wrapper `#[cached]` generates: the user's (doc comments, `#[inline]`,
/// `#[must_use]`, lint levels...), except that `#[expect(..)]` becomes `#[allow(..)]` there: the
/// body, where the expected lint fires, moves to the inner function.
fn wrapper_attrs(attrs: &[Attribute]) -> Vec<TokenStream> {
    attrs
        .iter()
        .map(|attr| match &attr.meta {
            Meta::List(list) if list.path.is_ident("expect") => {
                let allow = Ident::new("allow", list.path.span());
                let tokens = &list.tokens;
                let pound = attr.pound_token;
                quote!(#pound[#allow(#tokens)])
            }
            _ => attr.to_token_stream(),
        })
        .collect()
}

/// The lint levels written on the function, for the inner function that holds its body.
fn body_lint_attrs(attrs: &[Attribute]) -> Vec<&Attribute> {
    attrs.iter().filter(|attr| is_lint_level(attr)).collect()
}

/// `&T`, with parentheses where `T` has several bounds (`&(impl A + B)`).
fn ref_type(ty: &Type) -> TokenStream {
    let several = match ty {
        Type::ImplTrait(t) => t.bounds.len() > 1,
        Type::TraitObject(t) => t.bounds.len() > 1,
        _ => false,
    };
    if several {
        quote!(&(#ty))
    } else {
        quote!(&#ty)
    }
}

/// Parameters of `<fn>_invalidate` / `<fn>_key`: by reference.
fn ref_param_decl(p: &Param) -> TokenStream {
    let Param { name, ty, .. } = p;
    if p.by_ref {
        quote!(#name: #ty)
    } else {
        let ty = ref_type(ty);
        quote!(#name: #ty)
    }
}

/// Arguments passing `<fn>_invalidate`'s parameters to the key function (which takes `&T`).
fn ref_param_arg(p: &Param) -> TokenStream {
    let name = &p.name;
    if p.by_ref {
        quote!(&#name)
    } else {
        quote!(#name)
    }
}

/// `let <pattern> = __cachestack_argN;` for destructuring parameters, at the top of the body.
fn pattern_lets(func: &Function) -> TokenStream {
    func.params
        .iter()
        .filter_map(|p| {
            let pattern = p.pattern.as_ref()?;
            let name = &p.name;
            Some(quote!(let #pattern = #name;))
        })
        .collect()
}

/// The body as a closure (sync) or an async block; `return` and `?` keep their meaning.
fn body_thunk(func: &Function, annotate: bool, rebind: bool) -> TokenStream {
    let output = &func.output;
    let lets = if rebind { pattern_lets(func) } else { TokenStream::new() };
    let stmts = &func.body.stmts;
    let block = quote!(#(#stmts)*);
    if func.sig.asyncness.is_some() {
        let fake_return = annotate.then(|| {
            quote! {
                #[allow(
                    unreachable_code,
                    clippy::diverging_sub_expression,
                    clippy::empty_loop,
                    clippy::let_unit_value,
                    clippy::needless_return,
                    clippy::unreachable
                )]
                if false {
                    let __cachestack_never: #output = loop {};
                    return __cachestack_never;
                }
            }
        });
        quote!(async move { #fake_return #lets #block })
    } else if annotate {
        quote!(move || -> #output { #lets #block })
    } else {
        quote!(move || { #lets #block })
    }
}
