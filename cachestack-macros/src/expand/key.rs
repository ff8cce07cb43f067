//! Key rendering: statements that append a key to the buffer `buf`, from a template or (for
//! `#[cached]` without `key`) the default key `[prefix]<path>::<fn>[::<T,...>](<arg>,...)`.

use proc_macro2::{Delimiter, Group, Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::{Ident, Member};

use super::{respan, Names};
use crate::model::Function;
use crate::template::{Piece, Placeholder, Template};

/// How a template reaches the parameters it names.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// In the generated key function, whose parameters are references to the arguments.
    ByReference,
    /// In the function itself (`#[invalidate]`), where the parameters are in scope as they are.
    Direct,
}

/// Statements appending a template's rendering to `buf`. Placeholder expressions carry the
/// placeholder's span (the template's, on stable Rust), so a missing field or a missing
/// `Display` points there, and they name the parameter's own type (`User`, not `&&User`) in
/// those messages.
pub(super) fn template_body(
    template: &Template,
    prefix: &str,
    names: &Names,
    func: &Function,
    access: Access,
) -> TokenStream {
    render(template, prefix.to_string(), names, func, access, false)
}

/// Statements appending a pattern's rendering (`#[invalidate(pattern = ...)]`) to `buf`: as
/// [`template_body`], but the prefix and the placeholder values are glob-escaped, so that they
/// match only themselves; the template's own text is the pattern.
pub(super) fn pattern_body(template: &Template, prefix: &str, names: &Names, func: &Function) -> TokenStream {
    let mut escaped = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    render(template, escaped, names, func, Access::Direct, true)
}

fn render(
    template: &Template,
    prefix: String,
    names: &Names,
    func: &Function,
    access: Access,
    pattern: bool,
) -> TokenStream {
    let Names { rt, buf, .. } = names;
    let mut out = quote! {
        #[allow(unused_imports)]
        use #rt::{KeyAny as _, KeyFast as _};
    };
    let mut text = prefix;
    for piece in &template.pieces {
        match piece {
            Piece::Text(t) => text.push_str(t),
            Piece::Place(place) => {
                if !text.is_empty() {
                    out.extend(quote!(#buf.push_str(#text);));
                    text.clear();
                }
                let value = placeholder_value(place, func, access);
                let push = probe_call(rt, value, "__cachestack_push_part", buf, place.at.span);
                out.extend(if pattern { quote!(#rt::push_pattern_part(#buf, |#buf| { #push });) } else { push });
            }
        }
    }
    if !text.is_empty() {
        out.extend(quote!(#buf.push_str(#text);));
    }
    out
}

/// A reference to the value a placeholder names.
fn placeholder_value(place: &Placeholder, func: &Function, access: Access) -> TokenStream {
    let span = place.at.span;
    // An expression of the parameter's declared type.
    let (root, root_is_ref) = if place.root == "self" {
        let this = quote_spanned!(span=> self);
        match access {
            Access::ByReference => (quote_spanned!(span=> (*#this)), false),
            Access::Direct => (this, true),
        }
    } else {
        let ident = Ident::new(&place.root, span);
        let by_ref = func.named_param(&place.root).is_some_and(|p| p.by_ref);
        match access {
            Access::ByReference => (quote_spanned!(span=> (*#ident)), by_ref),
            Access::Direct => (ident.into_token_stream(), by_ref),
        }
    };
    if place.members.is_empty() {
        return if root_is_ref { root } else { quote_spanned!(span=> &#root) };
    }
    // Located on the template but marked as generated, so rustc does not suggest edits to the
    // template's text for a mistyped field.
    let member_span = Span::call_site().located_at(span);
    let members = place.members.iter().map(|m| match m {
        Member::Named(id) => Member::Named(Ident::new(&id.to_string(), member_span)),
        Member::Unnamed(index) => Member::Unnamed(syn::Index { index: index.index, span: member_span }),
    });
    quote_spanned!(span=> &(#root #(.#members)*))
}

/// `(&&KeyProbe(value)).method(buf);`, spanned on `span` (the template, or the parameter) so that
/// a missing `Display` / `Debug` is reported there. The probe picks the integer and string fast
/// path when it applies, the general `Display` / `Debug` path otherwise.
fn probe_call(rt: &TokenStream, value: TokenStream, method: &str, buf: &Ident, span: Span) -> TokenStream {
    let head = respan(quote!(&&#rt::KeyProbe), span);
    let mut args = Group::new(Delimiter::Parenthesis, value);
    args.set_span(span);
    let mut probe = Group::new(Delimiter::Parenthesis, quote!(#head #args));
    probe.set_span(span);
    let method = Ident::new(method, span);
    quote!(#probe.#method(#buf);)
}

/// The literal start of every key the function renders, as a `&'static str` expression, and
/// whether the key is exactly that (a template without placeholders): what prefix routes are
/// matched against when the function's cache is resolved. A default key starts with the
/// module path of a free function; a method's starts with its type's path, not known here.
pub(super) fn key_start(template: Option<&Template>, prefix: &str, func: &Function) -> (TokenStream, bool) {
    match template {
        Some(template) => {
            let mut start = prefix.to_string();
            let mut exact = true;
            for piece in &template.pieces {
                match piece {
                    Piece::Text(t) => start.push_str(t),
                    Piece::Place(_) => {
                        exact = false;
                        break;
                    }
                }
            }
            (quote!(#start), exact)
        }
        None if func.in_impl => (quote!(#prefix), false),
        None => (quote!(::core::concat!(#prefix, ::core::module_path!(), "::")), false),
    }
}

/// The default key: `[prefix]<path>::<fn>[::<T,...>](<arg>,...)`, each argument by `Debug`.
/// `state_fn` is the function holding the cached function's state.
pub(super) fn default_key_body(func: &Function, prefix: &str, names: &Names, state_fn: &Ident) -> TokenStream {
    let Names { rt, buf, .. } = names;
    let mut body = quote! {
        #[allow(unused_imports)]
        use #rt::{KeyAny as _, KeyFast as _};
    };
    let name_str = func.sig.ident.to_string();
    let tail = format!("::{name_str}");
    if !prefix.is_empty() {
        body.extend(quote!(#buf.push_str(#prefix);));
    }
    if func.in_impl {
        body.extend(quote!(#rt::push_type::<Self>(#buf); #buf.push_str(#tail);));
    } else {
        // The path of the state function's item, which (unlike `module_path!()`) names the
        // enclosing function when this one is declared inside a function body, so that two
        // such functions of one name in one module never share keys.
        let state_name = state_fn.to_string();
        body.extend(quote!(#rt::push_fn_path(
            #buf,
            #rt::type_name_of(&#state_fn),
            #state_name,
            #name_str,
            ::core::concat!(::core::module_path!(), #tail),
        );));
    }
    body.extend(generics_part(func, names));
    body.extend(quote!(#buf.push('(');));
    for (i, p) in func.params.iter().enumerate() {
        let name = &p.name;
        if i > 0 {
            body.extend(quote!(#buf.push(',');));
        }
        body.extend(probe_call(rt, name.to_token_stream(), "__cachestack_push_arg", buf, name.span()));
    }
    body.extend(quote!(#buf.push(')');));
    body
}

/// `::<u8,3>` in the default key: type parameters by type name, const parameters by value
/// (lifetimes do not change results). Empty for a function without any.
fn generics_part(func: &Function, names: &Names) -> TokenStream {
    let Names { rt, buf, .. } = names;
    let pushes: Vec<TokenStream> = func
        .sig
        .generics
        .params
        .iter()
        .filter_map(|p| match p {
            syn::GenericParam::Type(t) => {
                let t = &t.ident;
                Some(quote!(#rt::push_type::<#t>(#buf);))
            }
            syn::GenericParam::Const(c) => {
                let c = &c.ident;
                Some(probe_call(rt, quote!(&#c), "__cachestack_push_arg", buf, c.span()))
            }
            syn::GenericParam::Lifetime(_) => None,
        })
        .enumerate()
        .map(|(i, push)| {
            let sep = (i > 0).then(|| quote!(#buf.push(',');));
            quote!(#sep #push)
        })
        .collect();
    if pushes.is_empty() {
        return TokenStream::new();
    }
    quote!(#buf.push_str("::<"); #(#pushes)* #buf.push('>');)
}

/// The body of the closure that encodes a call's key parts for the typed front (see
/// `cachestack::__private::FastProbe`): the template's placeholder values, or every argument for
/// the default key. `false` where the front does not apply: generic functions and methods (their
/// state is shared by every instantiation, and the key names types), and templates that read
/// `self`.
pub(super) fn fast_body(template: Option<&Template>, names: &Names, func: &Function, fkb: &Ident) -> TokenStream {
    let rt = &names.rt;
    let generic = func.sig.generics.params.iter().any(|p| !matches!(p, syn::GenericParam::Lifetime(_)));
    let off = quote!({ let _ = #fkb; false });
    if func.in_impl || generic || func.receiver.is_some() {
        return off;
    }
    let values: Vec<TokenStream> = match template {
        Some(template) => {
            let mut values = Vec::new();
            for piece in &template.pieces {
                if let Piece::Place(place) = piece {
                    if place.root == "self" {
                        return off;
                    }
                    values.push(placeholder_value(place, func, Access::Direct));
                }
            }
            values
        }
        None => func
            .params
            .iter()
            .map(|p| {
                let name = &p.name;
                quote!(&#name)
            })
            .collect(),
    };
    if values.is_empty() {
        return quote!({ let _ = #fkb; true });
    }
    let parts = values.iter().map(|value| quote!((&&#rt::FastProbe(#value)).__cachestack_fast(#fkb)));
    quote! {{
        #[allow(unused_imports)]
        use #rt::{FastNone as _, FastPart as _};
        #(#parts)&&*
    }}
}
