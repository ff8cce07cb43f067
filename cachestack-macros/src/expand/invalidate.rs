//! `#[invalidate]`: the function keeps its signature; its body renders the keys, runs the user's
//! body, and removes the keys (or the keys matching the patterns) before or after it.

use proc_macro2::{TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::{Ident, Type};

use super::key::{self, Access};
use super::{body_thunk, cache_name, respan, Names};
use crate::model::Invalidate;

/// Expands `#[invalidate]`.
pub fn invalidate(model: &Invalidate) -> TokenStream {
    let names = Names::new(&model.common);
    let Names { rt, buf, keys, result, .. } = &names;
    let func = &model.func;
    let prefix = model.common.key_prefix();
    let count = model.keys.len();
    let renders = model.keys.iter().map(|t| {
        let body = if model.patterns {
            key::pattern_body(t, &prefix, &names, func)
        } else {
            key::template_body(t, &prefix, &names, func, Access::Direct)
        };
        quote!(#rt::render_key(|#buf| { #body }))
    });
    let (assertions, mut handle) = if model.keys.is_empty() {
        let (assertions, _) = removal(model, &names);
        (assertions, TokenStream::new())
    } else {
        removal(model, &names)
    };
    let tag_count = model.tags.len();
    let tag_renders = model.tags.iter().map(|t| {
        let body = key::template_body(t, "", &names, func, Access::Direct);
        quote!(#rt::render_key(|#buf| { #body }))
    });
    let tags_ident = Ident::new("__cachestack_tags", proc_macro2::Span::mixed_site());
    let render_tags =
        (!model.tags.is_empty()).then(|| quote!(let #tags_ident: [#rt::String; #tag_count] = [#(#tag_renders),*];));
    if !model.tags.is_empty() {
        handle.extend(tag_removal(model, &names, &tags_ident));
    }
    let body = body_thunk(func, !contains_impl(&func.output), false);
    let run = if func.sig.asyncness.is_some() {
        quote!(let #result = #body.await;)
    } else {
        quote! {
            #[allow(clippy::redundant_closure_call)]
            let #result = (#body)();
        }
    };
    let (before, after) = if model.before {
        (handle, TokenStream::new())
    } else {
        let after = quote! {
            #[allow(unused_imports)]
            use #rt::{ProbePlain as _, ProbeResult as _};
            if (&&#rt::Probe(&#result)).__cachestack_succeeded() {
                #handle
            }
        };
        (TokenStream::new(), after)
    };
    let (attrs, vis, sig) = (&func.attrs, &func.vis, &func.sig);
    let manifest_entry = super::manifest::invalidate_entry(model, &names);
    quote! {
        #(#attrs)*
        #vis #sig {
            #manifest_entry
            #assertions
            let #keys: [#rt::String; #count] = [#(#renders),*];
            #render_tags
            #before
            #run
            #after
            #result
        }
    }
}

/// The statements removing the keys, and the assertions they need: with
/// `on_cache_error = "propagate"`, a failure returns from the function as its `Err`; otherwise it
/// is ignored (the runtime logs and counts it).
fn removal(model: &Invalidate, names: &Names) -> (TokenStream, TokenStream) {
    let Names { rt, keys, err, failed, .. } = names;
    let output = &model.func.output;
    let name_str = model.func.sig.ident.to_string();
    let function = quote!(::core::concat!(::core::module_path!(), "::", #name_str));
    let cache_name = cache_name(&model.common);
    let propagate = model.common.propagate();
    let flag = propagate.is_some();
    let (sync, async_) = if model.patterns {
        (quote!(invalidate_patterns_sync), quote!(invalidate_patterns_async))
    } else {
        (quote!(invalidate_keys_sync), quote!(invalidate_keys_async))
    };
    let remove = if model.func.sig.asyncness.is_some() {
        quote!(#rt::#async_(#function, #cache_name, &#keys, #flag).await)
    } else {
        quote!(#rt::#sync(#function, #cache_name, &#keys, #flag))
    };
    let Some(span) = propagate else {
        return (TokenStream::new(), quote!(let _ = #remove;));
    };
    let ty = respan(output.to_token_stream(), span);
    let assertions = quote_spanned!(span=> #rt::assert_propagate_applies::<#ty>(););
    let method = Ident::new("__cachestack_fail", span);
    let handle = quote! {
        if let ::core::option::Option::Some(#err) = #remove {
            #[allow(unused_imports)]
            use #rt::{OptionKind as _, PlainKind as _, ResultKind as _};
            if let ::core::option::Option::Some(#failed) = (&&&#rt::Kind::<#output>::new()).#method(#err) {
                return #failed;
            }
        }
    };
    (assertions, handle)
}

/// The statements invalidating the rendered tags, failing like [`removal`]'s.
fn tag_removal(model: &Invalidate, names: &Names, tags: &Ident) -> TokenStream {
    let Names { rt, err, failed, .. } = names;
    let output = &model.func.output;
    let name_str = model.func.sig.ident.to_string();
    let function = quote!(::core::concat!(::core::module_path!(), "::", #name_str));
    let cache_name = cache_name(&model.common);
    let flag = model.common.propagate().is_some();
    let invalidate = if model.func.sig.asyncness.is_some() {
        quote!(#rt::invalidate_tags_async(#function, #cache_name, &#tags, #flag).await)
    } else {
        quote!(#rt::invalidate_tags_sync(#function, #cache_name, &#tags, #flag))
    };
    let Some(span) = model.common.propagate() else {
        return quote!(let _ = #invalidate;);
    };
    let method = Ident::new("__cachestack_fail", span);
    quote! {
        if let ::core::option::Option::Some(#err) = #invalidate {
            #[allow(unused_imports)]
            use #rt::{OptionKind as _, PlainKind as _, ResultKind as _};
            if let ::core::option::Option::Some(#failed) = (&&&#rt::Kind::<#output>::new()).#method(#err) {
                return #failed;
            }
        }
    }
}

/// Whether `ty` mentions `impl` (the body's closure then cannot name its return type).
fn contains_impl(ty: &Type) -> bool {
    fn scan(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|t| match t {
            TokenTree::Ident(id) => id == "impl",
            TokenTree::Group(g) => scan(g.stream()),
            _ => false,
        })
    }
    scan(ty.to_token_stream())
}
