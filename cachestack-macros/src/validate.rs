//! Step 3: checking. Turns the parsed arguments and function into the [`crate::model`], and is
//! the one place that lists what the macros reject.
//!
//! Rejected while parsing ([`crate::parse`], [`crate::template`]), each at the offending token:
//! - an unknown argument (with the valid ones and the closest one), a repeated one (`key` of
//!   `#[invalidate]` excepted), a literal or a path where a `name = value` belongs;
//! - a missing value (`ttl` alone), a value in parentheses (`ttl("5m")`), a value of the wrong
//!   kind: not a string literal (`key`, `cache`, `namespace`, `on_cache_error`), not `true` or
//!   `false`, not a path (`crate`), not a number or non-empty string (`version`);
//! - a `ttl` string that is not a duration, an unknown `on_cache_error` mode, a `lock` that is
//!   neither `true`, `false` nor `"distributed"` (the valid modes listed);
//! - a key template with an unclosed `<`, an empty placeholder, or one that is not a parameter
//!   name followed by field names or tuple indices.
//!
//! Rejected here:
//! - a `ttl` of zero, an empty `cache` or `namespace`, an `#[invalidate]` without `key` (unless
//!   an unknown argument was a misspelled `key`, already reported);
//! - a `const fn`, a variadic function, a function without a body;
//! - for `#[cached]`: `&mut self`, `&mut` arguments, a reference or `impl Trait` return type;
//! - a placeholder that names no parameter, or `self` in a function without a receiver;
//! - the resilience options (see `validate_resilience`): a zero duration, a `refresh_ahead` or
//!   `jitter` outside (0%, 100%) or a `refresh_ahead` duration not less than a literal `ttl`,
//!   `stale_if_error` / `stale_while_revalidate` / `refresh_ahead` / `jitter` without `ttl`,
//!   `stale_throttle` or `timeout` without `stale_if_error`, `lock_lease` without
//!   `lock = "distributed"`, `timeout` not less than
//!   `hard_timeout`; any of them with `lock = false`, `cache_err = true` or
//!   `on_cache_error = "propagate"`; and, for the options whose body runs after the caller
//!   returned (`stale_while_revalidate`, `refresh_ahead`, `timeout`, and `hard_timeout` of a
//!   synchronous function), a borrowed receiver (`&self`), a reference argument or a lifetime.
//!
//! Left to the compiler, through assertions in the expansion that carry the user's spans (see
//! `cachestack::__private`): a return type that is not cacheable, `cache_none` without an
//! `Option` return, `cache_err` or `on_cache_error = "propagate"` without a `Result` return or
//! with an error type lacking `From<cachestack::Error>`, `hard_timeout` without a `Result` return
//! or with an error type lacking `From<cachestack::Timeout>`, an argument cloned into a background
//! computation that is not `Clone + Send + 'static`, a `condition` that captures variables (with
//! resilience options it must be a function pointer), a placeholder without `Display` or
//! naming a missing field, a default-key argument without `Debug`, a `condition` or `ttl`
//! expression of the wrong type.
//!
//! Argument mistakes do not stop the expansion: the argument is left out (its default applies)
//! and the function is still generated, so one mistake gives one message.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, ToTokens};
use syn::{FnArg, LitStr, Pat, Receiver, ReturnType, Type};

use crate::errors::Errors;
use crate::model::{Cached, Common, Function, Invalidate, Param, Ttl};
use crate::parse::{self, Arg, CachedAttr, CommonAttr, Func, InvalidateAttr};
use crate::template::{Piece, Template};
use crate::validate_resilience as resilience;

/// Checks `#[cached]` on `func`; `None` when the function cannot be wrapped.
pub fn cached(func: &Func, mut attr: CachedAttr, errors: &mut Errors) -> Option<Cached> {
    let ttl_given = attr.ttl.is_some();
    let ttl = value(attr.ttl, errors).and_then(|t| ttl(t, errors));
    let key = value(attr.key, errors);
    let condition = value(attr.condition, errors);
    let lock = named(attr.lock, errors);
    let cache_none = named(attr.cache_none, errors);
    let cache_err = named(attr.cache_err, errors);
    let distributed = lock.and_then(|(lock, span)| (lock == parse::Lock::Distributed).then_some(span));
    let tags_span = attr.tags.as_ref().map(|arg| arg.name);
    let tags = value(attr.tags, errors).map(|list| list.0).unwrap_or_default();
    let options = std::mem::take(&mut attr.common.more);
    let mut resilience = resilience::options(options, distributed, ttl.as_ref(), ttl_given, errors);
    if let (None, Some(span)) = (&resilience, tags_span) {
        // Tagged values go through the resilience engine, which stamps their write time before
        // the body runs (and never serves a stale value of an invalidated tag).
        resilience = Some((crate::model::Resilience::default(), resilience::Given::tags(span)));
    }
    let (common, in_impl) = common(attr.common, errors);
    let func = function(func, Purpose::Cached, in_impl, errors)?;
    let key = key.filter(|template| placeholders(&func, template, errors));
    let tags = tag_templates(&func, tags, errors);
    let resilience = resilience.and_then(|(resilience, given)| {
        let lock = lock.map(|(lock, span)| (lock != parse::Lock::Off, span));
        let conflicts = resilience::Conflicts { lock, cache_err, propagate: common.propagate() };
        resilience::applies(resilience, &given, conflicts, &func, errors)
    });
    let lock = lock.is_none_or(|(lock, _)| lock != parse::Lock::Off);
    Some(Cached { func, ttl, key, condition, lock, cache_none, cache_err, resilience, tags, common })
}

/// The tag templates whose placeholders all name parameters (the others reported).
fn tag_templates(func: &Function, tags: Vec<Template>, errors: &mut Errors) -> Vec<Template> {
    tags.into_iter().filter(|template| placeholders(func, template, errors)).collect()
}

/// Checks `#[invalidate]` on `func`; `None` when there is nothing to generate.
pub fn invalidate(func: &Func, attr: InvalidateAttr, errors: &mut Errors) -> Option<Invalidate> {
    let tags_given = attr.tags.is_some();
    let tags = value(attr.tags, errors).map(|list| list.0).unwrap_or_default();
    let given = !attr.key.is_empty() || !attr.pattern.is_empty() || attr.key_misspelled || tags_given;
    let patterns = !attr.pattern.is_empty();
    if patterns && !attr.key.is_empty() {
        errors.at(
            attr.pattern[0].name,
            "#[invalidate] takes either `key` or `pattern`, not both: use two `#[invalidate]` attributes \
             (a key is removed as it is; a pattern removes every key it matches)",
        );
        return None;
    }
    let args = if patterns { attr.pattern } else { attr.key };
    let keys: Vec<Template> = args.into_iter().filter_map(|arg| errors.take(arg.value)).collect();
    let before = value(attr.before, errors).unwrap_or(false);
    let (common, in_impl) = common(attr.common, errors);
    if !given {
        errors.at(
            Span::call_site(),
            "#[invalidate] needs at least one key to remove, e.g. `#[invalidate(key = \"user:<id>\")]` \
             or `#[invalidate(pattern = \"user:<id>:*\")]` (give `key` or `pattern` several times to remove more), \
             or tags to invalidate, e.g. `#[invalidate(tags = [\"user:<id>\"])]`",
        );
    }
    let func = function(func, Purpose::Invalidate, in_impl, errors)?;
    let keys: Vec<Template> = keys
        .into_iter()
        .filter(|template| placeholders(&func, template, errors) && (!patterns || pattern_escapes(template, errors)))
        .collect();
    let tags = tag_templates(&func, tags, errors);
    (!keys.is_empty() || !tags.is_empty()).then_some(Invalidate { func, keys, patterns, tags, before, common })
}

/// Checks a pattern's literal text: a `\` escapes the next character of the text, so one may
/// not end the pattern or stand before a placeholder (whose value is escaped already).
fn pattern_escapes(template: &Template, errors: &mut Errors) -> bool {
    let mut ok = true;
    let mut pieces = template.pieces.iter().peekable();
    while let Some(piece) = pieces.next() {
        let Piece::Text(text) = piece else { continue };
        if text.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1 {
            let (span, what) = match pieces.peek() {
                Some(Piece::Place(place)) => {
                    (place.at.span, format!("placeholder `<{}>`{}", place.text, place.at.suffix()))
                }
                _ => (Span::call_site(), "the end of the pattern".to_string()),
            };
            errors.at(span, format!("a lone `\\` before {what} escapes nothing: write `\\\\` for a literal backslash"));
            ok = false;
        }
    }
    ok
}

/// The value of an argument that was given and could be read.
pub(crate) fn value<T>(arg: Option<Arg<T>>, errors: &mut Errors) -> Option<T> {
    errors.take(arg?.value)
}

/// The same, with the span of the argument's name.
pub(crate) fn named<T>(arg: Option<Arg<T>>, errors: &mut Errors) -> Option<(T, Span)> {
    let arg = arg?;
    errors.take(arg.value).map(|v| (v, arg.name))
}

fn ttl(ttl: parse::Ttl, errors: &mut Errors) -> Option<Ttl> {
    match ttl {
        parse::Ttl::Text(lit, duration) if duration.is_zero() => {
            let message = format!("invalid TTL {:?}: a TTL must be greater than zero", lit.value());
            errors.at(lit.span(), message);
            None
        }
        parse::Ttl::Text(_, duration) => Some(Ttl::Fixed(duration)),
        parse::Ttl::Expr(expr) => Some(Ttl::Expr(expr)),
    }
}

/// The shared options, and whether `in_impl` was given.
fn common<X>(attr: CommonAttr<X>, errors: &mut Errors) -> (Common, bool) {
    let cache = value(attr.cache, errors).and_then(|s| non_empty(s, errors));
    let namespace = value(attr.namespace, errors).and_then(|s| non_empty(s, errors));
    let version = value(attr.version, errors).map(|v| v.0);
    let on_error = value(attr.on_cache_error, errors).map(|o| (o.0, o.1));
    let krate = value(attr.krate, errors);
    let in_impl = value(attr.in_impl, errors).is_some_and(|i| i.0);
    (Common { cache, namespace, version, on_error, krate }, in_impl)
}

fn non_empty(s: LitStr, errors: &mut Errors) -> Option<LitStr> {
    if s.value().is_empty() {
        errors.at(s.span(), "expected a non-empty string");
        return None;
    }
    Some(s)
}

/// What the function is checked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Cached,
    Invalidate,
}

impl Purpose {
    fn attr(self) -> &'static str {
        match self {
            Purpose::Cached => "#[cached]",
            Purpose::Invalidate => "#[invalidate]",
        }
    }
}

/// Checks the function; `None` (with errors recorded) when it cannot be expanded.
fn function(func: &Func, purpose: Purpose, in_impl: bool, errors: &mut Errors) -> Option<Function> {
    let mut ok = signature(func, purpose, errors);
    let (receiver, params, params_ok) = parameters(func, purpose, errors);
    let output = match &func.sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    ok &= params_ok;
    if purpose == Purpose::Cached {
        ok &= cacheable_output(&output, errors);
    }
    let in_impl = in_impl || receiver.is_some() || find_ident(func.sig.to_token_stream(), "Self").is_some();
    let body = func.body.clone()?;
    ok.then(|| Function {
        attrs: func.attrs.clone(),
        vis: func.vis.clone(),
        sig: func.sig.clone(),
        body,
        receiver,
        params,
        output,
        in_impl,
    })
}

/// A function the macros can wrap: not `const`, not variadic, with a body.
fn signature(func: &Func, purpose: Purpose, errors: &mut Errors) -> bool {
    let attr = purpose.attr();
    let mut ok = true;
    if let Some(constness) = &func.sig.constness {
        errors.at(
            constness.span,
            format!("{attr} cannot be used on a `const fn`: it reads and writes a cache at run time, which a `const fn` cannot do"),
        );
        ok = false;
    }
    if let Some(variadic) = &func.sig.variadic {
        errors.at(variadic.dots.spans[0], format!("{attr} does not support variadic functions"));
        ok = false;
    }
    if func.body.is_none() {
        errors.push(syn::Error::new_spanned(
            &func.sig,
            format!("{attr} needs a function with a body to wrap; on a trait method declaration, put it on the method in the `impl` instead"),
        ));
        ok = false;
    }
    ok
}

/// The receiver and parameters, and whether they are acceptable (`#[cached]` rejects `&mut`).
fn parameters(func: &Func, purpose: Purpose, errors: &mut Errors) -> (Option<Receiver>, Vec<Param>, bool) {
    let mut ok = true;
    let mut receiver = None;
    let mut params = Vec::new();
    for (index, input) in func.sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(r) => {
                if purpose == Purpose::Cached {
                    ok &= receiver_not_mut(r, errors);
                }
                receiver = Some(r.clone());
            }
            FnArg::Typed(typed) => {
                if purpose == Purpose::Cached {
                    ok &= argument_not_mut(&typed.ty, errors);
                }
                params.push(param(index, typed));
            }
        }
    }
    (receiver, params, ok)
}

fn param(index: usize, typed: &syn::PatType) -> Param {
    let (name, named, mutable, pattern) = match &*typed.pat {
        Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
            (p.ident.clone(), true, p.mutability.is_some(), None)
        }
        other => (format_ident!("__cachestack_arg{}", index), false, false, Some(other.clone())),
    };
    Param {
        attrs: typed.attrs.clone(),
        name,
        named,
        mutable,
        pattern,
        ty: (*typed.ty).clone(),
        by_ref: matches!(&*typed.ty, Type::Reference(_)),
    }
}

fn receiver_not_mut(r: &Receiver, errors: &mut Errors) -> bool {
    let mutable = if r.reference.is_some() && r.mutability.is_some() {
        Some(r.to_token_stream())
    } else {
        find_mut_ref(r.ty.to_token_stream())
    };
    let Some(tokens) = mutable else { return true };
    errors.push(syn::Error::new_spanned(
        tokens,
        "#[cached] cannot take `&mut self`: on a hit the body does not run, so its changes to `self` would silently not happen",
    ));
    false
}

fn argument_not_mut(ty: &Type, errors: &mut Errors) -> bool {
    let mutable = match ty {
        Type::Reference(r) if r.mutability.is_some() => Some(ty.to_token_stream()),
        other => find_mut_ref(other.to_token_stream()),
    };
    let Some(tokens) = mutable else { return true };
    errors.push(syn::Error::new_spanned(
        tokens,
        "#[cached] cannot take `&mut` arguments: on a hit the body does not run, so its changes through this reference would silently not happen",
    ));
    false
}

/// A return type a cache can hold: no reference, no `impl Trait`.
fn cacheable_output(output: &Type, errors: &mut Errors) -> bool {
    let mut ok = true;
    if let Some(reference) = returned_reference(output) {
        errors.push(syn::Error::new_spanned(
            reference,
            "#[cached] cannot return a reference: a hit hands out an owned clone of the cached value; return an owned type (`String` for `&str`, `Vec<T>` for `&[T]`, `Arc<T>` to share)",
        ));
        ok = false;
    }
    let opaque = match output {
        Type::ImplTrait(_) => Some(output.to_token_stream()),
        other => find_ident(other.to_token_stream(), "impl").map(|span| quote::quote_spanned!(span=> impl)),
    };
    if let Some(tokens) = opaque {
        errors.push(syn::Error::new_spanned(
            tokens,
            "#[cached] needs a return type it can name: an `impl Trait` value cannot be stored in a cache or read back",
        ));
        ok = false;
    }
    ok
}

/// Checks a key template against the parameters: every placeholder must name a parameter (or
/// `self` in a method). Returns false (with errors recorded) when one does not.
fn placeholders(func: &Function, template: &Template, errors: &mut Errors) -> bool {
    let mut ok = true;
    for place in template.placeholders() {
        let (at, fn_name) = (place.at.suffix(), &func.sig.ident);
        if place.root == "self" {
            if func.receiver.is_none() {
                let message =
                    format!("placeholder `<{}>`{at} names `self`, but `{fn_name}` has no `self` parameter", place.text);
                errors.at(place.at.span, message);
                ok = false;
            }
        } else if func.named_param(&place.root).is_none() {
            let message = format!("placeholder `<{}>`{at} names no parameter: {}", place.text, known_names(func));
            errors.at(place.at.span, message);
            ok = false;
        }
    }
    ok
}

/// "the parameters of `f` are `self`, `id`", for messages.
fn known_names(func: &Function) -> String {
    let names: Vec<String> = func
        .receiver
        .iter()
        .map(|_| "`self`".to_string())
        .chain(func.params.iter().filter(|p| p.named).map(|p| format!("`{}`", p.name)))
        .collect();
    if names.is_empty() {
        format!("`{}` has no parameters", func.sig.ident)
    } else {
        format!("the parameters of `{}` are {}", func.sig.ident, names.join(", "))
    }
}

/// A reference return type, at the top or as the value of a `Result` / `Option`.
fn returned_reference(output: &Type) -> Option<&Type> {
    match output {
        Type::Reference(_) => Some(output),
        Type::Paren(p) => returned_reference(&p.elem),
        Type::Path(path) => {
            let last = path.path.segments.last()?;
            if last.ident != "Result" && last.ident != "Option" {
                return None;
            }
            match &last.arguments {
                syn::PathArguments::AngleBracketed(args) => match args.args.first()? {
                    syn::GenericArgument::Type(inner) => returned_reference(inner),
                    _ => None,
                },
                _ => None,
            }
        }
        _ => None,
    }
}

/// The tokens (`&`, `&'a`, or a lifetime `'a`) of the first borrow in `tokens`.
pub(crate) fn find_borrow(tokens: TokenStream) -> Option<TokenStream> {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    for (i, token) in tokens.iter().enumerate() {
        match token {
            TokenTree::Punct(p) if p.as_char() == '&' || p.as_char() == '\'' => {
                let end = (i + 1).min(tokens.len() - 1);
                return Some(tokens[i..=end].iter().cloned().collect());
            }
            TokenTree::Group(g) => {
                if let Some(found) = find_borrow(g.stream()) {
                    return Some(found);
                }
            }
            _ => {}
        }
    }
    None
}

/// The tokens (`&mut`, `&'a mut`) of the first mutable reference in `tokens`.
fn find_mut_ref(tokens: TokenStream) -> Option<TokenStream> {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    for (i, token) in tokens.iter().enumerate() {
        match token {
            TokenTree::Punct(p) if p.as_char() == '&' => {
                let mut j = i + 1;
                if matches!(tokens.get(j), Some(TokenTree::Punct(q)) if q.as_char() == '\'') {
                    j += 2;
                }
                if matches!(tokens.get(j), Some(TokenTree::Ident(id)) if id == "mut") {
                    return Some(tokens[i..=j].iter().cloned().collect());
                }
            }
            TokenTree::Group(g) => {
                if let Some(found) = find_mut_ref(g.stream()) {
                    return Some(found);
                }
            }
            _ => {}
        }
    }
    None
}

/// The span of the first identifier `name` in `tokens`.
pub fn find_ident(tokens: TokenStream, name: &str) -> Option<Span> {
    for token in tokens {
        match token {
            TokenTree::Ident(id) if id == name => return Some(id.span()),
            TokenTree::Group(g) => {
                if let Some(span) = find_ident(g.stream(), name) {
                    return Some(span);
                }
            }
            _ => {}
        }
    }
    None
}
