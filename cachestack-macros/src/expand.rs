//! Step 3: code generation. Every runtime item is named through `<crate>::__private` (default
//! `::cachestack::__private`) or `::core`, so the output compiles whatever the user's scope
//! shadows. Locals the expansion introduces use mixed-site hygiene: user code can neither see
//! nor shadow them.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Attribute, Ident, Member, Meta, Type};

use crate::args::{CachedArgs, Common, InvalidateArgs, OnError, Ttl};
use crate::model::{Model, Param};
use crate::template::{Piece, Template};

/// Identifiers the expansion introduces.
struct Names {
    rt: TokenStream,
    buf: Ident,
    mode: Ident,
    site: Ident,
    hit: Ident,
    miss: Ident,
    slot: Ident,
    keys: Ident,
    result: Ident,
    err: Ident,
    failed: Ident,
}

impl Names {
    fn new(common: &Common) -> Self {
        let krate = match &common.krate {
            Some(path) => path.to_token_stream(),
            None => quote!(::cachestack),
        };
        let local = |name: &str| Ident::new(name, Span::mixed_site());
        Names {
            rt: quote!(#krate::__private),
            buf: local("__cachestack_buf"),
            mode: local("__cachestack_mode"),
            site: local("__cachestack_site"),
            hit: local("__cachestack_hit"),
            miss: local("__cachestack_miss"),
            slot: local("__CACHESTACK_SLOT"),
            keys: local("__cachestack_keys"),
            result: local("__cachestack_result"),
            err: local("__cachestack_err"),
            failed: local("__cachestack_failed"),
        }
    }
}

/// Gives every token of `tokens` the span `span` (for assertions whose error should point at an
/// option rather than at the type they check).
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(g) = &token {
                let mut group = Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                token = TokenTree::Group(group);
            }
            token.set_span(span);
            token
        })
        .collect()
}

/// `"ns:v2:"`: the prefix `namespace` and `version` put in front of every key.
fn key_prefix(common: &Common) -> String {
    let mut prefix = String::new();
    if let Some(ns) = &common.namespace {
        prefix.push_str(&ns.value());
        prefix.push(':');
    }
    if let Some(v) = &common.version {
        prefix.push('v');
        prefix.push_str(v);
        prefix.push(':');
    }
    prefix
}

/// How a template reaches the parameters it names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// In the generated key function, whose parameters are references to the arguments.
    ByReference,
    /// In the function itself (`#[invalidate]`), where the parameters are in scope as they are.
    Direct,
}

/// Statements appending a template's rendering to `buf`. Placeholder expressions carry the
/// template's span, so a missing field or a missing `Display` points at the template, and they
/// name the parameter's own type (`User`, not `&&User`) in those messages.
fn template_body(template: &Template, prefix: &str, names: &Names, model: &Model, access: Access) -> TokenStream {
    let Names { rt, buf, .. } = names;
    let span = template.lit.span();
    let mut out = quote! {
        #[allow(unused_imports)]
        use #rt::{KeyAny as _, KeyFast as _};
    };
    let mut text = prefix.to_string();
    for piece in &template.pieces {
        match piece {
            Piece::Text(t) => text.push_str(t),
            Piece::Place(place) => {
                if !text.is_empty() {
                    out.extend(quote!(#buf.push_str(#text);));
                    text.clear();
                }
                // An expression of the parameter's declared type.
                let (root, root_is_ref) = if place.root == "self" {
                    let this = quote_spanned!(span=> self);
                    match access {
                        Access::ByReference => (quote_spanned!(span=> (*#this)), false),
                        Access::Direct => (this, true),
                    }
                } else {
                    let ident = Ident::new(&place.root, span);
                    let by_ref = model.params.iter().any(|p| p.named && p.name == place.root && p.by_ref);
                    match access {
                        Access::ByReference => (quote_spanned!(span=> (*#ident)), by_ref),
                        Access::Direct => (ident.into_token_stream(), by_ref),
                    }
                };
                let value = if place.members.is_empty() {
                    if root_is_ref {
                        root
                    } else {
                        quote_spanned!(span=> &#root)
                    }
                } else {
                    // Located on the template but marked as generated, so rustc does not
                    // suggest edits to the template's text for a mistyped field.
                    let member_span = Span::call_site().located_at(span);
                    let members = place.members.iter().map(|m| match m {
                        Member::Named(id) => Member::Named(Ident::new(&id.to_string(), member_span)),
                        Member::Unnamed(index) => Member::Unnamed(syn::Index { index: index.index, span: member_span }),
                    });
                    quote_spanned!(span=> &(#root #(.#members)*))
                };
                out.extend(probe_call(rt, value, "__cachestack_push_part", buf, span));
            }
        }
    }
    if !text.is_empty() {
        out.extend(quote!(#buf.push_str(#text);));
    }
    out
}

/// `(&&KeyProbe(value)).method(buf);`, spanned on `span` (the template, or the parameter) so that
/// a missing `Display` / `Debug` is reported there. The probe picks the integer and string fast
/// path when it applies, the general `Display` / `Debug` path otherwise.
fn probe_call(rt: &TokenStream, value: TokenStream, method: &str, buf: &Ident, span: Span) -> TokenStream {
    let head = respan(quote!(&&#rt::KeyProbe), span);
    let mut args = Group::new(proc_macro2::Delimiter::Parenthesis, value);
    args.set_span(span);
    let mut probe = Group::new(proc_macro2::Delimiter::Parenthesis, quote!(#head #args));
    probe.set_span(span);
    let method = Ident::new(method, span);
    quote!(#probe.#method(#buf);)
}

/// `::<T, U, N>` for the function's own type and const parameters (empty without any).
fn turbofish(model: &Model) -> TokenStream {
    let params: Vec<&Ident> = model
        .sig
        .generics
        .params
        .iter()
        .filter_map(|p| match p {
            syn::GenericParam::Type(t) => Some(&t.ident),
            syn::GenericParam::Const(c) => Some(&c.ident),
            syn::GenericParam::Lifetime(_) => None,
        })
        .collect();
    if params.is_empty() {
        TokenStream::new()
    } else {
        quote!(::<#(#params),*>)
    }
}

/// A generic parameter that distinguishes instantiations in the default key.
enum KeyGeneric<'a> {
    Type(&'a Ident),
    Const(&'a Ident),
}

/// The type and const parameters, in declaration order (lifetimes do not change results).
fn key_generics(model: &Model) -> Vec<KeyGeneric<'_>> {
    model
        .sig
        .generics
        .params
        .iter()
        .filter_map(|p| match p {
            syn::GenericParam::Type(t) => Some(KeyGeneric::Type(&t.ident)),
            syn::GenericParam::Const(c) => Some(KeyGeneric::Const(&c.ident)),
            syn::GenericParam::Lifetime(_) => None,
        })
        .collect()
}

/// `Self::name` in an impl block, `name` elsewhere.
fn item_path(model: &Model, name: &Ident) -> TokenStream {
    if model.in_impl {
        quote!(Self::#name)
    } else {
        quote!(#name)
    }
}

fn doc_link(model: &Model) -> String {
    if model.in_impl {
        format!("[`{0}`](Self::{0})", model.sig.ident)
    } else {
        format!("[`{0}`]", model.sig.ident)
    }
}

fn param_decl(p: &Param, keep_mut: bool) -> TokenStream {
    let Param { attrs, name, ty, .. } = p;
    let mutability = (keep_mut && p.mutable).then(|| quote!(mut));
    quote!(#(#attrs)* #mutability #name: #ty)
}

/// Lint levels, which apply to the code of the item they are written on.
const LINT_LEVELS: &[&str] = &["allow", "warn", "deny", "forbid", "expect"];

fn is_lint_level(attr: &Attribute) -> bool {
    attr.path().get_ident().is_some_and(|id| LINT_LEVELS.iter().any(|level| id == level))
}

/// The attributes of the wrapper `#[cached]` generates: the user's (doc comments, `#[inline]`,
/// `#[must_use]`, lint levels...), except that `#[expect(..)]` becomes `#[allow(..)]` there: the
/// body, where the expected lint fires, moves to the inner function.
fn wrapper_attrs(attrs: &[Attribute]) -> Vec<TokenStream> {
    attrs
        .iter()
        .map(|attr| match &attr.meta {
            Meta::List(list) if list.path.is_ident("expect") => {
                let allow = Ident::new("allow", list.path.span());
                let tokens = &list.tokens;
                let pound = attr.pound_token;
                quote!(#pound[#allow(#tokens)])
            }
            _ => attr.to_token_stream(),
        })
        .collect()
}

/// The lint levels written on the function, for the inner function that holds its body.
fn body_lint_attrs(attrs: &[Attribute]) -> Vec<&Attribute> {
    attrs.iter().filter(|attr| is_lint_level(attr)).collect()
}

/// `&T`, with parentheses where `T` has several bounds (`&(impl A + B)`).
fn ref_type(ty: &Type) -> TokenStream {
    let several = match ty {
        Type::ImplTrait(t) => t.bounds.len() > 1,
        Type::TraitObject(t) => t.bounds.len() > 1,
        _ => false,
    };
    if several {
        quote!(&(#ty))
    } else {
        quote!(&#ty)
    }
}

/// Parameters of `<fn>_invalidate` / `<fn>_key`: by reference.
fn ref_param_decl(p: &Param) -> TokenStream {
    let Param { name, ty, .. } = p;
    if p.by_ref {
        quote!(#name: #ty)
    } else {
        let ty = ref_type(ty);
        quote!(#name: #ty)
    }
}

/// Arguments passing `<fn>_invalidate`'s parameters to the key function (which takes `&T`).
fn ref_param_arg(p: &Param) -> TokenStream {
    let name = &p.name;
    if p.by_ref {
        quote!(&#name)
    } else {
        quote!(#name)
    }
}

/// `let <pattern> = __cachestack_argN;` for destructuring parameters, at the top of the body.
fn pattern_lets(model: &Model) -> TokenStream {
    model
        .params
        .iter()
        .filter_map(|p| {
            let pattern = p.pattern.as_ref()?;
            let name = &p.name;
            Some(quote!(let #pattern = #name;))
        })
        .collect()
}

/// The body as a closure (sync) or an async block; `return` and `?` keep their meaning.
fn body_thunk(model: &Model, annotate: bool, rebind: bool) -> TokenStream {
    let output = &model.output;
    let lets = if rebind { pattern_lets(model) } else { TokenStream::new() };
    let stmts = &model.body.stmts;
    let block = quote!(#(#stmts)*);
    if model.sig.asyncness.is_some() {
        let fake_return = annotate.then(|| {
            quote! {
                #[allow(
                    unreachable_code,
                    clippy::diverging_sub_expression,
                    clippy::empty_loop,
                    clippy::let_unit_value,
                    clippy::needless_return,
                    clippy::unreachable
                )]
                if false {
                    let __cachestack_never: #output = loop {};
                    return __cachestack_never;
                }
            }
        });
        quote!(async move { #fake_return #lets #block })
    } else if annotate {
        quote!(move || -> #output { #lets #block })
    } else {
        quote!(move || { #lets #block })
    }
}

/// Expands `#[cached]`.
pub fn cached(model: &Model, args: &CachedArgs) -> TokenStream {
    let names = Names::new(&args.common);
    let rt = &names.rt;
    let Names { buf, mode, site, hit, miss, slot, .. } = &names;
    let ident = &model.sig.ident;
    let name_str = ident.to_string();
    let output = &model.output;
    let vis = &model.vis;
    let attrs = wrapper_attrs(&model.attrs);
    let body_lints = body_lint_attrs(&model.attrs);
    let generics = &model.sig.generics;
    let where_clause = &model.sig.generics.where_clause;
    let asyncness = &model.sig.asyncness;
    let unsafety = &model.sig.unsafety;
    let abi = &model.sig.abi;
    let ret = &model.sig.output;
    let is_async = asyncness.is_some();
    let dot_await = is_async.then(|| quote!(.await));
    let turbofish = turbofish(model);
    let link = doc_link(model);

    let inner = format_ident!("__cachestack_{}_inner", ident);
    let key_fn = format_ident!("__cachestack_{}_key", ident);
    let state_fn = format_ident!("__cachestack_{}_state", ident);
    let inner_path = item_path(model, &inner);
    // With the turbofish: type and const parameters that appear only in the return type (or
    // nowhere in the arguments) cannot be inferred from the key function's arguments.
    let key_path = {
        let path = item_path(model, &key_fn);
        quote!(#path #turbofish)
    };
    let state_path = item_path(model, &state_fn);

    let receiver = &model.receiver;
    let receiver_decl = receiver.as_ref().map(|r| quote!(#r,));
    let self_arg = receiver.as_ref().map(|_| quote!(self,));
    let self_ref_arg = receiver.as_ref().map(|_| quote!(&self,));
    let ref_receiver = receiver.as_ref().map(|_| quote!(&self,));
    let arg_names: Vec<&Ident> = model.params.iter().map(|p| &p.name).collect();
    let wrapper_params: Vec<TokenStream> = model.params.iter().map(|p| param_decl(p, false)).collect();
    let inner_params: Vec<TokenStream> = model.params.iter().map(|p| param_decl(p, true)).collect();
    let ref_params: Vec<TokenStream> = model.params.iter().map(ref_param_decl).collect();
    let ref_args: Vec<TokenStream> = model.params.iter().map(ref_param_arg).collect();

    // The key function: renders the key from references to the arguments.
    let prefix = key_prefix(&args.common);
    let key_body = match &args.key {
        Some(template) => template_body(template, &prefix, &names, model, Access::ByReference),
        None => {
            let mut body = quote! {
                #[allow(unused_imports)]
                use #rt::{KeyAny as _, KeyFast as _};
            };
            if model.in_impl {
                let tail = format!("::{name_str}");
                if !prefix.is_empty() {
                    body.extend(quote!(#buf.push_str(#prefix);));
                }
                body.extend(quote!(#rt::push_type::<Self>(#buf); #buf.push_str(#tail);));
            } else {
                let lead = format!("::{name_str}");
                if !prefix.is_empty() {
                    body.extend(quote!(#buf.push_str(#prefix);));
                }
                // The path of the state function's item, which (unlike `module_path!()`) names the
                // enclosing function when this one is declared inside a function body, so that two
                // such functions of one name in one module never share keys.
                let state_name = state_fn.to_string();
                body.extend(quote!(#rt::push_fn_path(
                    #buf,
                    #rt::type_name_of(&#state_fn),
                    #state_name,
                    #name_str,
                    ::core::concat!(::core::module_path!(), #lead),
                );));
            }
            // Type parameters by type name, const parameters by value: `f::<u8,3>(...)`.
            let generics = key_generics(model);
            if !generics.is_empty() {
                let pushes = generics.iter().enumerate().map(|(i, g)| {
                    let sep = (i > 0).then(|| quote!(#buf.push(',');));
                    let push = match g {
                        KeyGeneric::Type(t) => quote!(#rt::push_type::<#t>(#buf);),
                        KeyGeneric::Const(c) => probe_call(rt, quote!(&#c), "__cachestack_push_arg", buf, c.span()),
                    };
                    quote!(#sep #push)
                });
                body.extend(quote!(#buf.push_str("::<"); #(#pushes)* #buf.push('>');));
            }
            body.extend(quote!(#buf.push('(');));
            for (i, p) in model.params.iter().enumerate() {
                let name = &p.name;
                if i > 0 {
                    body.extend(quote!(#buf.push(',');));
                }
                body.extend(probe_call(rt, name.to_token_stream(), "__cachestack_push_arg", buf, name.span()));
            }
            body.extend(quote!(#buf.push(')');));
            body
        }
    };
    let key_params = model.params.iter().map(|p| {
        let Param { name, ty, .. } = p;
        let ty = ref_type(ty);
        quote!(#name: #ty)
    });

    // The cache policy for the return type; the `Cacheable` check points at the value type.
    let value_span = model.value_span();
    let policy_method = match args.cache_err {
        Some((true, _)) => Ident::new("__cachestack_policy_cache_err", value_span),
        _ => Ident::new("__cachestack_policy", value_span),
    };
    let cache_none = args.cache_none.map(|(b, _)| b).unwrap_or(true);
    let mut assertions = TokenStream::new();
    if let Some((_, span)) = args.cache_err {
        let ty = respan(output.to_token_stream(), span);
        assertions.extend(quote_spanned!(span=> #rt::assert_cache_err_applies::<#ty>();));
    }
    if let Some((_, span)) = args.cache_none {
        let ty = respan(output.to_token_stream(), span);
        assertions.extend(quote_spanned!(span=> #rt::assert_cache_none_applies::<#ty>();));
    }
    let propagate = match args.common.on_error {
        Some((OnError::Propagate, span)) => {
            let ty = respan(output.to_token_stream(), span);
            assertions.extend(quote_spanned!(span=> #rt::assert_propagate_applies::<#ty>();));
            // Spanned on the option, so a missing `From<cachestack::Error>` points at it.
            Some(respan(
                quote!(let __cachestack_policy = (&&&#rt::Kind::<#output>::new()).__cachestack_propagate(__cachestack_policy);),
                span,
            ))
        }
        _ => None,
    };
    let policy = quote! {{
        #[allow(unused_imports)]
        use #rt::{OptionKind as _, PlainKind as _, ResultKind as _};
        let __cachestack_policy = (&&&#rt::Kind::<#output>::new()).#policy_method(#rt::Flags { cache_none: #cache_none });
        #propagate
        __cachestack_policy
    }};

    let ttl = match &args.ttl {
        None => quote!(::core::option::Option::None),
        Some(Ttl::Fixed(d)) => {
            let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
            quote!(::core::option::Option::Some(::core::time::Duration::new(#secs, #nanos)))
        }
        Some(Ttl::Expr(e)) => {
            quote!(::core::option::Option::Some({ let __cachestack_ttl: ::core::time::Duration = #e; __cachestack_ttl }))
        }
    };
    let lock = args.lock.unwrap_or(true);
    let condition = match &args.condition {
        Some(c) => {
            // The check spans exactly the closure: a wrong signature points at it.
            let tokens: Vec<TokenTree> = c.to_token_stream().into_iter().collect();
            let first = tokens.first().map_or_else(Span::call_site, TokenTree::span);
            let last = tokens.last().map_or(first, TokenTree::span);
            let head = respan(quote!(#rt::condition::<#output, _>), first);
            let and = respan(quote!(&), first);
            let mut closure = Group::new(proc_macro2::Delimiter::Parenthesis, c.to_token_stream());
            closure.set_span(last);
            let mut args = Group::new(proc_macro2::Delimiter::Parenthesis, quote!(#and #closure));
            args.set_span(last);
            quote!(#head #args)
        }
        None => quote!(#rt::condition::<#output, _>(&#rt::always::<#output>)),
    };
    let cache_name = match &args.common.cache {
        Some(name) => quote!(::core::option::Option::Some(#name)),
        None => quote!(::core::option::Option::None),
    };

    let body = body_thunk(model, true, true);
    let miss_call = if is_async {
        quote!(#rt::miss_async(&#site, #miss, #body, #condition).await)
    } else {
        quote!(#rt::miss_sync(&#site, #miss, #body, #condition))
    };
    let call = |m: TokenStream| {
        let call = quote!(#inner_path #turbofish(#self_arg #m, #(#arg_names),*) #dot_await);
        if unsafety.is_some() {
            quote!(unsafe { #call })
        } else {
            call
        }
    };
    let call_normal = call(quote!(#rt::Mode::Call));
    let call_refresh = call(quote!(#rt::Mode::Refresh));

    let stats_fn = format_ident!("{}_stats", ident);
    let invalidate_fn = format_ident!("{}_invalidate", ident);
    let refresh_fn = format_ident!("{}_refresh", ident);
    let key_companion = format_ident!("{}_key", ident);
    let invalidate_call = if is_async {
        quote!(#rt::invalidate_async(#state_path(), #rt::render_key(|#buf| #key_path(#self_ref_arg #(#ref_args,)* #buf))).await)
    } else {
        quote!(#rt::invalidate_sync(#state_path(), #rt::render_key(|#buf| #key_path(#self_ref_arg #(#ref_args,)* #buf))))
    };

    let doc_stats = format!(" Counters of {link}: hits, misses, waits on in-flight computations, cache errors.");
    let doc_invalidate = format!(
        " Removes the cached result of {link} for these arguments; `Ok(true)` if one was cached. Generated by `#[cached]`."
    );
    let doc_refresh = format!(
        " Runs {link} without reading the cache and stores the result (under the same rules as a miss). Generated by `#[cached]`."
    );
    let doc_key = format!(" The cache key of {link} for these arguments. Generated by `#[cached]`.");

    quote! {
        #(#attrs)*
        #vis #unsafety #abi #asyncness fn #ident #generics (#receiver_decl #(#wrapper_params),*) #ret #where_clause {
            #call_normal
        }

        #[doc(hidden)]
        #[allow(dead_code, clippy::too_many_arguments, clippy::used_underscore_binding, clippy::redundant_closure_call)]
        #(#body_lints)*
        #unsafety #asyncness fn #inner #generics (#receiver_decl #mode: #rt::Mode, #(#inner_params),*) #ret #where_clause {
            #rt::thread_local! {
                static #slot: #rt::CacheSlot = const { #rt::CacheSlot::new() };
            }
            #assertions
            let #site = #rt::Site::new(#state_path(), #policy, #ttl, #lock);
            match #rt::lookup(&#site, &#slot, #mode, |#buf| #key_path(#self_ref_arg #(&#arg_names,)* #buf)) {
                #rt::Lookup::Hit(#hit) => #hit,
                #rt::Lookup::Miss(#miss) => #miss_call,
            }
        }

        #[doc(hidden)]
        #[allow(dead_code, unused_variables, clippy::ptr_arg, clippy::trivially_copy_pass_by_ref, clippy::too_many_arguments)]
        fn #key_fn #generics (#ref_receiver #(#key_params,)* #buf: &mut #rt::String) #where_clause {
            #key_body
        }

        #[doc(hidden)]
        #[allow(dead_code)]
        #[inline]
        fn #state_fn() -> &'static #rt::CachedFn {
            static __CACHESTACK_STATE: #rt::CachedFn =
                #rt::CachedFn::new(::core::concat!(::core::module_path!(), "::", #name_str), #cache_name);
            &__CACHESTACK_STATE
        }

        #[doc = #doc_stats]
        #[allow(dead_code)]
        #vis fn #stats_fn() -> #rt::FnStats {
            #state_path().stats()
        }

        #[doc = #doc_invalidate]
        #[allow(dead_code, clippy::too_many_arguments)]
        #vis #asyncness fn #invalidate_fn #generics (#ref_receiver #(#ref_params),*) -> #rt::Result<::core::primitive::bool> #where_clause {
            #invalidate_call
        }

        #[doc = #doc_refresh]
        #[allow(dead_code, clippy::too_many_arguments)]
        #vis #unsafety #asyncness fn #refresh_fn #generics (#receiver_decl #(#wrapper_params),*) #ret #where_clause {
            #call_refresh
        }

        #[doc = #doc_key]
        #[allow(dead_code, clippy::too_many_arguments)]
        #vis fn #key_companion #generics (#ref_receiver #(#ref_params),*) -> #rt::String #where_clause {
            #rt::render_key(|#buf| #key_path(#self_ref_arg #(#ref_args,)* #buf))
        }
    }
}

/// Expands `#[invalidate]`.
pub fn invalidate(model: &Model, args: &InvalidateArgs) -> TokenStream {
    let names = Names::new(&args.common);
    let rt = &names.rt;
    let Names { buf, keys, result, err, failed, .. } = &names;
    let ident = &model.sig.ident;
    let name_str = ident.to_string();
    let output = &model.output;
    let is_async = model.sig.asyncness.is_some();
    let nameable = !contains_impl(output);
    let prefix = key_prefix(&args.common);
    let count = args.keys.len();
    let renders = args.keys.iter().map(|t| {
        let body = template_body(t, &prefix, &names, model, Access::Direct);
        quote!(#rt::render_key(|#buf| { #body }))
    });
    let cache_name = match &args.common.cache {
        Some(name) => quote!(::core::option::Option::Some(#name)),
        None => quote!(::core::option::Option::None),
    };
    let propagate = matches!(args.common.on_error, Some((OnError::Propagate, _)));
    let function = quote!(::core::concat!(::core::module_path!(), "::", #name_str));
    let remove = if is_async {
        quote!(#rt::invalidate_keys_async(#function, #cache_name, &#keys, #propagate).await)
    } else {
        quote!(#rt::invalidate_keys_sync(#function, #cache_name, &#keys, #propagate))
    };
    let mut assertions = TokenStream::new();
    let handle = if propagate {
        let span = args.common.on_error.map(|(_, s)| s).unwrap_or_else(Span::call_site);
        let ty = respan(output.to_token_stream(), span);
        assertions.extend(quote_spanned!(span=> #rt::assert_propagate_applies::<#ty>();));
        let method = Ident::new("__cachestack_fail", span);
        quote! {
            if let ::core::option::Option::Some(#err) = #remove {
                #[allow(unused_imports)]
                use #rt::{OptionKind as _, PlainKind as _, ResultKind as _};
                if let ::core::option::Option::Some(#failed) = (&&&#rt::Kind::<#output>::new()).#method(#err) {
                    return #failed;
                }
            }
        }
    } else {
        quote!(let _ = #remove;)
    };
    let body = body_thunk(model, nameable, false);
    let run = if is_async {
        quote!(let #result = #body.await;)
    } else {
        quote! {
            #[allow(clippy::redundant_closure_call)]
            let #result = (#body)();
        }
    };
    let (before, after) = if args.before {
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
    let attrs = &model.attrs;
    let vis = &model.vis;
    let sig = &model.sig;
    quote! {
        #(#attrs)*
        #vis #sig {
            #assertions
            let #keys: [#rt::String; #count] = [#(#renders),*];
            #before
            #run
            #after
            #result
        }
    }
}

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
