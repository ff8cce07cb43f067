//! `#[cached]` on every supported function shape, sync and async, on the default (memory) cache:
//! free functions, reference and `impl Trait` arguments, destructured and `mut` parameters,
//! generic functions, methods (`&self`, `self: Arc<Self>`, generic impls), associated functions,
//! recursion; and the companions of each.
#![allow(clippy::unwrap_used)]

use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use cachestack::{cached, Cacheable};

static PLAIN_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
fn plain(a: u64, b: String) -> String {
    PLAIN_RUNS.fetch_add(1, SeqCst);
    format!("{a}/{b}")
}

#[test]
fn free_fn_is_memoized_per_argument_tuple() {
    assert_eq!(plain(1, "x".into()), "1/x");
    assert_eq!(plain(1, "x".into()), "1/x");
    assert_eq!(plain(2, "x".into()), "2/x");
    assert_eq!(PLAIN_RUNS.load(SeqCst), 2);
    let stats = plain_stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (1, 2, 0));
    assert_eq!(stats.name, "macros_shapes::plain");
}

static BLOB_RUNS: AtomicUsize = AtomicUsize::new(0);

/// A large value behind an `Arc` (serde's `rc` feature): the cache keeps the `Arc`.
#[cached]
fn blob(id: u64) -> Arc<Vec<u8>> {
    BLOB_RUNS.fetch_add(1, SeqCst);
    Arc::new(vec![id as u8; 1024])
}

#[test]
fn an_arc_return_type_hands_out_the_cached_arc_without_a_deep_copy() {
    let first = blob(1);
    let hit = blob(1);
    assert!(Arc::ptr_eq(&first, &hit), "a hit hands out the cached Arc itself");
    assert_eq!(BLOB_RUNS.load(SeqCst), 1);
    assert!(blob_invalidate(&1).unwrap());
    let again = blob(1);
    assert!(!Arc::ptr_eq(&first, &again), "computed again after the invalidation");
    assert_eq!(*again, *first);
    assert_eq!(BLOB_RUNS.load(SeqCst), 2);
}

static SPLIT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
fn split(a: &str, b: &str) -> String {
    SPLIT_RUNS.fetch_add(1, SeqCst);
    format!("{a}|{b}")
}

#[test]
fn default_keys_never_collide_across_argument_boundaries() {
    assert_eq!(split("a:b", "c"), "a:b|c");
    assert_eq!(split("a", "b:c"), "a|b:c");
    assert_eq!(split("a,b", "c"), "a,b|c");
    assert_eq!(split("a", "b,c"), "a|b,c");
    assert_eq!(split("a\",\"b", ""), "a\",\"b|");
    assert_eq!(split("a", "b"), "a|b");
    assert_eq!(SPLIT_RUNS.load(SeqCst), 6);
    assert_ne!(split_key("a:b", "c"), split_key("a", "b:c"));
    assert_ne!(split_key("a\",\"b", ""), split_key("a", "b"));
    assert_eq!(split_key("a:b", "c"), r#"macros_shapes::split("a:b","c")"#);
}

static LEN_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
fn length(text: impl AsRef<str> + Debug) -> usize {
    LEN_RUNS.fetch_add(1, SeqCst);
    text.as_ref().len()
}

#[test]
fn impl_trait_arguments_are_keyed_by_debug() {
    assert_eq!(length("abc"), 3);
    assert_eq!(length(String::from("abc")), 3);
    assert_eq!(length("abcd"), 4);
    assert_eq!(LEN_RUNS.load(SeqCst), 2);
}

static PAIR_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
fn pair_sum((a, b): (u32, u32), mut scale: u32) -> u32 {
    PAIR_RUNS.fetch_add(1, SeqCst);
    scale += 1;
    (a + b) * scale
}

#[test]
fn destructured_and_mut_parameters() {
    assert_eq!(pair_sum((1, 2), 1), 6);
    assert_eq!(pair_sum((1, 2), 1), 6);
    assert_eq!(pair_sum((2, 1), 1), 6);
    assert_eq!(PAIR_RUNS.load(SeqCst), 2);
    assert_eq!(pair_sum_key(&(1, 2), &1), "macros_shapes::pair_sum((1\\, 2\\),1)");
}

static GENERIC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
fn identity<T: Cacheable + Debug>(value: T) -> T {
    GENERIC_RUNS.fetch_add(1, SeqCst);
    value
}

#[test]
fn generic_fns_key_each_instantiation_apart() {
    assert_eq!(identity(7u32), 7u32);
    assert_eq!(identity(7u64), 7u64);
    assert_eq!(identity(7u32), 7u32);
    assert_eq!(GENERIC_RUNS.load(SeqCst), 2);
    assert_eq!(identity_key(&7u8), "macros_shapes::identity::<u8>(7)");
    assert_eq!(identity_stats().errors, 0);
}

#[derive(Debug)]
struct Account {
    tenant: u32,
    runs: AtomicUsize,
}

impl Account {
    #[cached]
    fn balance(&self, id: u64) -> u64 {
        self.runs.fetch_add(1, SeqCst);
        id * 100 + u64::from(self.tenant)
    }

    #[cached(key = "tenant:<self.tenant>:limit:<id>")]
    fn limit(&self, id: u64) -> u64 {
        self.runs.fetch_add(1, SeqCst);
        id + u64::from(self.tenant)
    }

    #[cached]
    fn shared(self: Arc<Self>, id: u64) -> u64 {
        self.runs.fetch_add(1, SeqCst);
        id
    }

    #[cached]
    fn open(tenant: u32) -> Self {
        Account { tenant, runs: AtomicUsize::new(0) }
    }

    #[cached(in_impl)]
    fn rate(id: u64) -> u64 {
        id * 3
    }
}

// Serialising an `Account` (for the `open` constructor's cache) goes through its tenant only.
impl Clone for Account {
    fn clone(&self) -> Self {
        Account { tenant: self.tenant, runs: AtomicUsize::new(0) }
    }
}
impl serde::Serialize for Account {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.tenant.serialize(s)
    }
}
impl<'de> serde::Deserialize<'de> for Account {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Account { tenant: u32::deserialize(d)?, runs: AtomicUsize::new(0) })
    }
}

#[test]
fn methods_leave_the_receiver_out_of_the_default_key() {
    let a = Account { tenant: 1, runs: AtomicUsize::new(0) };
    let b = Account { tenant: 2, runs: AtomicUsize::new(0) };
    assert_eq!(a.balance(5), 501);
    // Same arguments, other receiver: the receiver is not part of the default key.
    assert_eq!(b.balance(5), 501);
    assert_eq!(b.runs.load(SeqCst), 0);
    assert_eq!(a.balance_key(&5), "macros_shapes::Account::balance(5)");
    assert_eq!(Account::balance_stats().hits, 1);
}

#[test]
fn templates_can_name_receiver_fields() {
    let a = Account { tenant: 1, runs: AtomicUsize::new(0) };
    let b = Account { tenant: 2, runs: AtomicUsize::new(0) };
    assert_eq!(a.limit(5), 6);
    assert_eq!(b.limit(5), 7);
    assert_eq!(a.limit(5), 6);
    assert_eq!(a.runs.load(SeqCst) + b.runs.load(SeqCst), 2);
    assert_eq!(b.limit_key(&5), "tenant:2:limit:5");
    assert!(a.limit_invalidate(&5).unwrap());
    assert!(!a.limit_invalidate(&5).unwrap());
}

#[test]
fn arc_receivers_and_associated_functions() {
    let a = Arc::new(Account { tenant: 9, runs: AtomicUsize::new(0) });
    assert_eq!(a.clone().shared(1), 1);
    assert_eq!(a.clone().shared(1), 1);
    assert_eq!(a.runs.load(SeqCst), 1);
    assert_eq!(a.shared_key(&1), "macros_shapes::Account::shared(1)");

    assert_eq!(Account::open(4).tenant, 4);
    assert_eq!(Account::open(4).tenant, 4);
    assert_eq!(Account::open_stats().hits, 1);

    assert_eq!(Account::rate(2), 6);
    assert_eq!(Account::rate(2), 6);
    assert_eq!(Account::rate_stats().hits, 1);
    assert_eq!(Account::rate_key(&2), "macros_shapes::Account::rate(2)");
}

/// A second type with a method of the same name in the same module: its entries must not be
/// confused with `Account::balance`'s.
struct Ledger;

impl Ledger {
    #[cached]
    fn balance(&self, id: u64) -> String {
        format!("ledger {id}")
    }
}

#[test]
fn same_method_name_on_two_types_does_not_collide() {
    let account = Account { tenant: 0, runs: AtomicUsize::new(0) };
    assert_eq!(account.balance(77), 7700);
    assert_eq!(Ledger.balance(77), "ledger 77");
    assert_eq!(Ledger.balance(77), "ledger 77");
    assert_eq!(Ledger::balance_stats().errors, 0);
}

struct Labeller<T> {
    prefix: T,
}

impl<T: std::fmt::Display + Sync> Labeller<T> {
    #[cached(key = "label:<self.prefix>:<n>")]
    fn label(&self, n: u32) -> String {
        format!("{}-{n}", self.prefix)
    }
}

#[test]
fn methods_of_generic_impls() {
    let a = Labeller { prefix: "a" };
    let b = Labeller { prefix: 3 };
    assert_eq!(a.label(1), "a-1");
    assert_eq!(b.label(1), "3-1");
    assert_eq!(a.label(1), "a-1");
    assert_eq!(Labeller::<&str>::label_stats().hits, 1);
}

static FIB_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
fn fib(n: u64) -> u64 {
    FIB_RUNS.fetch_add(1, SeqCst);
    if n < 2 {
        n
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

#[test]
fn recursion_with_other_keys_is_memoized() {
    assert_eq!(fib(60), 1_548_008_755_920);
    assert_eq!(FIB_RUNS.load(SeqCst), 61);
}

static SELF_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Calls itself with the same key, three levels deep: each nested call must run (uncached)
/// instead of waiting for the outer call, which is computing that very key.
#[cached]
fn same_key(n: u32) -> u32 {
    let depth = SELF_RUNS.fetch_add(1, SeqCst);
    if depth < 2 {
        same_key(n) + 1
    } else {
        n
    }
}

#[test]
fn recursion_with_the_same_key_runs_uncached_instead_of_deadlocking() {
    assert_eq!(same_key(10), 12);
    assert_eq!(SELF_RUNS.load(SeqCst), 3);
    // The outermost result was stored.
    assert_eq!(same_key(10), 12);
    assert_eq!(SELF_RUNS.load(SeqCst), 3);
}

static ASYNC_SELF_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
async fn async_same_key(n: u32) -> u32 {
    let depth = ASYNC_SELF_RUNS.fetch_add(1, SeqCst);
    if depth < 2 {
        Box::pin(async_same_key(n)).await + 1
    } else {
        n
    }
}

#[tokio::test]
async fn async_recursion_with_the_same_key_runs_uncached_instead_of_deadlocking() {
    assert_eq!(async_same_key(10).await, 12);
    assert_eq!(ASYNC_SELF_RUNS.load(SeqCst), 3);
    assert_eq!(async_same_key(10).await, 12);
    assert_eq!(ASYNC_SELF_RUNS.load(SeqCst), 3);
}

// ---- async shapes -------------------------------------------------------------------------

static ASYNC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
async fn async_greet(name: &str, times: usize) -> String {
    ASYNC_RUNS.fetch_add(1, SeqCst);
    tokio::task::yield_now().await;
    name.repeat(times)
}

#[tokio::test]
async fn async_fns_with_reference_arguments() {
    assert_eq!(async_greet("ab", 2).await, "abab");
    assert_eq!(async_greet("ab", 2).await, "abab");
    assert_eq!(async_greet("ab", 3).await, "ababab");
    assert_eq!(ASYNC_RUNS.load(SeqCst), 2);
    assert_eq!(async_greet_stats().hits, 1);
    assert_eq!(async_greet_key("ab", &2), r#"macros_shapes::async_greet("ab",2)"#);
}

#[cached]
async fn async_identity<T: Cacheable + Debug>(value: T) -> T {
    value
}

struct Service {
    region: &'static str,
}

impl Service {
    #[cached(key = "svc:<self.region>:<id>")]
    async fn lookup(&self, id: u32) -> Option<String> {
        tokio::task::yield_now().await;
        (id > 0).then(|| format!("{}-{id}", self.region))
    }
}

#[tokio::test]
async fn async_generic_fns_and_methods() {
    assert_eq!(async_identity(vec![1u8, 2]).await, vec![1, 2]);
    assert_eq!(async_identity(vec![1u8, 2]).await, vec![1, 2]);
    assert_eq!(async_identity_stats().hits, 1);

    let svc = Service { region: "eu" };
    assert_eq!(svc.lookup(3).await.as_deref(), Some("eu-3"));
    assert_eq!(svc.lookup(3).await.as_deref(), Some("eu-3"));
    // `None` is cached like any value.
    assert_eq!(svc.lookup(0).await, None);
    assert_eq!(svc.lookup(0).await, None);
    assert_eq!(Service::lookup_stats().hits, 2);
    assert!(svc.lookup_invalidate(&3).await.unwrap());
    assert_eq!(svc.lookup(3).await.as_deref(), Some("eu-3"));
    assert_eq!(Service::lookup_stats().misses, 3);
}

fn assert_send<T: Send>(_: &T) {}

#[test]
fn async_wrappers_are_send_when_the_body_is() {
    let fut = async_greet("x", 1);
    assert_send(&fut);
    let svc = Service { region: "us" };
    let fut = svc.lookup(1);
    assert_send(&fut);
}

// ---- companions ----------------------------------------------------------------------------

static COMPANION_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(key = "c:<id>")]
fn companion(id: u32) -> u32 {
    COMPANION_RUNS.fetch_add(1, SeqCst) as u32 + id * 1000
}

#[test]
fn refresh_recomputes_and_stores_without_reading() {
    let first = companion(1);
    assert_eq!(companion(1), first);
    let refreshed = companion_refresh(1);
    assert_ne!(refreshed, first);
    assert_eq!(companion(1), refreshed);
    assert_eq!(COMPANION_RUNS.load(SeqCst), 2);
    assert_eq!(companion_key(&1), "c:1");
    assert!(companion_invalidate(&1).unwrap());
    assert_ne!(companion(1), refreshed);
}

#[cached]
async fn async_companion(id: u32) -> u32 {
    id
}

#[tokio::test]
async fn async_companions() {
    assert_eq!(async_companion(4).await, 4);
    assert_eq!(async_companion_refresh(4).await, 4);
    assert_eq!(async_companion(4).await, 4);
    assert_eq!(async_companion_stats().hits, 1);
    assert!(async_companion_invalidate(&4).await.unwrap());
    assert!(!async_companion_invalidate(&4).await.unwrap());
}

// ---- default keys --------------------------------------------------------------------------------

#[cached]
fn scaled<const FACTOR: u64>(x: u64) -> u64 {
    x * FACTOR
}

#[test]
fn const_generic_parameters_are_part_of_the_default_key() {
    assert_eq!(scaled::<2>(5), 10);
    assert_eq!(scaled::<3>(5), 15);
    assert_ne!(scaled_key::<2>(&5), scaled_key::<3>(&5));
    assert_eq!(scaled_key::<2>(&5), "macros_shapes::scaled::<2>(5)");
}

fn first_scope() -> u32 {
    #[cached]
    fn local(n: u32) -> u32 {
        n + 1
    }
    local(1)
}

fn second_scope() -> u32 {
    #[cached]
    fn local(n: u32) -> u32 {
        n + 100
    }
    local(1)
}

#[test]
fn cached_fns_of_one_name_in_two_fn_bodies_do_not_share_keys() {
    assert_eq!(first_scope(), 2);
    assert_eq!(second_scope(), 101);
    assert_eq!(first_scope(), 2);
}

mod one {
    #[cachestack::cached]
    pub fn same_name(n: u32) -> u32 {
        n + 1
    }
}

mod two {
    #[cachestack::cached]
    pub fn same_name(n: u32) -> u32 {
        n + 2
    }
}

#[test]
fn cached_fns_of_one_name_in_two_modules_do_not_share_keys() {
    assert_eq!(one::same_name(1), 2);
    assert_eq!(two::same_name(1), 3);
    assert_ne!(one::same_name_key(&1), two::same_name_key(&1));
}

#[cached]
fn two_texts(a: &str, b: &str) -> String {
    format!("{a}|{b}")
}

#[test]
fn distinct_argument_tuples_never_share_a_default_key() {
    let parts = ["", "a", ",", ")", "(", "\\", "\"", "a,b", "a)", "\\,", "\\)", ",\"", "\",\"", "a\\"];
    let mut keys = std::collections::HashSet::new();
    for a in parts {
        for b in parts {
            assert!(keys.insert(two_texts_key(a, b)), "{a:?}, {b:?} collides");
        }
    }
    assert_eq!(two_texts("a,", "b"), "a,|b");
    assert_eq!(two_texts("a", ",b"), "a|,b");
}

#[cached]
fn parsed<T: cachestack::Cacheable + std::str::FromStr>(text: &str) -> Option<T> {
    text.parse().ok()
}

#[test]
fn type_parameters_that_only_the_return_type_names_key_each_instantiation_apart() {
    assert_eq!(parsed::<u8>("300"), None);
    assert_eq!(parsed::<u16>("300"), Some(300));
    assert_eq!(parsed_key::<u16>("300"), "macros_shapes::parsed::<u16>(\"300\")");
    assert!(parsed_invalidate::<u16>("300").unwrap());
    assert_eq!(parsed_refresh::<u32>("7"), Some(7));
}

// ---- shapes: lifetimes, where clauses, impl Trait next to type parameters ----------------------

#[cached]
fn described<'a, T>(value: &'a T, label: &'a str) -> String
where
    T: std::fmt::Debug + ?Sized + 'a,
{
    format!("{label}{value:?}")
}

#[cached]
fn mixed<T: std::fmt::Debug>(a: T, b: impl std::fmt::Debug) -> String {
    format!("{a:?}{b:?}")
}

struct Holder<T>(T);

impl<T> Holder<T>
where
    T: std::fmt::Debug + Sync,
{
    #[cached]
    fn show<U: std::fmt::Debug + cachestack::Cacheable>(&self, extra: U) -> String {
        format!("{:?}{extra:?}", self.0)
    }
}

#[test]
fn lifetimes_where_clauses_and_impl_trait_next_to_type_parameters() {
    assert_eq!(described("x", "l:"), "l:\"x\"");
    assert_eq!(described(&[1u8][..], "s:"), "s:[1]");
    assert_ne!(described_key("x", "l:"), described_key(&[1u8][..], "l:"));
    assert_eq!(mixed(1u8, "b"), "1\"b\"");
    assert_eq!(mixed_key::<u8>(&1, &"b"), "macros_shapes::mixed::<u8>(1,\"b\")");
    assert_eq!(Holder(1).show(2u8), "12");
    assert_eq!(Holder("a").show(2u8), "\"a\"2");
    assert_eq!(Holder(1).show_key(&2u16), "macros_shapes::Holder<i32>::show::<u16>(2)");
}
