//! `#[cached]` with resilience options: the inner function calls `resilient_sync` /
//! `resilient_async` (the resilience engine) instead of the typed front and the miss path; the
//! body moves into a function of its own, which the caller runs on its own task or thread, and
//! which an owned computation (clones of the arguments) runs after the caller returned when the
//! options need it; and the `<fn>_with_status` companion.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::Ident;

use super::cached::{assertions, ttl, wrapper, Parts, Returns};
use super::{body_lint_attrs, doc_link, item_path, param_decl, pattern_lets, respan, Names};
use crate::model::{RefreshAhead, Resilience};

/// The inner function, the body function and `<fn>_with_status`.
pub(super) fn expand(parts: &Parts, resilience: &Resilience) -> TokenStream {
    let mut out = inner_fn(parts, resilience);
    out.extend(body_fn(parts));
    out.extend(with_status(parts));
    out
}

fn body_ident(parts: &Parts) -> Ident {
    format_ident!("__cachestack_{}_body", parts.func.sig.ident)
}

/// The inner function: renders the key, then hands the call to the engine with the caller's
/// body (and, when the options need it, the owned one).
fn inner_fn(parts: &Parts, resilience: &Resilience) -> TokenStream {
    let Parts { model, func, names, inner, key_path, state_path, self_ref_arg, .. } = parts;
    let Names { rt, buf, mode, site, slot, .. } = names;
    let sig = &func.sig;
    let (unsafety, asyncness) = (&sig.unsafety, &sig.asyncness);
    let (generics, where_clause) = (&sig.generics, &sig.generics.where_clause);
    let output = &func.output;
    let receiver = func.receiver.as_ref().map(|r| quote!(#r,));
    let params = func.params.iter().map(|p| param_decl(p, false));
    let args: Vec<&Ident> = func.params.iter().map(|p| &p.name).collect();
    let checks = assertions(parts);
    let ttl = ttl(model.ttl.as_ref());
    let options = options(rt, resilience);
    let (stamping, failed) = (stamping(parts), failed(parts));
    let condition = condition_fn(parts);
    let on_timeout = on_timeout(parts, resilience);
    let key = Ident::new("__cachestack_key", Span::mixed_site());
    let owned_ident = Ident::new("__cachestack_owned", Span::mixed_site());
    let self_arg = func.receiver.as_ref().map(|_| quote!(self,));
    let body = body_call(parts, self_arg, &args);
    let owned = owned(parts, resilience);
    let tagged = tagged(parts);
    let call = match asyncness {
        Some(_) => quote!(#rt::resilient_async(&#site, &#slot, #mode, #key, #body, #owned_ident).await),
        None => quote!(#rt::resilient_sync(&#site, &#slot, #mode, #key, move || #body, #owned_ident)),
    };
    quote! {
        #[doc(hidden)]
        #[allow(dead_code, clippy::too_many_arguments, clippy::used_underscore_binding)]
        #unsafety #asyncness fn #inner #generics (#receiver #mode: #rt::Mode, #(#params),*) -> (#output, #rt::CallStatus) #where_clause {
            #rt::thread_local! {
                static #slot: #rt::CacheSlot = const { #rt::CacheSlot::new() };
            }
            #checks
            let #site = #rt::Resilient::new(#state_path(), #ttl, #options, #stamping, #failed, #condition, #on_timeout)#tagged;
            let #key = #rt::render_key(|#buf| #key_path(#self_ref_arg #(&#args,)* #buf));
            let #owned_ident = #owned;
            #call
        }
    }
}

/// `.tagged([tags rendered from the arguments].into())`, or nothing without `tags`. Tags get no
/// key prefix (`namespace`, `version`): they are shared by every function and cache.
fn tagged(parts: &Parts) -> TokenStream {
    let Parts { model, func, names, .. } = parts;
    if model.tags.is_empty() {
        return TokenStream::new();
    }
    let (rt, buf) = (&names.rt, &names.buf);
    let renders = model.tags.iter().map(|t| {
        let body = super::key::template_body(t, "", names, func, super::key::Access::Direct);
        quote!(#rt::render_key(|#buf| { #body }))
    });
    quote!(.tagged(::core::convert::Into::into([#(#renders),*])))
}

/// `body(self, a, b)` (in an `unsafe` block for an `unsafe fn`).
fn body_call(parts: &Parts, self_arg: Option<TokenStream>, args: &[&Ident]) -> TokenStream {
    let func = parts.func;
    let path = item_path(func, &body_ident(parts));
    let turbofish = &parts.turbofish;
    let call = quote!(#path #turbofish(#self_arg #(#args),*));
    match func.sig.unsafety {
        Some(_) => quote!(unsafe { #call }),
        None => call,
    }
}

/// `Some(closure)` running the body on clones of the arguments, or a typed `None` when the
/// options need no owned computation. Each clone checks that its argument is
/// `Clone + Send + 'static`, spanned on the argument's type.
fn owned(parts: &Parts, resilience: &Resilience) -> TokenStream {
    let func = parts.func;
    let rt = &parts.names.rt;
    let output = &func.output;
    if !resilience.owned {
        return match func.sig.asyncness {
            Some(_) => quote!(::core::option::Option::None::<fn() -> ::core::future::Ready<#output>>),
            None => quote!(::core::option::Option::None::<fn() -> #output>),
        };
    }
    let owned_self = Ident::new("__cachestack_self", Span::mixed_site());
    let self_clone = func.receiver.as_ref().map(|r| {
        let clone = quote_spanned!(r.span()=> #rt::clone_owned(&self));
        quote!(let #owned_self = #clone;)
    });
    let self_arg = func.receiver.as_ref().map(|_| quote!(#owned_self,));
    let clones = func.params.iter().map(|p| {
        let name = &p.name;
        let clone = quote_spanned!(p.ty.span()=> #rt::clone_owned(&#name));
        quote!(let #name = #clone;)
    });
    let args: Vec<&Ident> = func.params.iter().map(|p| &p.name).collect();
    let call = body_call(parts, self_arg, &args);
    quote!(::core::option::Option::Some({
        #self_clone
        #(#clones)*
        move || #call
    }))
}

fn duration(d: Option<std::time::Duration>) -> TokenStream {
    match d {
        Some(d) => {
            let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
            quote!(::core::option::Option::Some(::core::time::Duration::new(#secs, #nanos)))
        }
        None => quote!(::core::option::Option::None),
    }
}

fn fraction(f: Option<f64>) -> TokenStream {
    match f {
        Some(f) => {
            let f = Literal::f64_suffixed(f);
            quote!(::core::option::Option::Some(#f))
        }
        None => quote!(::core::option::Option::None),
    }
}

/// The options as `#rt::Resilience { ... }`.
fn options(rt: &TokenStream, r: &Resilience) -> TokenStream {
    let (stale_if_error, stale_throttle) = (duration(r.stale_if_error), duration(r.stale_throttle));
    let stale_while_revalidate = duration(r.stale_while_revalidate);
    let refresh_ahead = match r.refresh_ahead {
        Some(RefreshAhead::Fraction(f)) => {
            let f = Literal::f64_suffixed(f);
            quote!(::core::option::Option::Some(#rt::RefreshAhead::Fraction(#f)))
        }
        Some(RefreshAhead::After(d)) => {
            let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
            quote!(::core::option::Option::Some(#rt::RefreshAhead::After(::core::time::Duration::new(#secs, #nanos))))
        }
        None => quote!(::core::option::Option::None),
    };
    let (timeout, hard_timeout) = (duration(r.timeout), duration(r.hard_timeout.map(|(d, _)| d)));
    let (jitter, lock_timeout) = (fraction(r.jitter), duration(r.lock_timeout));
    let (distributed, lock_lease) = (r.distributed, duration(r.lock_lease));
    quote!(#rt::Resilience {
        stale_if_error: #stale_if_error,
        stale_throttle: #stale_throttle,
        stale_while_revalidate: #stale_while_revalidate,
        refresh_ahead: #refresh_ahead,
        timeout: #timeout,
        hard_timeout: #hard_timeout,
        jitter: #jitter,
        lock_timeout: #lock_timeout,
        distributed: #distributed,
        lock_lease: #lock_lease,
    })
}

/// How the return type is stored with its fresh deadline; the `Cacheable` check points at the
/// value type.
fn stamping(parts: &Parts) -> TokenStream {
    let Parts { model, func, names, .. } = parts;
    let rt = &names.rt;
    let output = &func.output;
    let method = Ident::new("__cachestack_stamping", func.value_span());
    let cache_none = model.cache_none.map(|(b, _)| b).unwrap_or(true);
    quote!({
        #[allow(unused_imports)]
        use #rt::{OptionKind as _, PlainKind as _, ResultKind as _};
        (&&&#rt::Kind::<#output>::new()).#method(#rt::Flags { cache_none: #cache_none })
    })
}

/// `fn(&R) -> bool`: true for an `Err`.
fn failed(parts: &Parts) -> TokenStream {
    let rt = &parts.names.rt;
    let output = &parts.func.output;
    quote!({
        #[allow(unused_imports)]
        use #rt::{ProbePlain as _, ProbeResult as _};
        let __cachestack_failed: fn(&#output) -> ::core::primitive::bool =
            |result| !(&&#rt::Probe(result)).__cachestack_succeeded();
        __cachestack_failed
    })
}

/// The `condition` as a function pointer (the engine keeps it past the call), spanned on the
/// closure so that a capturing one is reported there.
fn condition_fn(parts: &Parts) -> TokenStream {
    let rt = &parts.names.rt;
    let output = &parts.func.output;
    match &parts.model.condition {
        Some(c) => {
            let span = c.to_token_stream().into_iter().next().map_or_else(Span::call_site, |t| t.span());
            let head = respan(quote!(#rt::condition_fn::<#output>), span);
            quote!(#head(#c))
        }
        None => quote!(#rt::condition_fn::<#output>(#rt::always::<#output>)),
    }
}

/// `Some(timed_out::<R>)` for `hard_timeout`, spanned on the option so that a return type that
/// cannot carry the timeout is reported there.
fn on_timeout(parts: &Parts, r: &Resilience) -> TokenStream {
    let rt = &parts.names.rt;
    let output = &parts.func.output;
    match r.hard_timeout {
        Some((_, span)) => {
            let check = respan(quote!(#rt::timed_out::<#output>), span);
            quote!(::core::option::Option::Some(#check as fn(#rt::Timeout) -> #output))
        }
        None => quote!(::core::option::Option::None),
    }
}

/// The body as a function of its own (with the function's lint levels), run by the caller or
/// by the owned computation.
fn body_fn(parts: &Parts) -> TokenStream {
    let func = parts.func;
    let sig = &func.sig;
    let (unsafety, asyncness, ret) = (&sig.unsafety, &sig.asyncness, &sig.output);
    let (generics, where_clause) = (&sig.generics, &sig.generics.where_clause);
    let body_lints = body_lint_attrs(&func.attrs);
    let receiver = func.receiver.as_ref().map(|r| quote!(#r,));
    let params = func.params.iter().map(|p| param_decl(p, true));
    let lets = pattern_lets(func);
    let stmts = &func.body.stmts;
    let ident = body_ident(parts);
    quote! {
        #[doc(hidden)]
        #[allow(dead_code, clippy::too_many_arguments, clippy::used_underscore_binding)]
        #(#body_lints)*
        #unsafety #asyncness fn #ident #generics (#receiver #(#params),*) #ret #where_clause {
            #lets
            #(#stmts)*
        }
    }
}

/// `<fn>_with_status`: the function's value and how the call was served.
fn with_status(parts: &Parts) -> TokenStream {
    let func = parts.func;
    let ident = format_ident!("{}_with_status", func.sig.ident);
    let doc = format!(
        " Calls {} and says how the call was served (`cachestack::CallStatus`): `Hit` (fresh from the cache), `Miss` (the body ran for this call), `Stale` (a stale value: fail-safe, revalidation or soft timeout), `Waited` (another call's computation was awaited). Generated by `#[cached]`.",
        doc_link(func)
    );
    let attrs = [quote!(#[doc = #doc]), quote!(#[allow(dead_code, clippy::too_many_arguments)])];
    wrapper(parts, &quote!(Call), &ident, &attrs, None, Returns::Pair)
}
