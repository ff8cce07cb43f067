//! The behaviours of the atomic and pattern operations (`set_if_absent`, `incr`, `expire`/`ttl`,
//! `keys_matching`/`delete_matching`): native where the store has them, `Unsupported` where it
//! declares it cannot, never a wrong answer.

// A test suite: failing assertions and unwraps are its output.
#![allow(clippy::unwrap_used)]

use super::*;

/// Asserts that `result` is [`Error::Unsupported`] for `op`.
fn assert_unsupported<T: std::fmt::Debug>(op: &str, result: crate::Result<T>) {
    match result {
        Err(Error::Unsupported { op: reported, .. }) => assert_eq!(reported, op),
        other => panic!("`{op}` is declared unsupported but answered {other:?}"),
    }
}

/// `set_if_absent` stores only into an absent (or expired) key, and of 16 racing tasks exactly
/// one wins, whose value is the one stored.
pub async fn set_if_absent_has_one_winner(h: &Harness) {
    let b = h.open("setnx");
    if !h.supports("set_if_absent") {
        assert_unsupported("set_if_absent", b.set_if_absent("k", Value::new(1u32), Expiry::Default).await);
        return;
    }
    let cache = Cache::from_arc(b.clone());
    assert!(cache.set_if_absent("k", &1u32, None).await.unwrap(), "an absent key is set");
    assert!(!cache.set_if_absent("k", &2u32, None).await.unwrap(), "a present key is kept");
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(1));
    // An entry past its deadline is absent.
    let ttl = h.ttl_unit * 2;
    assert!(cache.set_if_absent("short", &1u32, Some(ttl)).await.unwrap());
    let entry = b.get("short").await.unwrap().expect("fresh");
    assert!(entry.ttl().is_some_and(|left| left <= ttl), "set_if_absent keeps the TTL: {entry:?}");
    let_expire(h, ttl).await;
    assert!(cache.set_if_absent("short", &2u32, None).await.unwrap(), "an expired key is absent");
    assert_eq!(cache.get::<u32>("short").await.unwrap(), Some(2));
    // The race.
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16u32)
        .map(|t| {
            let (cache, barrier) = (cache.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                (t, cache.set_if_absent("race", &t, None).await.unwrap())
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (t, won) = task.await.unwrap();
        if won {
            winners.push(t);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(cache.get::<u32>("race").await.unwrap(), Some(winners[0]), "the winner's value is stored");
}

/// `incr` creates, adds, subtracts, refuses what is not a counter or would overflow, keeps the
/// deadline given at creation, and loses no increment among 16 racing tasks.
pub async fn incr_counts_exactly(h: &Harness) {
    let b = h.open("incr");
    if !h.supports("incr") {
        assert_unsupported("incr", b.incr("n", 1, Expiry::Default).await);
        return;
    }
    let cache = Cache::from_arc(b.clone());
    assert_eq!(cache.incr("n", 5).await.unwrap(), 5, "an absent counter starts from 0");
    assert_eq!(cache.incr("n", -7).await.unwrap(), -2, "negative deltas subtract below zero");
    assert_eq!(cache.incr("n", 0).await.unwrap(), -2);
    assert_eq!(cache.get::<i64>("n").await.unwrap(), Some(-2), "a counter reads as i64");
    assert_eq!(b.get("n").await.unwrap().expect("counter").expires, None, "no TTL by default");
    // Not a counter: an error, and the value is untouched.
    cache.set("text", &"hello".to_string(), None).await.unwrap();
    assert!(cache.incr("text", 1).await.is_err(), "a string is not a counter");
    assert_eq!(cache.get::<String>("text").await.unwrap().as_deref(), Some("hello"));
    // Overflow: an error, and the counter is untouched.
    assert_eq!(cache.incr("big", i64::MAX - 1).await.unwrap(), i64::MAX - 1);
    assert!(cache.incr("big", 2).await.is_err(), "overflow is an error");
    assert_eq!(cache.get::<i64>("big").await.unwrap(), Some(i64::MAX - 1));
    // The TTL is given on creation and kept by later increments.
    let ttl = h.ttl_unit * 4;
    let deadline = Deadline::after(ttl);
    assert_eq!(b.incr("timed", 1, Expiry::At(deadline)).await.unwrap(), 1);
    assert_eq!(b.incr("timed", 1, Expiry::after(Duration::from_secs(3600))).await.unwrap(), 2);
    let reported = b.ttl("timed").await.unwrap().expect("live counter").expect("with a deadline");
    assert!(reported <= deadline, "deadline moved from {deadline:?} to {reported:?}");
    assert!(deadline.unix_millis() - reported.unix_millis() <= h.ttl_unit.as_millis() as u64);
    tokio::time::sleep(deadline.remaining() + h.ttl_unit + Duration::from_millis(20)).await;
    assert_eq!(cache.get::<i64>("timed").await.unwrap(), None, "the counter expired");
    assert_eq!(cache.incr("timed", 1).await.unwrap(), 1, "an expired counter starts again");
    // The race: no increment is lost.
    let rounds = h.race_rounds;
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (cache, barrier) = (cache.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                for _ in 0..rounds {
                    cache.incr("race", 1).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(cache.get::<i64>("race").await.unwrap(), Some(16 * rounds as i64), "increments were lost");
}

/// `expire` moves a live entry's deadline (to the one given, absolute), removes it
/// (`Expiry::Never`) or ends the entry (a deadline past); `ttl` reports the deadline; neither
/// touches the value or brings back a missing key.
pub async fn expire_and_ttl(h: &Harness) {
    let b = h.open("expire");
    let cache = Cache::from_arc(b.clone());
    assert_eq!(b.ttl("missing").await.unwrap(), None);
    cache.set("forever", &1u8, None).await.unwrap();
    assert_eq!(b.ttl("forever").await.unwrap(), Some(None), "no expiry");
    cache.set("k", &"v".to_string(), Some(Duration::from_secs(3600))).await.unwrap();
    let left = cache.ttl("k").await.unwrap().expect("live").expect("with a TTL");
    assert!(left <= Duration::from_secs(3600) && left > Duration::from_secs(3000), "{left:?}");
    if !h.supports("expire") {
        assert_unsupported("expire", b.expire("k", Expiry::Never).await);
        return;
    }
    assert!(!b.expire("missing", Expiry::Never).await.unwrap(), "a missing key is not created");
    assert_eq!(b.get("missing").await.unwrap().map(|e| e.expires), None);
    // Shorter, to an absolute deadline.
    let deadline = Deadline::after(h.ttl_unit * 4);
    assert!(b.expire("k", Expiry::At(deadline)).await.unwrap());
    let reported = b.ttl("k").await.unwrap().expect("live").expect("with a deadline");
    assert!(reported <= deadline && deadline.unix_millis() - reported.unix_millis() <= h.ttl_unit.as_millis() as u64);
    assert_eq!(cache.get::<String>("k").await.unwrap().as_deref(), Some("v"), "the value is unchanged");
    // Longer, then no expiry at all.
    assert!(b.expire("k", Expiry::after(Duration::from_secs(7200))).await.unwrap());
    assert!(cache.ttl("k").await.unwrap().flatten().is_some_and(|left| left > Duration::from_secs(3600)));
    assert!(b.expire("k", Expiry::Never).await.unwrap());
    assert_eq!(b.ttl("k").await.unwrap(), Some(None));
    assert_eq!(cache.get::<String>("k").await.unwrap().as_deref(), Some("v"));
    // A short deadline is honoured.
    let deadline = Deadline::after(h.ttl_unit * 3);
    assert!(b.expire("k", Expiry::At(deadline)).await.unwrap());
    tokio::time::sleep(deadline.remaining() + h.ttl_unit + Duration::from_millis(20)).await;
    assert_eq!(cache.get::<String>("k").await.unwrap(), None, "served past the deadline `expire` set");
    assert!(!b.expire("k", Expiry::Never).await.unwrap(), "an expired entry is not brought back");
    assert_eq!(cache.get::<String>("k").await.unwrap(), None);
    // A deadline already past ends the entry.
    cache.set("gone", &1u8, None).await.unwrap();
    let past = Deadline::at(SystemTime::now() - Duration::from_secs(1));
    b.expire("gone", Expiry::At(past)).await.unwrap();
    assert_eq!(cache.get::<u8>("gone").await.unwrap(), None);
    // A counter's deadline moves too.
    if h.supports("incr") {
        cache.incr("counter", 3).await.unwrap();
        assert!(b.expire("counter", Expiry::after(Duration::from_secs(600))).await.unwrap());
        assert!(cache.ttl("counter").await.unwrap().flatten().is_some_and(|left| left <= Duration::from_secs(600)));
        assert_eq!(cache.incr("counter", 1).await.unwrap(), 4, "still a counter");
    }
}

/// `keys_matching` and `delete_matching` see exactly the keys of this namespace that match the
/// whole pattern: never another namespace (even one whose name the pattern syntax of the store
/// could confuse), never a key that merely contains the pattern, and wildcard characters of the
/// store (`%`, `_`, `[`) in keys are literal.
pub async fn patterns_are_scoped_and_literal(h: &Harness) {
    let ns = unique_namespace("pattern");
    // `_` is a LIKE wildcard and `X` the character it would match: escaping is checked.
    let a = Cache::from_arc((h.factory)(&format!("{ns}_a")));
    let other = Cache::from_arc((h.factory)(&format!("{ns}Xa")));
    if !h.supports("keys_matching") {
        assert_unsupported("keys_matching", a.keys_matching("*").await);
    }
    if !h.supports("delete_matching") {
        assert_unsupported("delete_matching", a.delete_matching("user:7:*").await);
        return;
    }
    let matching = ["user:7:name", "user:7:mail", "user:7:", "user:7:*"];
    let not_matching = ["user:70:name", "x-user:7:name", "user:7", "USER:7:name", "user:8:name", "user_7:name"];
    let literal = ["100%", "100_", "1000", "a[b]c", "abc", "a\\b"];
    for key in matching.iter().chain(&not_matching).chain(&literal) {
        a.set(key, &1u8, None).await.unwrap();
        other.set(key, &2u8, None).await.unwrap();
    }
    // Long keys (stores may keep a hash of them in place of the key).
    let (long_match, long_other) = (format!("user:7:{}", "x".repeat(300)), format!("user:70:{}", "x".repeat(300)));
    a.set(&long_match, &1u8, None).await.unwrap();
    a.set(&long_other, &1u8, None).await.unwrap();
    let bulk: Vec<String> = (0..600).map(|i| format!("bulk:{i}")).collect();
    let bulk_entries: Vec<(&str, &u32)> = bulk.iter().map(|k| (k.as_str(), &7u32)).collect();
    a.set_many(&bulk_entries, None).await.unwrap();
    other.set_many(&bulk_entries, None).await.unwrap();

    if h.supports("keys_matching") {
        let listed: HashSet<String> = a.keys_matching("user:7:*").await.unwrap().into_iter().collect();
        let expected: HashSet<String> = matching.iter().map(|k| k.to_string()).chain([long_match.clone()]).collect();
        assert_eq!(listed, expected);
        let mut batches = 0;
        let mut seen = HashSet::new();
        a.for_each_key_matching("bulk:*", 100, |batch| {
            batches += 1;
            seen.extend(batch);
            true
        })
        .await
        .unwrap();
        assert_eq!(seen.len(), 600, "every bulk key is listed");
        assert!(batches >= 2, "600 keys in batches of about 100 came in {batches} batch(es)");
        let mut stopped_after = 0;
        a.for_each_key_matching("bulk:*", 100, |_| {
            stopped_after += 1;
            false
        })
        .await
        .unwrap();
        assert_eq!(stopped_after, 1, "the walk stops when the visitor says so");
        let listed: HashSet<String> = a.keys_matching("100%").await.unwrap().into_iter().collect();
        assert_eq!(listed, HashSet::from(["100%".to_string()]), "`%` in a pattern is literal");
        assert_eq!(a.keys_matching("nothing:*").await.unwrap(), Vec::<String>::new());
    }

    assert_eq!(a.delete_matching("user:7:*").await.unwrap(), matching.len() as u64 + 1);
    assert_eq!(a.get::<u8>(&long_match).await.unwrap(), None, "a long matching key survived");
    assert_eq!(a.get::<u8>(&long_other).await.unwrap(), Some(1), "a long key that does not match was removed");
    assert_eq!(a.delete_matching("100_").await.unwrap(), 1, "`_` in a pattern is literal");
    assert_eq!(a.delete_matching("a[b]?").await.unwrap(), 1, "`[` in a pattern is literal");
    assert_eq!(a.delete_matching(r"a\\b").await.unwrap(), 1, "an escaped backslash");
    assert_eq!(a.delete_matching("bulk:*").await.unwrap(), 600, "removal runs in batches");
    for key in &matching {
        assert_eq!(a.get::<u8>(key).await.unwrap(), None, "{key} survived");
    }
    for key in not_matching.iter().chain(&["100%", "1000", "abc"]) {
        assert_eq!(a.get::<u8>(key).await.unwrap(), Some(1), "{key} was removed but does not match");
    }
    for key in matching.iter().chain(&not_matching).chain(&literal) {
        assert_eq!(other.get::<u8>(key).await.unwrap(), Some(2), "{key} of another namespace was touched");
    }
    assert_eq!(other.get::<u32>("bulk:599").await.unwrap(), Some(7));
    assert_eq!(a.delete_matching("user:7:*").await.unwrap(), 0, "nothing left to remove");
}
