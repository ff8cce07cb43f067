//! The registry's backplane: set in code or from `CACHESTACK_BACKPLANE_URL`, and put on every
//! stack the registry holds.

use super::{Backplane, BACKPLANE_URL_VAR};
use crate::cache::Cache;
use crate::error::Result;
use crate::registry::CacheRegistry;

impl CacheRegistry {
    /// Puts every stack registered here (the ones registered now and later, named and default)
    /// on `backplane`: see [`crate::backplane`]. A stack keeps the first backplane it was put on.
    ///
    /// ```no_run
    /// use cachestack::{Backplane, CacheRegistry};
    /// let registry = CacheRegistry::global();
    /// registry.set_backplane(Backplane::from_url("postgres://app@127.0.0.1/app?channel=myapp").unwrap());
    /// ```
    pub fn set_backplane(&self, backplane: Backplane) {
        self.write().backplane = Some(backplane.clone());
        for (_, cache) in self.named_caches() {
            if let Some(stack) = cache.backend().as_tiered() {
                stack.attach_backplane(&backplane);
            }
        }
    }

    /// [`CacheRegistry::set_backplane`] with the backplane a URL describes
    /// ([`Backplane::from_url`]: `redis://host/0?channel=myapp`, `postgres://...`). Without a
    /// call in code, the registry uses the one described by `CACHESTACK_BACKPLANE_URL`, if set.
    ///
    /// ```no_run
    /// let backplane = cachestack::CacheRegistry::global()
    ///     .set_backplane_url("redis://127.0.0.1:6379/0?channel=myapp")
    ///     .unwrap();
    /// println!("{:?}", backplane.stats());
    /// ```
    pub fn set_backplane_url(&self, url: &str) -> Result<Backplane> {
        let backplane = Backplane::from_url(url)?;
        self.set_backplane(backplane.clone());
        Ok(backplane)
    }

    /// The backplane of this registry: the one set in code, else the one described by
    /// `CACHESTACK_BACKPLANE_URL` (read once; an unusable URL is logged and ignored), else none.
    pub fn backplane(&self) -> Option<Backplane> {
        if let Some(backplane) = &self.read().backplane {
            return Some(backplane.clone());
        }
        self.env_backplane()
            .get_or_init(|| {
                let url = std::env::var(BACKPLANE_URL_VAR).ok()?;
                Backplane::from_url(&url)
                    .map_err(|err| {
                        tracing::error!(error = %err, "cachestack: {BACKPLANE_URL_VAR} ignored: no backplane");
                    })
                    .ok()
            })
            .clone()
    }

    /// Puts `cache` on the registry's backplane if it is a stack and there is one.
    pub(crate) fn join_backplane(&self, cache: &Cache) {
        if let Some(stack) = cache.backend().as_tiered()
            && let Some(backplane) = self.backplane()
        {
            stack.attach_backplane(&backplane);
        }
    }
}
