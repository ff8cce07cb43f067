//! Step 1: parsing the attribute's arguments (`ttl = "5m", key = "user:<id>", ...`) into plain
//! data, every mistake recorded with a span on the offending token.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Ident, Lit, LitBool, LitStr, Path, Token};

use crate::errors::Errors;
use crate::template::Template;

/// `name` or `name = value`.
struct RawArg {
    name: Ident,
    value: Option<Expr>,
}

impl Parse for RawArg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name = input.call(Ident::parse_any)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        Ok(RawArg { name, value })
    }
}

fn parse_raw(tokens: TokenStream) -> syn::Result<Vec<RawArg>> {
    let args = Punctuated::<RawArg, Token![,]>::parse_terminated.parse2(tokens)?;
    Ok(args.into_iter().collect())
}

/// `ttl = ...`.
pub enum Ttl {
    /// A string checked at compile time.
    Fixed(Duration),
    /// An expression of type `Duration`.
    Expr(Expr),
}

/// What to do with cache failures.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Log, count and call through (default).
    Ignore,
    /// Return them as the function's `Err`.
    Propagate,
}

/// Options shared by `#[cached]` and `#[invalidate]`.
#[derive(Default)]
pub struct Common {
    pub cache: Option<LitStr>,
    pub namespace: Option<LitStr>,
    pub version: Option<String>,
    pub on_error: Option<(OnError, Span)>,
    pub krate: Option<Path>,
    pub in_impl: bool,
}

/// Arguments of `#[cached]`.
#[derive(Default)]
pub struct CachedArgs {
    pub ttl: Option<Ttl>,
    pub key: Option<Template>,
    pub condition: Option<Expr>,
    pub lock: Option<bool>,
    pub cache_none: Option<(bool, Span)>,
    pub cache_err: Option<(bool, Span)>,
    pub common: Common,
}

/// Arguments of `#[invalidate]`.
#[derive(Default)]
pub struct InvalidateArgs {
    pub keys: Vec<Template>,
    pub before: bool,
    pub common: Common,
}

const CACHED_ARGS: &[&str] = &[
    "ttl",
    "key",
    "condition",
    "cache",
    "namespace",
    "version",
    "lock",
    "cache_none",
    "cache_err",
    "on_cache_error",
    "crate",
    "in_impl",
];

const INVALIDATE_ARGS: &[&str] =
    &["key", "cache", "namespace", "version", "before", "on_cache_error", "crate", "in_impl"];

/// Parses `#[cached(...)]`'s arguments.
pub fn parse_cached(tokens: TokenStream, errors: &mut Errors) -> CachedArgs {
    let mut out = CachedArgs::default();
    let raw = match parse_raw(tokens) {
        Ok(raw) => raw,
        Err(err) => {
            errors.push(err);
            return out;
        }
    };
    let mut seen: Vec<String> = Vec::new();
    for arg in raw {
        let name = arg.name.unraw().to_string();
        if !CACHED_ARGS.contains(&name.as_str()) {
            errors.push(unknown(&arg.name, "cached", CACHED_ARGS));
            continue;
        }
        if seen.contains(&name) {
            errors.at(arg.name.span(), format!("duplicate attribute `{name}`: give it once"));
            continue;
        }
        seen.push(name.clone());
        match name.as_str() {
            "ttl" => out.ttl = value(&arg, errors, "ttl = \"5m\"").and_then(|v| ttl(v, errors)),
            "key" => out.key = value(&arg, errors, "key = \"user:<id>\"").and_then(|v| template(v, errors)),
            "condition" => out.condition = value(&arg, errors, "condition = |value| ...").cloned(),
            "lock" => out.lock = value(&arg, errors, "lock = false").and_then(|v| boolean(v, errors)),
            "cache_none" => {
                out.cache_none = value(&arg, errors, "cache_none = false")
                    .and_then(|v| boolean(v, errors))
                    .map(|b| (b, arg.name.span()))
            }
            "cache_err" => {
                out.cache_err = value(&arg, errors, "cache_err = true")
                    .and_then(|v| boolean(v, errors))
                    .map(|b| (b, arg.name.span()))
            }
            _ => common(&name, &arg, &mut out.common, errors),
        }
    }
    out
}

/// Parses `#[invalidate(...)]`'s arguments.
pub fn parse_invalidate(tokens: TokenStream, errors: &mut Errors) -> InvalidateArgs {
    let mut out = InvalidateArgs::default();
    let raw = match parse_raw(tokens) {
        Ok(raw) => raw,
        Err(err) => {
            errors.push(err);
            return out;
        }
    };
    let mut seen: Vec<String> = Vec::new();
    let mut key_given = false;
    for arg in raw {
        let name = arg.name.unraw().to_string();
        if !INVALIDATE_ARGS.contains(&name.as_str()) {
            errors.push(unknown(&arg.name, "invalidate", INVALIDATE_ARGS));
            continue;
        }
        if name == "key" {
            key_given = true;
            if let Some(t) = value(&arg, errors, "key = \"user:<id>\"").and_then(|v| template(v, errors)) {
                out.keys.push(t);
            }
            continue;
        }
        if seen.contains(&name) {
            errors.at(arg.name.span(), format!("duplicate attribute `{name}`: give it once"));
            continue;
        }
        seen.push(name.clone());
        match name.as_str() {
            "before" => {
                out.before = value(&arg, errors, "before = true").and_then(|v| boolean(v, errors)).unwrap_or(false)
            }
            _ => common(&name, &arg, &mut out.common, errors),
        }
    }
    if !key_given {
        errors.at(
            Span::call_site(),
            "#[invalidate] needs at least one key to remove, e.g. `#[invalidate(key = \"user:<id>\")]` \
             (give `key` several times to remove several keys)",
        );
    }
    out
}

fn common(name: &str, arg: &RawArg, out: &mut Common, errors: &mut Errors) {
    match name {
        "cache" => {
            out.cache =
                value(arg, errors, "cache = \"users\"").and_then(|v| nonempty_string(v, errors, "cache = \"users\""))
        }
        "namespace" => {
            out.namespace = value(arg, errors, "namespace = \"users\"")
                .and_then(|v| nonempty_string(v, errors, "namespace = \"users\""))
        }
        "version" => out.version = value(arg, errors, "version = 2").and_then(|v| version(v, errors)),
        "on_cache_error" => {
            out.on_error = value(arg, errors, "on_cache_error = \"propagate\"").and_then(|v| on_error(v, errors))
        }
        "crate" => out.krate = value(arg, errors, "crate = ::cachestack").and_then(|v| krate(v, errors)),
        "in_impl" => {
            out.in_impl = match &arg.value {
                None => true,
                Some(v) => boolean(v, errors).unwrap_or(false),
            }
        }
        _ => {}
    }
}

fn unknown(name: &Ident, macro_name: &str, valid: &[&str]) -> syn::Error {
    let given = name.unraw().to_string();
    let list = valid.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ");
    let suggestion = valid
        .iter()
        .map(|v| (edit_distance(&given, v), v))
        .filter(|(d, v)| *d <= 2.max(v.len() / 3))
        .min()
        .map(|(_, v)| format!(" (did you mean `{v}`?)"))
        .unwrap_or_default();
    syn::Error::new(
        name.span(),
        format!("unknown attribute `{given}` for #[{macro_name}]{suggestion}; valid attributes are {list}"),
    )
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb { prev } else { 1 + prev.min(row[j]).min(cur) };
            prev = cur;
        }
    }
    row[b.len()]
}

fn value<'a>(arg: &'a RawArg, errors: &mut Errors, example: &str) -> Option<&'a Expr> {
    if arg.value.is_none() {
        errors.at(arg.name.span(), format!("`{}` needs a value, e.g. `{example}`", arg.name.unraw()));
    }
    arg.value.as_ref()
}

fn lit_str(value: &Expr) -> Option<&LitStr> {
    match value {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Some(s),
        _ => None,
    }
}

fn string(value: &Expr, errors: &mut Errors, example: &str) -> Option<LitStr> {
    let found = lit_str(value).cloned();
    if found.is_none() {
        errors.push(syn::Error::new_spanned(value, format!("expected a string literal, e.g. `{example}`")));
    }
    found
}

fn nonempty_string(value: &Expr, errors: &mut Errors, example: &str) -> Option<LitStr> {
    let s = string(value, errors, example)?;
    if s.value().is_empty() {
        errors.at(s.span(), "expected a non-empty string");
        return None;
    }
    Some(s)
}

fn boolean(value: &Expr, errors: &mut Errors) -> Option<bool> {
    match value {
        Expr::Lit(ExprLit { lit: Lit::Bool(LitBool { value, .. }), .. }) => Some(*value),
        other => {
            errors.push(syn::Error::new_spanned(other, "expected `true` or `false`"));
            None
        }
    }
}

fn ttl(value: &Expr, errors: &mut Errors) -> Option<Ttl> {
    let Some(text) = lit_str(value) else { return Some(Ttl::Expr(value.clone())) };
    let source = text.value();
    let example = "write a duration such as \"30s\", \"5m\", \"2h30m\" or \"1d\", or a `Duration` expression";
    match humantime::parse_duration(source.trim()) {
        Ok(d) if d.is_zero() => {
            errors.at(text.span(), format!("invalid TTL {source:?}: a TTL must be greater than zero"));
            None
        }
        Ok(d) => Some(Ttl::Fixed(d)),
        Err(e) => {
            errors.at(text.span(), format!("invalid TTL {source:?}: {e}; {example}"));
            None
        }
    }
}

fn template(value: &Expr, errors: &mut Errors) -> Option<Template> {
    let lit = string(value, errors, "key = \"user:<id>\"")?;
    match Template::parse(&lit) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

fn version(value: &Expr, errors: &mut Errors) -> Option<String> {
    match value {
        Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => Some(i.base10_digits().to_string()),
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) if !s.value().is_empty() => Some(s.value()),
        other => {
            errors.at(other.span(), "expected a version number or a non-empty string, e.g. `version = 2`");
            None
        }
    }
}

fn on_error(value: &Expr, errors: &mut Errors) -> Option<(OnError, Span)> {
    let s = string(value, errors, "on_cache_error = \"propagate\"")?;
    match s.value().as_str() {
        "ignore" => Some((OnError::Ignore, s.span())),
        "propagate" => Some((OnError::Propagate, s.span())),
        other => {
            errors.at(
                s.span(),
                format!("unknown `on_cache_error` mode {other:?}: expected \"ignore\" (the default: log, count and call through) or \"propagate\" (return cache failures as the function's `Err`)"),
            );
            None
        }
    }
}

fn krate(value: &Expr, errors: &mut Errors) -> Option<Path> {
    match value {
        Expr::Path(p) if p.qself.is_none() => Some(p.path.clone()),
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => match s.parse::<Path>() {
            Ok(p) => Some(p),
            Err(_) => {
                errors.at(s.span(), "expected a path to the cachestack crate, e.g. `crate = ::cachestack`");
                None
            }
        },
        other => {
            errors.at(other.span(), "expected a path to the cachestack crate, e.g. `crate = ::cachestack`");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("tll", "ttl"), 1);
        assert_eq!(edit_distance("ttl", "ttl"), 0);
        assert_eq!(edit_distance("namesapce", "namespace"), 2);
    }
}
