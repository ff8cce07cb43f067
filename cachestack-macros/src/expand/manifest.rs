//! The manifest entry each expansion registers (see `cachestack::manifest()`): constant data
//! about the function, submitted through `inventory` from inside a function body of the
//! expansion, so it is linked whether or not the function is ever called.

use proc_macro2::{Delimiter, TokenStream, TokenTree};
use quote::{quote, ToTokens};

use super::{cache_name, Names};
use crate::model::{Cached, Common, Invalidate, OnError, Ttl};
use crate::template::{Piece, Template};

/// The entry of a `#[cached]` function; `state` names its `static` state (in scope).
pub(super) fn cached_entry(model: &Cached, names: &Names, state: &TokenStream) -> TokenStream {
    let mut options = common_options(&model.common);
    if !model.lock {
        options.push(("lock", "false".to_owned()));
    }
    if let Some(resilience) = model.resilience.as_ref().filter(|r| r.distributed) {
        options.push(("lock", "distributed".to_owned()));
        if let Some(lease) = resilience.lock_lease {
            options.push(("lock_lease", humantime::format_duration(lease).to_string()));
        }
    }
    if let Some((value, _)) = model.cache_none {
        options.push(("cache_none", value.to_string()));
    }
    if let Some((value, _)) = model.cache_err {
        options.push(("cache_err", value.to_string()));
    }
    if let Some(condition) = &model.condition {
        options.push(("condition", compact(condition.to_token_stream())));
    }
    let ttl = match &model.ttl {
        None => None,
        Some(Ttl::Fixed(d)) => Some(humantime::format_duration(*d).to_string()),
        Some(Ttl::Expr(e)) => Some(compact(e.to_token_stream())),
    };
    let keys: Vec<String> = model.key.iter().map(template_text).collect();
    let tags: Vec<String> = model.tags.iter().map(template_text).collect();
    entry(
        names,
        quote!(Cached),
        &model.func.sig.ident,
        &keys,
        &tags,
        ttl,
        &options,
        &model.common,
        quote!(::core::option::Option::Some(&#state)),
    )
}

/// The entry of an `#[invalidate]` function.
pub(super) fn invalidate_entry(model: &Invalidate, names: &Names) -> TokenStream {
    let mut options = common_options(&model.common);
    if model.patterns {
        options.push(("pattern", "true".to_owned()));
    }
    if model.before {
        options.push(("before", "true".to_owned()));
    }
    let keys: Vec<String> = model.keys.iter().map(template_text).collect();
    let tags: Vec<String> = model.tags.iter().map(template_text).collect();
    entry(
        names,
        quote!(Invalidate),
        &model.func.sig.ident,
        &keys,
        &tags,
        None,
        &options,
        &model.common,
        quote!(::core::option::Option::None),
    )
}

#[allow(clippy::too_many_arguments)]
fn entry(
    names: &Names,
    kind: TokenStream,
    ident: &syn::Ident,
    keys: &[String],
    tags: &[String],
    ttl: Option<String>,
    options: &[(&str, String)],
    common: &Common,
    state: TokenStream,
) -> TokenStream {
    let rt = &names.rt;
    let name = ident.to_string();
    let ttl = match ttl {
        Some(ttl) => quote!(::core::option::Option::Some(#ttl)),
        None => quote!(::core::option::Option::None),
    };
    let options = options.iter().map(|(name, value)| quote!((#name, #value)));
    let cache = cache_name(common);
    quote! {
        #rt::inventory::submit! {
            #rt::ManifestEntry {
                kind: #rt::FnKind::#kind,
                module: ::core::module_path!(),
                name: #name,
                keys: &[#(#keys),*],
                ttl: #ttl,
                options: &[#(#options),*],
                cache: #cache,
                tags: &[#(#tags),*],
                state: #state,
            }
        }
    }
}

/// `namespace`, `version` and `on_cache_error`, as written.
fn common_options(common: &Common) -> Vec<(&'static str, String)> {
    let mut options = Vec::new();
    if let Some(ns) = &common.namespace {
        options.push(("namespace", ns.value()));
    }
    if let Some(version) = &common.version {
        options.push(("version", version.clone()));
    }
    if let Some((on_error, _)) = common.on_error {
        let value = match on_error {
            OnError::Ignore => "ignore",
            OnError::Propagate => "propagate",
        };
        options.push(("on_cache_error", value.to_owned()));
    }
    options
}

/// A template as the user wrote it (`user:<id>`, `<<` for a literal `<`).
fn template_text(template: &Template) -> String {
    let mut text = String::new();
    for piece in &template.pieces {
        match piece {
            Piece::Text(t) => text.push_str(&t.replace('<', "<<")),
            Piece::Place(p) => {
                text.push('<');
                text.push_str(&p.text);
                text.push('>');
            }
        }
    }
    text
}

/// An expression as text, with a space only between two words (`Duration::from_secs(90)`, not
/// `Duration :: from_secs (90)` as `TokenStream::to_string` spaces it).
fn compact(tokens: TokenStream) -> String {
    fn walk(tokens: TokenStream, out: &mut String, word_before: &mut bool) {
        for token in tokens {
            match token {
                TokenTree::Group(group) => {
                    let (open, close) = match group.delimiter() {
                        Delimiter::Parenthesis => ("(", ")"),
                        Delimiter::Bracket => ("[", "]"),
                        Delimiter::Brace => ("{ ", " }"),
                        Delimiter::None => ("", ""),
                    };
                    out.push_str(open);
                    *word_before = false;
                    walk(group.stream(), out, word_before);
                    out.push_str(close);
                    *word_before = false;
                }
                TokenTree::Punct(punct) => {
                    out.push(punct.as_char());
                    *word_before = false;
                }
                word => {
                    if *word_before {
                        out.push(' ');
                    }
                    out.push_str(&word.to_string());
                    *word_before = true;
                }
            }
        }
    }
    let mut out = String::new();
    walk(tokens, &mut out, &mut false);
    out
}
