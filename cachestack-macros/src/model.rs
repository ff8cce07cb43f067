//! Step 2: what the expansion works from, built by [`crate::validate`] out of the parsed
//! arguments and function. Everything here has been checked: the expansion never fails.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{Attribute, Block, Expr, Ident, LitStr, Pat, Path, Receiver, Signature, Type, Visibility};

use crate::template::Template;

/// A `#[cached]` function.
pub struct Cached {
    pub func: Function,
    pub ttl: Option<Ttl>,
    /// The key template; `None` for the default key.
    pub key: Option<Template>,
    /// `condition = |value| ...`.
    pub condition: Option<Expr>,
    /// Single flight (`lock = false` turns it off).
    pub lock: bool,
    /// `cache_none = ...`, and the span of the argument's name for the assertion that the
    /// function returns an `Option`.
    pub cache_none: Option<(bool, Span)>,
    /// `cache_err = ...`, with the span of its name (the function must return a `Result`).
    pub cache_err: Option<(bool, Span)>,
    /// The resilience options, when any is given (or `tags`): the calls then go through the
    /// resilience engine.
    pub resilience: Option<Resilience>,
    /// `tags = [...]`: the tag templates every stored value carries (rendered per call, without
    /// the key prefix: tags are shared by every function and cache).
    pub tags: Vec<Template>,
    pub common: Common,
}

/// `stale_if_error`, `stale_while_revalidate`, `refresh_ahead`, the timeouts, `jitter`: checked
/// against each other and against `ttl` (a zero, a part of 100% or more, a soft timeout at or
/// past the hard one are rejected).
#[derive(Default)]
pub struct Resilience {
    pub stale_if_error: Option<Duration>,
    pub stale_throttle: Option<Duration>,
    pub stale_while_revalidate: Option<Duration>,
    pub refresh_ahead: Option<RefreshAhead>,
    pub timeout: Option<Duration>,
    /// With the span of its name, for the check that the return type can carry the timeout.
    pub hard_timeout: Option<(Duration, Span)>,
    /// A fraction of the TTL, strictly between 0 and 1.
    pub jitter: Option<f64>,
    pub lock_timeout: Option<Duration>,
    /// `lock = "distributed"`: single flight across processes.
    pub distributed: bool,
    pub lock_lease: Option<Duration>,
    /// The body must also be runnable after its caller returned (a background refresh, a soft
    /// timeout, a synchronous hard timeout): the arguments are cloned into an owned computation.
    pub owned: bool,
}

/// `refresh_ahead = ...`.
#[derive(Clone, Copy)]
pub enum RefreshAhead {
    /// A fraction of the TTL, strictly between 0 and 1.
    Fraction(f64),
    /// A duration, less than the TTL when the TTL is known.
    After(Duration),
}

/// An `#[invalidate]` function.
pub struct Invalidate {
    pub func: Function,
    /// The keys to remove, or (with `patterns`) the patterns whose keys to remove: at least one.
    pub keys: Vec<Template>,
    /// True when `keys` are glob patterns (`pattern = "user:<id>:*"`): their text is a
    /// [`KeyPattern`](https://docs.rs/cachestack) and placeholder values are escaped in them.
    pub patterns: bool,
    /// `tags = [...]`: the tags to invalidate (with the keys, if any).
    pub tags: Vec<Template>,
    /// Remove them before the body runs instead of after.
    pub before: bool,
    pub common: Common,
}

/// Options shared by `#[cached]` and `#[invalidate]`.
#[derive(Default)]
pub struct Common {
    /// `cache = "name"`, a non-empty name.
    pub cache: Option<LitStr>,
    /// `namespace = "users"`, non-empty.
    pub namespace: Option<LitStr>,
    /// `version = 2`, as written.
    pub version: Option<String>,
    /// `on_cache_error = "..."` and the span of its value.
    pub on_error: Option<(OnError, Span)>,
    /// `crate = path`.
    pub krate: Option<Path>,
}

impl Common {
    /// `"ns:v2:"`: the prefix `namespace` and `version` put in front of every key.
    pub fn key_prefix(&self) -> String {
        let mut prefix = String::new();
        if let Some(ns) = &self.namespace {
            prefix.push_str(&ns.value());
            prefix.push(':');
        }
        if let Some(v) = &self.version {
            prefix.push('v');
            prefix.push_str(v);
            prefix.push(':');
        }
        prefix
    }

    /// The span of `on_cache_error = "propagate"`'s value, when it is given.
    pub fn propagate(&self) -> Option<Span> {
        match self.on_error {
            Some((OnError::Propagate, span)) => Some(span),
            _ => None,
        }
    }
}

/// `ttl = ...`.
pub enum Ttl {
    /// A string checked at compile time, greater than zero.
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

/// The annotated function, ready to expand.
pub struct Function {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub sig: Signature,
    pub body: Box<Block>,
    pub receiver: Option<Receiver>,
    pub params: Vec<Param>,
    /// The declared return type (`()` when there is none).
    pub output: Type,
    /// Generated helpers are associated functions reached through `Self::`.
    pub in_impl: bool,
}

/// One parameter other than the receiver.
pub struct Param {
    pub attrs: Vec<Attribute>,
    /// The name the generated functions give it: the user's identifier, or `__cachestack_argN`
    /// for a destructuring pattern.
    pub name: Ident,
    /// True when `name` is the user's own identifier (templates can name it).
    pub named: bool,
    /// `mut name`.
    pub mutable: bool,
    /// The user's pattern when it is not a plain identifier.
    pub pattern: Option<Pat>,
    pub ty: Type,
    /// The type is a reference (`&T`): companions take it as is instead of adding a `&`.
    pub by_ref: bool,
}

impl Function {
    /// The parameter a template can name `name`.
    pub fn named_param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.named && p.name == name)
    }

    /// The span of the type a cached value has, for the `Cacheable` assertion: the `T` of a
    /// `Result<T, _>` / `Option<T>` return, else the return type.
    pub fn value_span(&self) -> Span {
        if let Type::Path(path) = &self.output {
            if let Some(last) = path.path.segments.last() {
                if last.ident == "Result" || last.ident == "Option" {
                    if let syn::PathArguments::AngleBracketed(args) = &last.arguments {
                        if let Some(syn::GenericArgument::Type(inner)) = args.args.first() {
                            return first_span(inner.to_token_stream()).unwrap_or_else(|| self.output.span());
                        }
                    }
                }
            }
        }
        first_span(self.output.to_token_stream()).unwrap_or_else(|| self.sig.ident.span())
    }
}

fn first_span(tokens: TokenStream) -> Option<Span> {
    tokens.into_iter().next().map(|t| t.span())
}
