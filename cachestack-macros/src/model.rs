//! Step 2: the annotated function, parsed and checked: what the expansion needs to know about
//! its receiver, parameters and return type.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, ToTokens};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Attribute, Block, FnArg, Ident, Pat, Receiver, ReturnType, Signature, Token, Type, Visibility};

use crate::errors::Errors;
use crate::template::Template;

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

/// A function ready to expand.
pub struct Model {
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

/// What the function is checked for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
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

/// Checks `func` for `purpose`; `None` (with errors recorded) when it cannot be expanded.
pub fn analyze(func: &Func, purpose: Purpose, in_impl: bool, errors: &mut Errors) -> Option<Model> {
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
    let body = match &func.body {
        Some(body) => Some(body.clone()),
        None => {
            errors.push(syn::Error::new_spanned(
                &func.sig,
                format!("{attr} needs a function with a body to wrap; on a trait method declaration, put it on the method in the `impl` instead"),
            ));
            ok = false;
            None
        }
    };

    let mut receiver = None;
    let mut params = Vec::new();
    for (index, input) in func.sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(r) => {
                if purpose == Purpose::Cached {
                    let mutable = if r.reference.is_some() && r.mutability.is_some() {
                        Some(r.to_token_stream())
                    } else {
                        find_mut_ref(r.ty.to_token_stream())
                    };
                    if let Some(tokens) = mutable {
                        errors.push(syn::Error::new_spanned(
                            tokens,
                            "#[cached] cannot take `&mut self`: on a hit the body does not run, so its changes to `self` would silently not happen",
                        ));
                        ok = false;
                    }
                }
                receiver = Some(r.clone());
            }
            FnArg::Typed(typed) => {
                if purpose == Purpose::Cached {
                    let mutable = match &*typed.ty {
                        Type::Reference(r) if r.mutability.is_some() => Some(typed.ty.to_token_stream()),
                        other => find_mut_ref(other.to_token_stream()),
                    };
                    if let Some(tokens) = mutable {
                        errors.push(syn::Error::new_spanned(
                            tokens,
                            "#[cached] cannot take `&mut` arguments: on a hit the body does not run, so its changes through this reference would silently not happen",
                        ));
                        ok = false;
                    }
                }
                let by_ref = matches!(&*typed.ty, Type::Reference(_));
                let (name, named, mutable, pattern) = match &*typed.pat {
                    Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
                        (p.ident.clone(), true, p.mutability.is_some(), None)
                    }
                    other => (format_ident!("__cachestack_arg{}", index), false, false, Some(other.clone())),
                };
                params.push(Param {
                    attrs: typed.attrs.clone(),
                    name,
                    named,
                    mutable,
                    pattern,
                    ty: (*typed.ty).clone(),
                    by_ref,
                });
            }
        }
    }

    let output = match &func.sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    if purpose == Purpose::Cached {
        if let Some(reference) = returned_reference(&output) {
            errors.push(syn::Error::new_spanned(
                reference,
                "#[cached] cannot return a reference: a hit hands out an owned clone of the cached value; return an owned type (`String` for `&str`, `Vec<T>` for `&[T]`, `Arc<T>` to share)",
            ));
            ok = false;
        }
        let opaque = match &output {
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
    }

    let in_impl = in_impl || receiver.is_some() || find_ident(func.sig.to_token_stream(), "Self").is_some();
    let body = body?;
    ok.then(|| Model {
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

impl Model {
    /// Checks a key template against the parameters: every placeholder must name a parameter
    /// (or `self` in a method). Returns false (with errors recorded) when it does not.
    pub fn check_template(&self, template: &Template, errors: &mut Errors) -> bool {
        let mut ok = true;
        for place in template.placeholders() {
            if place.root == "self" {
                if self.receiver.is_none() {
                    errors.at(
                        template.lit.span(),
                        format!(
                            "placeholder `<{}>` names `self`, but `{}` has no `self` parameter",
                            place.text, self.sig.ident
                        ),
                    );
                    ok = false;
                }
                continue;
            }
            if self.params.iter().any(|p| p.named && p.name == place.root) {
                continue;
            }
            let names: Vec<String> = self
                .receiver
                .iter()
                .map(|_| "`self`".to_string())
                .chain(self.params.iter().filter(|p| p.named).map(|p| format!("`{}`", p.name)))
                .collect();
            let known = if names.is_empty() {
                format!("`{}` has no parameters", self.sig.ident)
            } else {
                format!("the parameters of `{}` are {}", self.sig.ident, names.join(", "))
            };
            errors.at(template.lit.span(), format!("placeholder `<{}>` names no parameter: {known}", place.text));
            ok = false;
        }
        ok
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

fn first_span(tokens: TokenStream) -> Option<Span> {
    tokens.into_iter().next().map(|t| t.span())
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
fn find_ident(tokens: TokenStream, name: &str) -> Option<Span> {
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
