//! Step 1: parsing. The attribute's arguments (`ttl = "5m", key = "user:<id>", ...`) become the
//! darling structs below and the annotated item a [`Func`]; nothing is checked against anything
//! else yet (that is [`crate::validate`]).
//!
//! Parsing never stops at the first mistake. Unknown and repeated names are reported here, with
//! the valid names and the closest one ("did you mean"); each argument's value is read into an [`Arg`],
//! which keeps either the value or the error explaining why it could not be read, so that one
//! bad value neither hides the mistakes in the others nor stops the expansion.

use std::time::Duration;

use darling::FromMeta;
use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Attribute, Block, Expr, ExprLit, Lit, LitBool, LitStr, Meta, Path, Signature, Token, Visibility};

use crate::errors::Errors;
use crate::model::OnError;
pub use crate::parse_lock::Lock;
use crate::parse_names::arguments;
use crate::template::Template;

/// `#[cached(...)]`'s arguments.
#[derive(Default, FromMeta)]
pub struct CachedAttr {
    pub ttl: Option<Arg<Ttl>>,
    pub key: Option<Arg<Template>>,
    pub condition: Option<Arg<Expr>>,
    pub lock: Option<Arg<Lock>>,
    pub cache_none: Option<Arg<bool>>,
    pub cache_err: Option<Arg<bool>>,
    pub tags: Option<Arg<TagList>>,
    /// The arguments both macros take, and the resilience options in `common.more`.
    #[darling(flatten)]
    pub common: CommonAttr<ResilienceArgs>,
}

/// `#[cached]`'s resilience options (checked by [`crate::validate_resilience`]; `lock =
/// "distributed"` is read from `lock`).
#[derive(Default, FromMeta)]
pub struct ResilienceArgs {
    pub stale_if_error: Option<Arg<DurationText>>,
    pub stale_throttle: Option<Arg<DurationText>>,
    pub stale_while_revalidate: Option<Arg<DurationText>>,
    pub refresh_ahead: Option<Arg<RefreshAheadText>>,
    pub timeout: Option<Arg<DurationText>>,
    pub hard_timeout: Option<Arg<DurationText>>,
    pub jitter: Option<Arg<Percent>>,
    pub lock_timeout: Option<Arg<DurationText>>,
    pub lock_lease: Option<Arg<DurationText>>,
}

/// `#[invalidate(...)]`'s arguments.
#[derive(Default, FromMeta)]
pub struct InvalidateAttr {
    /// `key = "..."`, given once per key to remove.
    #[darling(multiple)]
    pub key: Vec<Arg<Template>>,
    /// `pattern = "user:<id>:*"`, given once per pattern whose keys to remove.
    #[darling(multiple)]
    pub pattern: Vec<Arg<Template>>,
    pub before: Option<Arg<bool>>,
    /// `tags = ["user:<id>"]`: the tags to invalidate.
    pub tags: Option<Arg<TagList>>,
    #[darling(flatten)]
    pub common: CommonAttr,
    /// An unknown argument looked like a misspelled `key` (so a missing `key` is no second
    /// mistake to report).
    #[darling(skip)]
    pub key_misspelled: bool,
}

/// The arguments both macros take, then (`more`) a group of one macro's own: darling flattens
/// one struct into another, so a macro with two groups besides its own fields chains them here.
#[derive(Default, FromMeta)]
pub struct CommonAttr<X = NoMore> {
    pub cache: Option<Arg<LitStr>>,
    pub namespace: Option<Arg<LitStr>>,
    pub version: Option<Arg<Version>>,
    pub on_cache_error: Option<Arg<OnCacheError>>,
    #[darling(rename = "crate")]
    pub krate: Option<Arg<Path>>,
    pub in_impl: Option<Arg<InImpl>>,
    #[darling(flatten)]
    pub more: X,
}

/// No more arguments.
#[derive(Default, FromMeta)]
pub struct NoMore {}

/// What a macro accepts, for the name checks and their messages.
pub struct Spec {
    /// `cached`.
    pub name: &'static str,
    /// The argument names, in the order the documentation lists them.
    pub args: &'static [&'static str],
    /// The names that may be given several times.
    pub repeatable: &'static [&'static str],
}

pub const CACHED: Spec = Spec {
    name: "cached",
    args: &[
        "ttl",
        "key",
        "condition",
        "cache",
        "namespace",
        "version",
        "lock",
        "cache_none",
        "cache_err",
        "stale_if_error",
        "stale_throttle",
        "stale_while_revalidate",
        "refresh_ahead",
        "timeout",
        "hard_timeout",
        "jitter",
        "lock_timeout",
        "lock_lease",
        "tags",
        "on_cache_error",
        "crate",
        "in_impl",
    ],
    repeatable: &[],
};

pub const INVALIDATE: Spec = Spec {
    name: "invalidate",
    args: &["key", "pattern", "tags", "cache", "namespace", "version", "before", "on_cache_error", "crate", "in_impl"],
    repeatable: &["key", "pattern"],
};

/// An example of each argument, for messages.
fn example(name: &str) -> &'static str {
    match name {
        "ttl" => "ttl = \"5m\"",
        "key" => "key = \"user:<id>\"",
        "pattern" => "pattern = \"user:<id>:*\"",
        "condition" => "condition = |value| ...",
        "cache" => "cache = \"users\"",
        "namespace" => "namespace = \"users\"",
        "version" => "version = 2",
        "lock" => "lock = false",
        "cache_none" => "cache_none = false",
        "cache_err" => "cache_err = true",
        "before" => "before = true",
        "stale_if_error" => "stale_if_error = \"1h\"",
        "stale_throttle" => "stale_throttle = \"30s\"",
        "stale_while_revalidate" => "stale_while_revalidate = \"30s\"",
        "refresh_ahead" => "refresh_ahead = \"80%\"",
        "timeout" => "timeout = \"200ms\"",
        "hard_timeout" => "hard_timeout = \"2s\"",
        "jitter" => "jitter = \"10%\"",
        "lock_timeout" => "lock_timeout = \"5s\"",
        "lock_lease" => "lock_lease = \"10s\"",
        "tags" => "tags = [\"user:<id>\"]",
        "on_cache_error" => "on_cache_error = \"propagate\"",
        "crate" => "crate = ::cachestack",
        "in_impl" => "in_impl",
        _ => "name = value",
    }
}

impl CachedAttr {
    /// Parses `#[cached(...)]`'s arguments, recording every mistake.
    pub fn parse(tokens: TokenStream, errors: &mut Errors) -> Self {
        let (items, _) = arguments(tokens, &CACHED, errors);
        Self::from_list(&items).map_err(|e| errors.push(e)).unwrap_or_default()
    }
}

impl InvalidateAttr {
    /// Parses `#[invalidate(...)]`'s arguments, recording every mistake.
    pub fn parse(tokens: TokenStream, errors: &mut Errors) -> Self {
        let (items, suggested) = arguments(tokens, &INVALIDATE, errors);
        let mut attr = Self::from_list(&items).map_err(|e| errors.push(e)).unwrap_or_default();
        attr.key_misspelled = suggested.contains(&"key") || suggested.contains(&"pattern");
        attr
    }
}

/// One argument as written: the span of its name, and its value or why it could not be read.
pub struct Arg<T> {
    /// The span of the argument's name.
    pub name: Span,
    pub value: syn::Result<T>,
}

/// How one argument's value is read.
pub trait Value: Sized {
    /// Reads `name = expr`.
    fn read(expr: &Expr, name: &str) -> syn::Result<Self>;

    /// The value of a bare `name`, for the arguments that may be written so.
    fn word() -> Option<Self> {
        None
    }
}

impl<T: Value> FromMeta for Arg<T> {
    /// Never fails: the outcome is in `value`, so darling goes on with the other arguments.
    fn from_meta(meta: &Meta) -> darling::Result<Self> {
        let name = darling::util::path_to_string(meta.path());
        let needs_value = || format!("`{name}` needs a value, e.g. `{}`", example(&name));
        let value = match meta {
            Meta::NameValue(nv) => T::read(&nv.value, &name),
            Meta::Path(path) => T::word().ok_or_else(|| syn::Error::new_spanned(path, needs_value())),
            Meta::List(list) => Err(syn::Error::new_spanned(
                list,
                format!("`{name}` is written `{name} = value`, e.g. `{}`", example(&name)),
            )),
        };
        Ok(Arg { name: meta.path().span(), value })
    }
}

/// A string literal, also when it comes from a `macro_rules!` fragment (`$name:literal`, passed
/// in an invisible group).
pub(crate) fn lit_str(expr: &Expr) -> Option<&LitStr> {
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Some(s),
        Expr::Group(group) => lit_str(&group.expr),
        _ => None,
    }
}

/// A string literal (`cache`, `namespace`).
impl Value for LitStr {
    fn read(expr: &Expr, name: &str) -> syn::Result<Self> {
        lit_str(expr).cloned().ok_or_else(|| {
            syn::Error::new_spanned(expr, format!("expected a string literal, e.g. `{}`", example(name)))
        })
    }
}

/// `key = "user:<id>"`.
impl Value for Template {
    fn read(expr: &Expr, name: &str) -> syn::Result<Self> {
        Template::parse(&LitStr::read(expr, name)?)
    }
}

/// `tags = ["user:<id>", "org:<org_id>"]`: one or more templates, none empty.
pub struct TagList(pub Vec<Template>);

impl Value for TagList {
    fn read(expr: &Expr, name: &str) -> syn::Result<Self> {
        let array = match expr {
            Expr::Array(array) => array,
            Expr::Group(group) => return TagList::read(&group.expr, name),
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    format!("expected a list of tag templates in brackets, e.g. `{}`", example(name)),
                ))
            }
        };
        if array.elems.is_empty() {
            return Err(syn::Error::new_spanned(
                array,
                format!("`{name}` needs at least one tag, e.g. `{}` (or leave `{name}` out)", example(name)),
            ));
        }
        let mut tags = Vec::with_capacity(array.elems.len());
        let mut failure: Option<syn::Error> = None;
        for elem in &array.elems {
            let read = LitStr::read(elem, name).and_then(|lit| {
                if lit.value().is_empty() {
                    return Err(syn::Error::new(
                        lit.span(),
                        "a tag cannot be empty: write its text, e.g. `\"user:<id>\"`",
                    ));
                }
                Template::parse(&lit)
            });
            match read {
                Ok(template) => tags.push(template),
                Err(err) => match &mut failure {
                    Some(first) => first.combine(err),
                    None => failure = Some(err),
                },
            }
        }
        match failure {
            Some(err) => Err(err),
            None => Ok(TagList(tags)),
        }
    }
}

/// `lock`, `cache_none`, `cache_err`, `before`.
impl Value for bool {
    fn read(expr: &Expr, _: &str) -> syn::Result<Self> {
        match expr {
            Expr::Lit(ExprLit { lit: Lit::Bool(LitBool { value, .. }), .. }) => Ok(*value),
            other => Err(syn::Error::new_spanned(other, "expected `true` or `false`")),
        }
    }
}

/// `condition = |value| ...`: any expression; the compiler checks its type.
impl Value for Expr {
    fn read(expr: &Expr, _: &str) -> syn::Result<Self> {
        Ok(expr.clone())
    }
}

/// `ttl = ...`, as written.
pub enum Ttl {
    /// A string such as `"5m"`, and the duration it reads as (possibly zero).
    Text(LitStr, Duration),
    /// An expression, which the compiler checks is a `Duration`.
    Expr(Expr),
}

impl Value for Ttl {
    fn read(expr: &Expr, _: &str) -> syn::Result<Self> {
        let Some(text) = lit_str(expr) else { return Ok(Ttl::Expr(expr.clone())) };
        let source = text.value();
        humantime::parse_duration(source.trim()).map(|d| Ttl::Text(text.clone(), d)).map_err(|e| {
            syn::Error::new(
                text.span(),
                format!("invalid TTL {source:?}: {e}; write a duration such as \"30s\", \"5m\", \"2h30m\" or \"1d\", or a `Duration` expression"),
            )
        })
    }
}

/// A duration of the resilience options (`stale_if_error = "1h"`, `timeout = "200ms"`...): a
/// string literal, and the duration it reads as (possibly zero).
pub struct DurationText(pub LitStr, pub Duration);

impl Value for DurationText {
    fn read(expr: &Expr, name: &str) -> syn::Result<Self> {
        let text = LitStr::read(expr, name)?;
        read_duration(&text, name).map(|d| DurationText(text, d))
    }
}

fn read_duration(text: &LitStr, name: &str) -> syn::Result<Duration> {
    let source = text.value();
    if source.trim().starts_with('-') {
        let message = format!("invalid `{name}` {source:?}: a duration cannot be negative; write a positive duration such as \"200ms\", \"30s\", \"5m\" or \"1h\"");
        return Err(syn::Error::new(text.span(), message));
    }
    humantime::parse_duration(source.trim()).map_err(|e| {
        syn::Error::new(
            text.span(),
            format!("invalid `{name}` {source:?}: {e}; write a positive duration such as \"200ms\", \"30s\", \"5m\" or \"1h\""),
        )
    })
}

/// `jitter = "10%"`: a string literal and the fraction it reads as (not yet checked).
pub struct Percent(pub LitStr, pub f64);

impl Value for Percent {
    fn read(expr: &Expr, name: &str) -> syn::Result<Self> {
        let text = LitStr::read(expr, name)?;
        read_percent(&text, name).map(|fraction| Percent(text, fraction))
    }
}

/// The fraction `"80%"` stands for; an error unless it is a number followed by `%`.
fn read_percent(text: &LitStr, name: &str) -> syn::Result<f64> {
    let source = text.value();
    let number = source.trim().strip_suffix('%').map(str::trim).and_then(|n| n.parse::<f64>().ok());
    match number {
        Some(percent) if percent.is_finite() => Ok(percent / 100.0),
        _ => Err(syn::Error::new(
            text.span(),
            format!("invalid `{name}` {source:?}: write a percentage such as \"10%\""),
        )),
    }
}

/// `refresh_ahead = "80%"` (a part of the TTL) or `refresh_ahead = "4m"` (a duration).
pub enum RefreshAheadText {
    Percent(Percent),
    After(DurationText),
}

impl Value for RefreshAheadText {
    fn read(expr: &Expr, name: &str) -> syn::Result<Self> {
        let text = LitStr::read(expr, name)?;
        if text.value().trim().ends_with('%') {
            return read_percent(&text, name).map(|fraction| RefreshAheadText::Percent(Percent(text, fraction)));
        }
        read_duration(&text, name).map_err(|_| {
            syn::Error::new(
                text.span(),
                format!(
                    "invalid `refresh_ahead` {:?}: write a part of the TTL such as \"80%\", or a duration such as \"4m\"",
                    text.value()
                ),
            )
        })
        .map(|d| RefreshAheadText::After(DurationText(text, d)))
    }
}

/// `version = 2` or `version = "2024-01"`, as it goes into keys.
pub struct Version(pub String);

impl Value for Version {
    fn read(expr: &Expr, _: &str) -> syn::Result<Self> {
        match expr {
            Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => Ok(Version(i.base10_digits().to_string())),
            Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) if !s.value().is_empty() => Ok(Version(s.value())),
            other => Err(syn::Error::new(
                other.span(),
                "expected a version number or a non-empty string, e.g. `version = 2`",
            )),
        }
    }
}

/// `on_cache_error = "propagate"`, with the span of the string.
pub struct OnCacheError(pub OnError, pub Span);

impl Value for OnCacheError {
    fn read(expr: &Expr, name: &str) -> syn::Result<Self> {
        let s = LitStr::read(expr, name)?;
        match s.value().as_str() {
            "ignore" => Ok(OnCacheError(OnError::Ignore, s.span())),
            "propagate" => Ok(OnCacheError(OnError::Propagate, s.span())),
            other => Err(syn::Error::new(
                s.span(),
                format!("unknown `on_cache_error` mode {other:?}: expected \"ignore\" (the default: log, count and call through) or \"propagate\" (return cache failures as the function's `Err`)"),
            )),
        }
    }
}

/// `crate = ::cachestack` or `crate = "::cachestack"`.
impl Value for Path {
    fn read(expr: &Expr, _: &str) -> syn::Result<Self> {
        const MESSAGE: &str = "expected a path to the cachestack crate, e.g. `crate = ::cachestack`";
        match expr {
            Expr::Path(p) if p.qself.is_none() => Ok(p.path.clone()),
            Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => {
                s.parse::<Path>().map_err(|_| syn::Error::new(s.span(), MESSAGE))
            }
            other => Err(syn::Error::new(other.span(), MESSAGE)),
        }
    }
}

/// `in_impl` (or `in_impl = true`).
pub struct InImpl(pub bool);

impl Value for InImpl {
    fn read(expr: &Expr, name: &str) -> syn::Result<Self> {
        bool::read(expr, name).map(InImpl)
    }

    fn word() -> Option<Self> {
        Some(InImpl(true))
    }
}

/// A function item, with or without a body (a trait method declaration has none).
pub struct Func {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub sig: Signature,
    pub body: Option<Box<Block>>,
    pub semi: Option<Token![;]>,
}

impl Parse for Func {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let sig: Signature = input.parse()?;
        if input.peek(Token![;]) {
            let semi = input.parse()?;
            return Ok(Func { attrs, vis, sig, body: None, semi: Some(semi) });
        }
        let body = input.parse()?;
        Ok(Func { attrs, vis, sig, body: Some(Box::new(body)), semi: None })
    }
}

impl ToTokens for Func {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        for attr in &self.attrs {
            attr.to_tokens(tokens);
        }
        self.vis.to_tokens(tokens);
        self.sig.to_tokens(tokens);
        match &self.body {
            Some(body) => body.to_tokens(tokens),
            None => self.semi.unwrap_or_default().to_tokens(tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(tokens: &str) -> (CachedAttr, String) {
        let mut errors = Errors::default();
        let tokens: TokenStream = tokens.parse().unwrap_or_default();
        let attr = CachedAttr::parse(tokens, &mut errors);
        (attr, errors.into_compile_errors().to_string())
    }

    #[test]
    fn every_listed_argument_reaches_a_field() {
        for spec in [&CACHED, &INVALIDATE] {
            for name in spec.args {
                let mut errors = Errors::default();
                let example = if *name == "condition" { "condition = |v| true" } else { example(name) };
                let (items, _) = arguments(example.parse().unwrap_or_default(), spec, &mut errors);
                let found = match spec.name {
                    "cached" => CachedAttr::from_list(&items).is_ok(),
                    _ => InvalidateAttr::from_list(&items).is_ok(),
                };
                assert!(found, "#[{}] does not accept `{name}`", spec.name);
                assert!(errors.into_compile_errors().is_empty(), "#[{}]: {name}", spec.name);
            }
        }
    }

    fn message<T>(arg: Option<Arg<T>>) -> String {
        arg.and_then(|a| a.value.err()).map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn one_bad_value_keeps_the_others() {
        let (attr, errors) = cached(r#"ttl = "soon", lock = "no", key = "user:<id>", r#namespace = "x""#);
        assert!(errors.is_empty(), "value errors wait for validation: {errors}");
        assert!(message(attr.ttl).contains("invalid TTL"));
        assert!(message(attr.lock).contains("unknown lock mode \"no\"; valid modes are `lock = false`"));
        assert!(attr.key.is_some_and(|k| k.value.is_ok()));
        assert!(attr.common.namespace.is_some_and(|k| k.value.is_ok()));
    }

    #[test]
    fn names_are_checked() {
        let (_, errors) = cached(r#"tll = "5m", ttl = "1m", ttl = "2m", "5m", a::b = 1"#);
        assert!(errors.contains("unknown attribute `tll` for #[cached] (did you mean `ttl`?)"), "{errors}");
        assert!(errors.contains("duplicate attribute `ttl`"), "{errors}");
        assert!(errors.contains("expected an attribute such as"), "{errors}");
    }

    #[test]
    fn values_need_the_name_value_form() {
        let (attr, _) = cached("ttl, lock(false), in_impl");
        assert!(message(attr.ttl).contains("`ttl` needs a value, e.g. `ttl = \"5m\"`"));
        assert!(message(attr.lock).contains("`lock` is written `lock = value`"));
        assert!(attr.common.in_impl.is_some_and(|a| a.value.is_ok_and(|v| v.0)));
    }
}
