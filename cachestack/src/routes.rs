//! Prefix routing (cashews' `prefix`): keys starting with a prefix go to a named cache.
//!
//! [`CacheRegistry::route`] adds a route, the longest matching prefix wins, and every change
//! moves the registry generation, so `#[cached]` functions resolve their cache again on their
//! next call and never keep serving from the cache a key no longer routes to.
//!
//! The `Cache` API reaches routed keys through [`CacheRegistry::cache_for_key`] (the one cache a
//! key routes to) or [`CacheRegistry::routed`] (one `Cache` that routes every key it is given,
//! `routes/routed.rs`).

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::registry::CacheRegistry;
use crate::KeyPattern;

mod routed;

/// The route table: prefix -> cache name, kept sorted by prefix.
#[derive(Debug, Default, Clone)]
pub(crate) struct Routes(Vec<(String, String)>);

impl Routes {
    /// The longest prefix of `key` that has a route, with its cache name.
    fn longest(&self, key: &str) -> Option<&(String, String)> {
        self.0.iter().filter(|(prefix, _)| key.starts_with(prefix.as_str())).max_by_key(|(prefix, _)| prefix.len())
    }

    /// Where keys starting with `start` go: see [`Choice`].
    fn choice(&self, start: &str, exact: bool) -> Choice {
        let certain = self.longest(start).map(|(_, name)| name.clone());
        let longer = if exact {
            Vec::new()
        } else {
            self.0
                .iter()
                .filter(|(prefix, _)| prefix.len() > start.len() && prefix.starts_with(start))
                .map(|(_, name)| name.clone())
                .collect()
        };
        Choice { certain, longer }
    }
}

/// Where the keys that start with some known text go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    /// The cache of the longest route that is a prefix of the known text (`None`: the default
    /// cache): every such key goes there unless a route in `longer` takes it.
    pub(crate) certain: Option<String>,
    /// The caches of the routes that are longer than the known text and start with it: whether
    /// a key goes there depends on the text after the known start. Always empty for an exact
    /// key.
    pub(crate) longer: Vec<String>,
}

impl CacheRegistry {
    /// Routes keys starting with `prefix` to the cache `name` (cashews'
    /// `cache.setup(..., prefix="user:")`): [`CacheRegistry::cache_for_key`] and every
    /// `#[cached]` / `#[invalidate]` function that names no cache use it for such keys. The
    /// longest matching prefix wins; routing `prefix` again replaces its cache. Keys without a
    /// route use the default cache. A function with `cache = "name"` is never routed.
    ///
    /// `name` need not be registered yet (a cache from the environment is found on first use);
    /// a route to a name that never appears fails where it is used, as
    /// [`CacheRegistry::get`] does. The empty prefix is refused: that is
    /// [`CacheRegistry::set_default`].
    ///
    /// Takes effect on the next call of every thread (the registry generation moves). Entries
    /// already stored stay in the cache they were stored in: routing a prefix elsewhere makes
    /// them unreachable through the route, not deleted.
    ///
    /// ```
    /// use cachestack::{Cache, CacheRegistry, MemoryBackend};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let registry = CacheRegistry::new();
    /// registry.register("users", Cache::new(MemoryBackend::with_capacity(100)));
    /// registry.register("admins", Cache::new(MemoryBackend::with_capacity(100)));
    /// registry.route("user:", "users").unwrap();
    /// registry.route("user:admin:", "admins").unwrap(); // longest prefix wins
    ///
    /// registry.cache_for_key("user:7").unwrap().set("user:7", &"Ada".to_string(), None).await.unwrap();
    /// assert_eq!(registry.get("users").unwrap().get::<String>("user:7").await.unwrap().as_deref(), Some("Ada"));
    /// assert_eq!(registry.route_for("user:admin:1").as_deref(), Some("admins"));
    /// assert_eq!(registry.route_for("order:1"), None); // the default cache
    /// assert_eq!(registry.routes(), vec![
    ///     ("user:".to_string(), "users".to_string()),
    ///     ("user:admin:".to_string(), "admins".to_string()),
    /// ]);
    /// assert_eq!(registry.unroute("user:admin:").as_deref(), Some("admins"));
    /// assert_eq!(registry.route_for("user:admin:1").as_deref(), Some("users"));
    /// assert!(registry.route("", "users").is_err());
    /// # });
    /// ```
    pub fn route(&self, prefix: impl Into<String>, name: impl Into<String>) -> Result<()> {
        let (prefix, name) = (prefix.into(), name.into());
        if prefix.is_empty() {
            return Err(Error::config(format!(
                "cannot route the empty prefix to `{name}`: every key would match; make `{name}` the default cache instead"
            )));
        }
        let mut state = self.write();
        let routes = &mut state.routes.0;
        match routes.binary_search_by(|(p, _)| p.as_str().cmp(&prefix)) {
            Ok(at) => routes[at].1 = name,
            Err(at) => routes.insert(at, (prefix, name)),
        }
        drop(state);
        self.bump();
        Ok(())
    }

    /// Removes the route of `prefix` (exactly that prefix); returns the cache name it routed to.
    pub fn unroute(&self, prefix: &str) -> Option<String> {
        let mut state = self.write();
        let routes = &mut state.routes.0;
        let removed = routes.binary_search_by(|(p, _)| p.as_str().cmp(prefix)).ok().map(|at| routes.remove(at).1);
        drop(state);
        if removed.is_some() {
            self.bump();
        }
        removed
    }

    /// Every route as `(prefix, cache name)`, sorted by prefix.
    pub fn routes(&self) -> Vec<(String, String)> {
        self.read().routes.0.clone()
    }

    /// The cache name the longest route matching `key` names; `None`: no route matches, the key
    /// belongs to the default cache.
    pub fn route_for(&self, key: &str) -> Option<String> {
        self.read().routes.longest(key).map(|(_, name)| name.clone())
    }

    /// The cache `key` belongs to: the one its longest route names, else the default cache. Use
    /// it for the [`Cache`] API where `#[cached]` functions use routes, so that both see the
    /// same entries:
    ///
    /// ```
    /// use cachestack::CacheRegistry;
    ///
    /// let registry = CacheRegistry::new();
    /// registry.register_url("sessions", "mem://").unwrap();
    /// registry.route("session:", "sessions").unwrap();
    /// let cache = registry.cache_for_key("session:42").unwrap();
    /// assert_eq!(cache.incr_blocking("session:42", 1).unwrap(), 1);
    /// assert_eq!(registry.get("sessions").unwrap().incr_blocking("session:42", 1).unwrap(), 2);
    /// ```
    ///
    /// Fails when the route names a cache that is neither registered nor configured in the
    /// environment ([`Error::UnknownCache`]), or as [`CacheRegistry::try_default_cache`] does.
    pub fn cache_for_key(&self, key: &str) -> Result<Cache> {
        match self.route_for(key) {
            Some(name) => self.get(&name),
            None => self.try_default_cache(),
        }
    }

    /// Where keys starting with `start` go (`exact`: the key is exactly `start`).
    pub(crate) fn route_choice(&self, start: &str, exact: bool) -> Choice {
        self.read().routes.choice(start, exact)
    }

    /// The caches that may hold keys matching `pattern`: the one its literal start routes to,
    /// and those of the longer routes that start with it (each cache once).
    pub(crate) fn caches_for_pattern(&self, pattern: &KeyPattern) -> Result<Vec<Cache>> {
        self.caches_of(self.route_choice(pattern.literal_prefix(), pattern.is_literal()))
    }

    /// The default cache and every cache a route names (each cache once).
    pub(crate) fn default_and_routed_caches(&self) -> Result<Vec<Cache>> {
        self.caches_of(self.route_choice("", false))
    }

    fn caches_of(&self, choice: Choice) -> Result<Vec<Cache>> {
        let mut caches: Vec<Cache> = Vec::with_capacity(1 + choice.longer.len());
        let names = std::iter::once(choice.certain).chain(choice.longer.into_iter().map(Some));
        for name in names {
            let cache = match name {
                Some(name) => self.get(&name)?,
                None => self.try_default_cache()?,
            };
            if !caches.iter().any(|c| same_cache(c, &cache)) {
                caches.push(cache);
            }
        }
        Ok(caches)
    }

    /// `keys` grouped by the cache each routes to (see [`CacheRegistry::cache_for_key`]): each
    /// cache once, with the positions of its keys in `keys`, in order.
    pub(crate) fn group_by_route<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<Vec<(Cache, Vec<usize>)>> {
        let mut groups: Vec<(Cache, Vec<usize>)> = Vec::new();
        for (at, key) in keys.into_iter().enumerate() {
            let target = self.cache_for_key(key)?;
            match groups.iter_mut().find(|(c, _)| same_cache(c, &target)) {
                Some((_, group)) => group.push(at),
                None => groups.push((target, vec![at])),
            }
        }
        Ok(groups)
    }
}

/// Whether two handles share one backend (one cache registered under two names is one cache).
pub(crate) fn same_cache(a: &Cache, b: &Cache) -> bool {
    std::sync::Arc::ptr_eq(a.backend(), b.backend())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, &str)]) -> Routes {
        let r = CacheRegistry::new();
        for (p, n) in routes {
            r.route(*p, *n).unwrap();
        }

        r.read().routes.clone()
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table(&[("u", "a"), ("user:", "b"), ("user:7", "c")]);
        assert_eq!(t.longest("user:71").map(|r| r.1.as_str()), Some("c"));
        assert_eq!(t.longest("user:8").map(|r| r.1.as_str()), Some("b"));
        assert_eq!(t.longest("ux").map(|r| r.1.as_str()), Some("a"));
        assert_eq!(t.longest("order"), None);
    }

    #[test]
    fn choice_names_the_routes_an_argument_can_reach() {
        let t = table(&[("user:", "users"), ("user:admin:", "admins"), ("order:", "orders")]);
        let names = |c: Choice| (c.certain, c.longer);
        // A template `user:<id>`: always at least `users`, `admins` when the id starts with `admin:`.
        assert_eq!(names(t.choice("user:", false)), (Some("users".into()), vec!["admins".into()]));
        // `user:admin:<id>`: fixed.
        assert_eq!(names(t.choice("user:admin:", false)), (Some("admins".into()), vec![]));
        // `us<x>`: the default, or one of the two user routes.
        assert_eq!(names(t.choice("us", false)), (None, vec!["users".into(), "admins".into()]));
        // An exact key `user:` is fixed.
        assert_eq!(names(t.choice("user:", true)), (Some("users".into()), vec![]));
        assert_eq!(names(t.choice("item:", false)), (None, vec![]));
    }

    #[test]
    fn routing_moves_the_generation_and_unroute_reports() {
        let r = CacheRegistry::new();
        let g0 = r.generation();
        r.route("a:", "x").unwrap();
        let g1 = r.generation();
        assert!(g1 > g0);
        r.route("a:", "y").unwrap();
        assert_eq!(r.routes(), vec![("a:".to_string(), "y".to_string())]);
        let g2 = r.generation();
        assert!(g2 > g1);
        assert_eq!(r.unroute("b:"), None);
        assert_eq!(r.generation(), g2);
        assert_eq!(r.unroute("a:").as_deref(), Some("y"));
        assert!(r.generation() > g2);
        assert!(matches!(
            {
                r.route("z:", "missing").unwrap();
                r.cache_for_key("z:1")
            },
            Err(Error::UnknownCache { .. })
        ));
    }
}
