//! `#[cached]`: the wrapper keeps the function's signature and calls an inner function that
//! looks the key up and runs the body on a miss; next to them, the key function, the state, and
//! the companions (`_stats`, `_invalidate`, `_refresh`, `_key`).

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::{Abi, Ident};

use super::key::{self, Access};
use super::{
    body_lint_attrs, body_thunk, cache_name, doc_link, item_path, param_decl, ref_param_arg, ref_param_decl, ref_type,
    respan, turbofish, wrapper_attrs, Names,
};
use crate::model::{Cached, Function, Param, Ttl};

/// What every generated function of one `#[cached]` function shares.
pub(super) struct Parts<'a> {
    pub(super) model: &'a Cached,
    pub(super) func: &'a Function,
    pub(super) names: Names,
    /// `::<T, N>`, or nothing.
    pub(super) turbofish: TokenStream,
    /// `__cachestack_<fn>_inner`, `__cachestack_<fn>_key`, `__cachestack_<fn>_state`.
    pub(super) inner: Ident,
    key_fn: Ident,
    state_fn: Ident,
    /// The paths that reach them (`Self::...` in an impl), the key function's with the
    /// turbofish: type and const parameters that appear only in the return type (or nowhere in
    /// the arguments) cannot be inferred from the key function's arguments.
    pub(super) key_path: TokenStream,
    pub(super) state_path: TokenStream,
    /// `&self,` for a method, else nothing: how the key function is called.
    pub(super) self_ref_arg: Option<TokenStream>,
}

/// What a wrapper returns of the inner function's result.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Returns {
    /// The inner function's result, the function's return value.
    Value,
    /// The value of the inner function's `(value, CallStatus)` (functions with resilience
    /// options).
    ValueOfPair,
    /// The pair itself (`<fn>_with_status`).
    Pair,
}

impl<'a> Parts<'a> {
    fn new(model: &'a Cached) -> Self {
        let func = &model.func;
        let ident = &func.sig.ident;
        let turbofish = turbofish(func);
        let key_fn = format_ident!("__cachestack_{}_key", ident);
        let state_fn = format_ident!("__cachestack_{}_state", ident);
        let key_path = {
            let path = item_path(func, &key_fn);
            quote!(#path #turbofish)
        };
        Parts {
            model,
            func,
            names: Names::new(&model.common),
            turbofish,
            inner: format_ident!("__cachestack_{}_inner", ident),
            state_path: item_path(func, &state_fn),
            key_fn,
            state_fn,
            key_path,
            self_ref_arg: func.receiver.as_ref().map(|_| quote!(&self,)),
        }
    }

    /// What the function's wrapper returns of its inner function's result.
    fn returns(&self) -> Returns {
        match self.model.resilience {
            Some(_) => Returns::ValueOfPair,
            None => Returns::Value,
        }
    }

    /// `#rt::render_key(|buf| key_fn(&self, a, b, buf))`, from the companions' parameters.
    fn render_key(&self) -> TokenStream {
        let Parts { key_path, self_ref_arg, names, .. } = self;
        let (rt, buf) = (&names.rt, &names.buf);
        let ref_args = self.func.params.iter().map(ref_param_arg);
        quote!(#rt::render_key(|#buf| #key_path(#self_ref_arg #(#ref_args,)* #buf)))
    }
}

/// Expands `#[cached]`.
pub fn cached(model: &Cached) -> TokenStream {
    let parts = Parts::new(model);
    let func = parts.func;
    let returns = parts.returns();
    let attrs = wrapper_attrs(&func.attrs);
    let mut out = wrapper(&parts, &quote!(Call), &func.sig.ident, &attrs, func.sig.abi.as_ref(), returns);
    match &model.resilience {
        Some(resilience) => out.extend(super::resilient::expand(&parts, resilience)),
        None => out.extend(inner_fn(&parts)),
    }
    out.extend(key_fn(&parts));
    out.extend(state_fn(&parts));
    out.extend(companions(&parts));
    out
}

/// `fn name(args) -> R { inner(Mode::<mode>, args) }`: the function itself (with its ABI),
/// `_refresh` and `_with_status` (without).
pub(super) fn wrapper(
    parts: &Parts,
    mode: &TokenStream,
    ident: &Ident,
    attrs: &[TokenStream],
    abi: Option<&Abi>,
    returns: Returns,
) -> TokenStream {
    let Parts { func, names, inner, turbofish, .. } = parts;
    let sig = &func.sig;
    let (vis, unsafety, asyncness) = (&func.vis, &sig.unsafety, &sig.asyncness);
    let rt = &names.rt;
    let output = &func.output;
    let ret = match returns {
        Returns::Pair => quote!(-> (#output, #rt::CallStatus)),
        _ => sig.output.to_token_stream(),
    };
    let project = (returns == Returns::ValueOfPair).then(|| quote!(.0));
    let (generics, where_clause) = (&sig.generics, &sig.generics.where_clause);
    let receiver = func.receiver.as_ref().map(|r| quote!(#r,));
    let self_arg = func.receiver.as_ref().map(|_| quote!(self,));
    let params = func.params.iter().map(|p| param_decl(p, false));
    let args = func.params.iter().map(|p| &p.name);
    let inner_path = item_path(func, inner);
    let dot_await = asyncness.is_some().then(|| quote!(.await));
    let mut call = quote!(#inner_path #turbofish(#self_arg #rt::Mode::#mode, #(#args),*) #dot_await #project);
    if unsafety.is_some() {
        call = quote!(unsafe { #call });
    }
    quote! {
        #(#attrs)*
        #vis #unsafety #abi #asyncness fn #ident #generics (#receiver #(#params),*) #ret #where_clause {
            #call
        }
    }
}

/// The inner function: looks the key up, and on a miss runs the body (single flight, condition,
/// storage) through the runtime.
fn inner_fn(parts: &Parts) -> TokenStream {
    let Parts { model, func, names, inner, key_path, state_path, self_ref_arg, .. } = parts;
    let Names { rt, buf, mode, site, hit, miss, slot, .. } = names;
    let sig = &func.sig;
    let (unsafety, asyncness, ret) = (&sig.unsafety, &sig.asyncness, &sig.output);
    let (generics, where_clause) = (&sig.generics, &sig.generics.where_clause);
    let body_lints = body_lint_attrs(&func.attrs);
    let receiver = func.receiver.as_ref().map(|r| quote!(#r,));
    let params = func.params.iter().map(|p| param_decl(p, true));
    let args = func.params.iter().map(|p| &p.name);
    let assertions = assertions(parts);
    let policy = policy(parts);
    let ttl = ttl(model.ttl.as_ref());
    let lock = model.lock;
    let miss_call = miss_call(parts);
    let fkb = Ident::new("__cachestack_fkb", Span::mixed_site());
    let fast = key::fast_body(model.key.as_ref(), names, func, &fkb);
    quote! {
        #[doc(hidden)]
        #[allow(dead_code, clippy::too_many_arguments, clippy::used_underscore_binding, clippy::redundant_closure_call)]
        #(#body_lints)*
        #unsafety #asyncness fn #inner #generics (#receiver #mode: #rt::Mode, #(#params),*) #ret #where_clause {
            #rt::thread_local! {
                static #slot: #rt::CacheSlot = const { #rt::CacheSlot::new() };
            }
            #assertions
            let #site = #rt::Site::new(#state_path(), #policy, #ttl, #lock);
            match #rt::lookup(&#site, &#slot, #mode, |#buf| #key_path(#self_ref_arg #(&#args,)* #buf), |#fkb| #fast) {
                #rt::Lookup::Hit(#hit) => #hit,
                #rt::Lookup::Miss(#miss) => #miss_call,
            }
        }
    }
}

/// The body run on a miss, with the condition deciding whether its result is stored.
fn miss_call(parts: &Parts) -> TokenStream {
    let Names { rt, site, miss, .. } = &parts.names;
    let body = body_thunk(parts.func, true, true);
    let condition = condition(parts);
    if parts.func.sig.asyncness.is_some() {
        quote!(#rt::miss_async(&#site, #miss, #body, #condition).await)
    } else {
        quote!(#rt::miss_sync(&#site, #miss, #body, #condition))
    }
}

/// Compile-time checks that `cache_err`, `cache_none` and `on_cache_error = "propagate"` apply
/// to the return type, each spanned on its argument.
pub(super) fn assertions(parts: &Parts) -> TokenStream {
    let Parts { model, func, names, .. } = parts;
    let rt = &names.rt;
    let output = &func.output;
    let mut assertions = TokenStream::new();
    if let Some((_, span)) = model.cache_err {
        let ty = respan(output.to_token_stream(), span);
        assertions.extend(quote_spanned!(span=> #rt::assert_cache_err_applies::<#ty>();));
    }
    if let Some((_, span)) = model.cache_none {
        let ty = respan(output.to_token_stream(), span);
        assertions.extend(quote_spanned!(span=> #rt::assert_cache_none_applies::<#ty>();));
    }
    if let Some(span) = model.common.propagate() {
        let ty = respan(output.to_token_stream(), span);
        assertions.extend(quote_spanned!(span=> #rt::assert_propagate_applies::<#ty>();));
    }
    assertions
}

/// The cache policy for the return type; the `Cacheable` check points at the value type.
pub(super) fn policy(parts: &Parts) -> TokenStream {
    let Parts { model, func, names, .. } = parts;
    let rt = &names.rt;
    let output = &func.output;
    let value_span = func.value_span();
    let policy_method = match model.cache_err {
        Some((true, _)) => Ident::new("__cachestack_policy_cache_err", value_span),
        _ => Ident::new("__cachestack_policy", value_span),
    };
    let cache_none = model.cache_none.map(|(b, _)| b).unwrap_or(true);
    // Spanned on the option, so a missing `From<cachestack::Error>` points at it.
    let propagate = model.common.propagate().map(|span| {
        respan(
            quote!(let __cachestack_policy = (&&&#rt::Kind::<#output>::new()).__cachestack_propagate(__cachestack_policy);),
            span,
        )
    });
    quote! {{
        #[allow(unused_imports)]
        use #rt::{OptionKind as _, PlainKind as _, ResultKind as _};
        let __cachestack_policy = (&&&#rt::Kind::<#output>::new()).#policy_method(#rt::Flags { cache_none: #cache_none });
        #propagate
        __cachestack_policy
    }}
}

pub(super) fn ttl(ttl: Option<&Ttl>) -> TokenStream {
    match ttl {
        None => quote!(::core::option::Option::None),
        Some(Ttl::Fixed(d)) => {
            let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
            quote!(::core::option::Option::Some(::core::time::Duration::new(#secs, #nanos)))
        }
        Some(Ttl::Expr(e)) => {
            quote!(::core::option::Option::Some({ let __cachestack_ttl: ::core::time::Duration = #e; __cachestack_ttl }))
        }
    }
}

/// `condition(&closure)`, or the one that always stores.
pub(super) fn condition(parts: &Parts) -> TokenStream {
    let rt = &parts.names.rt;
    let output = &parts.func.output;
    let Some(c) = &parts.model.condition else {
        return quote!(#rt::condition::<#output, _>(&#rt::always::<#output>));
    };
    // The check spans exactly the closure: a wrong signature points at it.
    let tokens: Vec<TokenTree> = c.to_token_stream().into_iter().collect();
    let first = tokens.first().map_or_else(Span::call_site, TokenTree::span);
    let last = tokens.last().map_or(first, TokenTree::span);
    let head = respan(quote!(#rt::condition::<#output, _>), first);
    let and = respan(quote!(&), first);
    let mut closure = Group::new(Delimiter::Parenthesis, c.to_token_stream());
    closure.set_span(last);
    let mut args = Group::new(Delimiter::Parenthesis, quote!(#and #closure));
    args.set_span(last);
    quote!(#head #args)
}

/// The key function: renders the key from references to the arguments.
fn key_fn(parts: &Parts) -> TokenStream {
    let Parts { model, func, names, key_fn, state_fn, self_ref_arg, .. } = parts;
    let Names { rt, buf, .. } = names;
    let prefix = model.common.key_prefix();
    let body = match &model.key {
        Some(template) => key::template_body(template, &prefix, names, func, Access::ByReference),
        None => key::default_key_body(func, &prefix, names, state_fn),
    };
    let params = func.params.iter().map(|p| {
        let Param { name, ty, .. } = p;
        let ty = ref_type(ty);
        quote!(#name: #ty)
    });
    let (generics, where_clause) = (&func.sig.generics, &func.sig.generics.where_clause);
    quote! {
        #[doc(hidden)]
        #[allow(dead_code, unused_variables, clippy::ptr_arg, clippy::trivially_copy_pass_by_ref, clippy::too_many_arguments)]
        fn #key_fn #generics (#self_ref_arg #(#params,)* #buf: &mut #rt::String) #where_clause {
            #body
        }
    }
}

/// The function holding the statistics and the cache's name.
fn state_fn(parts: &Parts) -> TokenStream {
    let Parts { model, func, names, state_fn, .. } = parts;
    let rt = &names.rt;
    let name_str = func.sig.ident.to_string();
    let cache_name = cache_name(&model.common);
    let (key_start, key_exact) = key::key_start(model.key.as_ref(), &model.common.key_prefix(), func);
    let manifest_entry = super::manifest::cached_entry(model, names, &quote!(__CACHESTACK_STATE));
    quote! {
        #[doc(hidden)]
        #[allow(dead_code)]
        #[inline]
        fn #state_fn() -> &'static #rt::CachedFn {
            static __CACHESTACK_STATE: #rt::CachedFn = #rt::CachedFn::new(
                ::core::concat!(::core::module_path!(), "::", #name_str),
                #cache_name,
                #key_start,
                #key_exact,
            );
            #manifest_entry
            &__CACHESTACK_STATE
        }
    }
}

/// `<fn>_stats`, `<fn>_invalidate`, `<fn>_refresh` and `<fn>_key`.
fn companions(parts: &Parts) -> TokenStream {
    let Parts { func, names, state_path, self_ref_arg, .. } = parts;
    let rt = &names.rt;
    let ident = &func.sig.ident;
    let sig = &func.sig;
    let (vis, asyncness) = (&func.vis, &sig.asyncness);
    let (generics, where_clause) = (&sig.generics, &sig.generics.where_clause);
    let link = doc_link(func);
    let ref_params: Vec<TokenStream> = func.params.iter().map(ref_param_decl).collect();
    let render_key = parts.render_key();
    let fkb = Ident::new("__cachestack_fkb", Span::mixed_site());
    let fast = key::fast_body(parts.model.key.as_ref(), names, func, &fkb);
    let invalidate_call = if asyncness.is_some() {
        quote!(#rt::invalidate_async(#state_path(), #render_key, |#fkb| #fast).await)
    } else {
        quote!(#rt::invalidate_sync(#state_path(), #render_key, |#fkb| #fast))
    };
    let (stats_fn, invalidate_fn) = (format_ident!("{}_stats", ident), format_ident!("{}_invalidate", ident));
    let (refresh_fn, key_companion) = (format_ident!("{}_refresh", ident), format_ident!("{}_key", ident));
    let doc_stats = format!(" Counters of {link}: hits, misses, waits on in-flight computations, cache errors.");
    let doc_invalidate = format!(
        " Removes the cached result of {link} for these arguments; `Ok(true)` if one was cached. Generated by `#[cached]`."
    );
    let doc_refresh = format!(
        " Runs {link} without reading the cache and stores the result (under the same rules as a miss). Generated by `#[cached]`."
    );
    let doc_key = format!(" The cache key of {link} for these arguments. Generated by `#[cached]`.");
    let refresh_attrs = [quote!(#[doc = #doc_refresh]), quote!(#[allow(dead_code, clippy::too_many_arguments)])];
    let refresh = wrapper(parts, &quote!(Refresh), &refresh_fn, &refresh_attrs, None, parts.returns());
    quote! {
        #[doc = #doc_stats]
        #[allow(dead_code)]
        #vis fn #stats_fn() -> #rt::FnStats {
            #state_path().stats()
        }

        #[doc = #doc_invalidate]
        #[allow(dead_code, clippy::too_many_arguments)]
        #vis #asyncness fn #invalidate_fn #generics (#self_ref_arg #(#ref_params),*) -> #rt::Result<::core::primitive::bool> #where_clause {
            #invalidate_call
        }

        #refresh

        #[doc = #doc_key]
        #[allow(dead_code, clippy::too_many_arguments)]
        #vis fn #key_companion #generics (#self_ref_arg #(#ref_params),*) -> #rt::String #where_clause {
            #render_key
        }
    }
}
