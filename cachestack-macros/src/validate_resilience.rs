//! Step 3 for the resilience options of `#[cached]` (`stale_if_error`, `stale_throttle`,
//! `stale_while_revalidate`, `refresh_ahead`, `timeout`, `hard_timeout`, `jitter`,
//! `lock_timeout`, `lock = "distributed"` and its `lock_lease`): each value on its own, then against `ttl` and each other ([`options`]), then
//! against the rest of the attribute and the function ([`applies`]). The list of what is rejected
//! is in [`crate::validate`]. A rejected option leaves the function without resilience options,
//! so one mistake gives one message.

use std::time::Duration;

use proc_macro2::Span;
use quote::ToTokens;

use crate::errors::Errors;
use crate::model::{Function, RefreshAhead, Resilience, Ttl};
use crate::parse::{Arg, DurationText, Percent, RefreshAheadText, ResilienceArgs};
use crate::validate::{find_borrow, named};

/// The options given (and readable), with the spans of their names, in the order checked.
pub struct Given(Vec<(&'static str, Span)>);

impl Given {
    /// A function whose only reason to go through the resilience engine is `tags` (given at
    /// `span`): its values are written with a write time taken before the body runs.
    pub fn tags(span: Span) -> Self {
        Given(vec![("tags", span)])
    }

    fn span(&self, name: &str) -> Option<Span> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, span)| *span)
    }

    fn first(&self) -> Option<(&'static str, Span)> {
        self.0.first().copied()
    }
}

/// A positive duration option; records it as given.
fn duration(
    arg: Option<Arg<DurationText>>,
    name: &'static str,
    given: &mut Given,
    errors: &mut Errors,
) -> Option<Duration> {
    let (DurationText(lit, d), span) = named(arg, errors)?;
    given.0.push((name, span));
    if d.is_zero() {
        errors.at(lit.span(), format!("`{name}` must be greater than zero, e.g. `{name} = \"30s\"`"));
        return None;
    }
    Some(d)
}

/// A part of the TTL, strictly between 0% and 100%.
fn fraction(Percent(lit, fraction): Percent, name: &str, errors: &mut Errors) -> Option<f64> {
    if fraction > 0.0 && fraction < 1.0 {
        return Some(fraction);
    }
    let why = match name {
        "refresh_ahead" => "at 100% the value has expired, and a refresh then is a miss",
        _ => "it is the largest part of the TTL cut from each stored TTL",
    };
    errors.at(
        lit.span(),
        format!("`{name} = {:?}` must be more than 0% and less than 100% of the TTL: {why}", lit.value()),
    );
    None
}

/// Reads and checks the options against `ttl` and each other; `None` when none is given (or
/// one is wrong: the mistake is reported and the function expands without them).
/// `distributed`: the span of `lock` when it is `lock = "distributed"`.
pub fn options(
    args: ResilienceArgs,
    distributed: Option<Span>,
    ttl: Option<&Ttl>,
    ttl_given: bool,
    errors: &mut Errors,
) -> Option<(Resilience, Given)> {
    let mut given = Given(Vec::new());
    let mut ok = true;
    let mut r = Resilience {
        stale_if_error: duration(args.stale_if_error, "stale_if_error", &mut given, errors),
        stale_throttle: duration(args.stale_throttle, "stale_throttle", &mut given, errors),
        stale_while_revalidate: duration(args.stale_while_revalidate, "stale_while_revalidate", &mut given, errors),
        ..Resilience::default()
    };
    if let Some((refresh, span)) = named(args.refresh_ahead, errors) {
        given.0.push(("refresh_ahead", span));
        r.refresh_ahead = refresh_ahead(refresh, ttl, errors);
        ok &= r.refresh_ahead.is_some();
    }
    r.timeout = duration(args.timeout, "timeout", &mut given, errors);
    let hard_span = args.hard_timeout.as_ref().map(|arg| arg.name);
    r.hard_timeout = duration(args.hard_timeout, "hard_timeout", &mut given, errors).zip(hard_span);
    if let Some((jitter, span)) = named(args.jitter, errors) {
        given.0.push(("jitter", span));
        r.jitter = fraction(jitter, "jitter", errors);
        ok &= r.jitter.is_some();
    }
    r.lock_timeout = duration(args.lock_timeout, "lock_timeout", &mut given, errors);
    let lease_span = args.lock_lease.as_ref().map(|arg| arg.name);
    r.lock_lease = duration(args.lock_lease, "lock_lease", &mut given, errors);
    if let Some(span) = distributed {
        given.0.push(("lock = \"distributed\"", span));
        r.distributed = true;
    } else if let Some(span) = lease_span {
        errors.at(span, "`lock_lease` is the lease of the distributed lock: it needs `lock = \"distributed\"`");
        ok = false;
    }
    given.first()?;
    let durations = [
        ("stale_if_error", r.stale_if_error.is_some()),
        ("stale_throttle", r.stale_throttle.is_some()),
        ("stale_while_revalidate", r.stale_while_revalidate.is_some()),
        ("timeout", r.timeout.is_some()),
        ("hard_timeout", r.hard_timeout.is_some()),
        ("lock_timeout", r.lock_timeout.is_some()),
        ("lock_lease", r.lock_lease.is_some()),
    ];
    ok &= durations.iter().all(|(name, read)| *read || given.span(name).is_none());
    ok &= relations(&r, &given, ttl_given, errors);
    ok.then_some((r, given))
}

fn refresh_ahead(refresh: RefreshAheadText, ttl: Option<&Ttl>, errors: &mut Errors) -> Option<RefreshAhead> {
    match refresh {
        RefreshAheadText::Percent(percent) => fraction(percent, "refresh_ahead", errors).map(RefreshAhead::Fraction),
        RefreshAheadText::After(DurationText(lit, after)) => {
            if after.is_zero() {
                errors.at(lit.span(), "`refresh_ahead` must be greater than zero, e.g. `refresh_ahead = \"80%\"`");
                return None;
            }
            if let Some(Ttl::Fixed(ttl)) = ttl {
                if after >= *ttl {
                    let message = format!(
                        "`refresh_ahead = {:?}` must be less than the ttl ({}): a refresh after the value expired is a miss",
                        lit.value(),
                        humantime::format_duration(*ttl)
                    );
                    errors.at(lit.span(), message);
                    return None;
                }
            }
            Some(RefreshAhead::After(after))
        }
    }
}

/// The options against `ttl` and each other.
fn relations(r: &Resilience, given: &Given, ttl_given: bool, errors: &mut Errors) -> bool {
    let mut ok = true;
    if !ttl_given {
        for (name, example) in [
            ("stale_if_error", "stale_if_error = \"1h\""),
            ("stale_while_revalidate", "stale_while_revalidate = \"30s\""),
            ("refresh_ahead", "refresh_ahead = \"80%\""),
            ("jitter", "jitter = \"10%\""),
        ] {
            if let Some(span) = given.span(name) {
                let message = format!(
                    "`{name}` needs a `ttl`: a value is stale or refreshed only relative to its time to live, e.g. `ttl = \"5m\", {example}`"
                );
                errors.at(span, message);
                ok = false;
            }
        }
    }
    if r.stale_if_error.is_none() {
        if let Some(span) = given.span("stale_throttle") {
            errors.at(span, "`stale_throttle` needs `stale_if_error`: it is how long callers get the stale value without running the body again after a failure");
            ok = false;
        }
        if let Some(span) = given.span("timeout") {
            errors.at(span, "`timeout` (the soft timeout) answers with a stale value, so it needs `stale_if_error`; use `hard_timeout` to bound every call");
            ok = false;
        }
    }
    if let (Some(soft), Some((hard, _)), Some(span)) = (r.timeout, r.hard_timeout, given.span("timeout")) {
        if soft >= hard {
            let message = format!(
                "`timeout` ({}) must be less than `hard_timeout` ({}): the soft timeout answers with a stale value before the caller stops waiting",
                humantime::format_duration(soft),
                humantime::format_duration(hard)
            );
            errors.at(span, message);
            ok = false;
        }
    }
    ok
}

/// The other arguments that resilience options exclude, with the spans of their names.
pub struct Conflicts {
    pub lock: Option<(bool, Span)>,
    pub cache_err: Option<(bool, Span)>,
    pub propagate: Option<Span>,
}

/// Checks the options against the rest of the attribute and the function; `None` (reported)
/// when they cannot apply.
pub fn applies(
    mut r: Resilience,
    given: &Given,
    conflicts: Conflicts,
    func: &Function,
    errors: &mut Errors,
) -> Option<Resilience> {
    let (first, _) = given.first()?;
    let mut ok = true;
    if let Some((false, span)) = conflicts.lock {
        errors.at(
            span,
            format!("`{first}` runs the body under single flight (one computation per key): remove `lock = false`"),
        );
        ok = false;
    }
    if let Some((true, span)) = conflicts.cache_err {
        errors.at(span, format!("`cache_err = true` cannot be combined with `{first}`: with resilience options an `Err` is a failure (answered with a stale value by `stale_if_error`), not a value to store"));
        ok = false;
    }
    if let Some(span) = conflicts.propagate {
        errors.at(span, format!("`on_cache_error = \"propagate\"` cannot be combined with `{first}`: with resilience options, cache failures are counted and logged and the call goes on (a stale value may still answer it)"));
        ok = false;
    }
    let background = ["stale_while_revalidate", "refresh_ahead", "timeout"]
        .into_iter()
        .chain(func.sig.asyncness.is_none().then_some("hard_timeout"))
        .find(|name| given.span(name).is_some());
    if let Some(option) = background {
        ok &= owned_arguments(option, func, errors);
        r.owned = true;
    }
    ok.then_some(r)
}

/// The arguments of a function whose body may run after its caller returned: owned, so they can
/// be cloned into that computation.
fn owned_arguments(option: &str, func: &Function, errors: &mut Errors) -> bool {
    let why = format!(
        "`{option}` runs the body after the caller returned (in the background), so the arguments are cloned into it and must be owned"
    );
    let mut ok = true;
    if let Some(receiver) = &func.receiver {
        let borrowed = if receiver.reference.is_some() {
            Some(receiver.to_token_stream())
        } else {
            find_borrow(receiver.ty.to_token_stream())
        };
        if let Some(tokens) = borrowed {
            errors.push(syn::Error::new_spanned(
                tokens,
                format!("{why}: `self` is borrowed here; take `self: Arc<Self>` (cloned into the computation), or cache a function of owned arguments"),
            ));
            ok = false;
        }
    }
    for param in &func.params {
        if let Some(tokens) = find_borrow(param.ty.to_token_stream()) {
            errors.push(syn::Error::new_spanned(
                tokens,
                format!("{why}: this argument borrows; take an owned type (`String` for `&str`, `Vec<T>` for `&[T]`, `Arc<T>` to share)"),
            ));
            ok = false;
        }
    }
    for lifetime in func.sig.generics.lifetimes() {
        errors.push(syn::Error::new_spanned(
            lifetime,
            format!("{why}: a lifetime parameter borrows; take owned arguments"),
        ));
        ok = false;
    }
    ok
}
