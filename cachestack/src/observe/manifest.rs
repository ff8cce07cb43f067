//! The manifest: every `#[cached]` and `#[invalidate]` function linked into the binary, called or
//! not, with its options and live counters.
//!
//! Each expansion submits one [`ManifestEntry`] through `inventory` (registration at link time,
//! collected before `main`): a `static` in the user's crate, so nothing runs on the call path and
//! a function that was never called is listed all the same.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::__private::{CachedFn, FnStats};

/// What kind of function a manifest entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FnKind {
    /// A `#[cached]` function.
    Cached,
    /// An `#[invalidate]` function.
    Invalidate,
}

/// What one expansion registers: constant data written by the macros (not a public API; read it
/// through [`manifest`]).
#[doc(hidden)]
#[derive(Debug)]
pub struct ManifestEntry {
    pub kind: FnKind,
    /// `module_path!()` where the function is declared.
    pub module: &'static str,
    /// The function's name.
    pub name: &'static str,
    /// Key templates (patterns for `#[invalidate(pattern = ..)]`) as written; empty: the default
    /// key (the function's path and its arguments).
    pub keys: &'static [&'static str],
    /// `ttl = ..` as written (a duration or an expression).
    pub ttl: Option<&'static str>,
    /// The other options given, as `(name, value as written)`.
    pub options: &'static [(&'static str, &'static str)],
    /// `cache = ".."`; `None`: the registry's default cache.
    pub cache: Option<&'static str>,
    /// Tag templates.
    pub tags: &'static [&'static str],
    /// The counters of a `#[cached]` function.
    pub state: Option<&'static CachedFn>,
}

inventory::collect!(ManifestEntry);

/// One function of the [`Manifest`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct FunctionInfo {
    /// `cached` or `invalidate`.
    pub kind: FnKind,
    /// The module it is declared in (`my_app::users`).
    pub module: &'static str,
    /// Its name (`get_user`).
    pub name: &'static str,
    /// Key templates as written (`user:<id>`), or patterns for `#[invalidate(pattern = ..)]`;
    /// empty for the default key (the function's path and its arguments).
    pub keys: Vec<&'static str>,
    /// `ttl` as written (`"5m"`, or the expression), `None`: the cache's default TTL.
    pub ttl: Option<&'static str>,
    /// Every other option given to the attribute, by name, as written.
    pub options: BTreeMap<&'static str, &'static str>,
    /// The cache's name; `None` for the registry's default cache.
    pub cache: Option<&'static str>,
    /// Tag templates.
    pub tags: Vec<&'static str>,
    /// Live counters (`#[cached]` only), as `<fn>_stats()` returns them.
    pub stats: Option<FnStats>,
    /// `stats.hit_ratio()`, for readers of the JSON.
    pub hit_ratio: Option<f64>,
}

impl FunctionInfo {
    fn from_entry(entry: &ManifestEntry) -> Self {
        let stats = entry.state.map(CachedFn::stats);
        FunctionInfo {
            kind: entry.kind,
            module: entry.module,
            name: entry.name,
            keys: entry.keys.to_vec(),
            ttl: entry.ttl,
            options: entry.options.iter().copied().collect(),
            cache: entry.cache,
            tags: entry.tags.to_vec(),
            hit_ratio: stats.as_ref().map(FnStats::hit_ratio),
            stats,
        }
    }

    /// `module::name`.
    pub fn path(&self) -> String {
        format!("{}::{}", self.module, self.name)
    }
}

/// Every `#[cached]` and `#[invalidate]` function of the binary, sorted by module and name;
/// serializable (serde) as JSON for an admin endpoint. Built by [`manifest`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Manifest {
    /// The functions.
    pub functions: Vec<FunctionInfo>,
}

impl Manifest {
    /// The function declared as `path` (`module::name`), if there is one (the first of several
    /// functions of one name declared inside function bodies of one module).
    pub fn function(&self, path: &str) -> Option<&FunctionInfo> {
        self.functions.iter().find(|f| f.path() == path)
    }
}

/// Lists every `#[cached]` and `#[invalidate]` function linked into this binary, whether or not
/// it was ever called, with its key templates, TTL, options, cache, tags and live counters.
///
/// ```
/// #[cachestack::cached(ttl = "5m", key = "square:<n>")]
/// fn listed_square(n: u64) -> u64 { n * n }
///
/// let manifest = cachestack::manifest();
/// let info = manifest.functions.iter().find(|f| f.name == "listed_square").unwrap();
/// assert_eq!((info.keys.as_slice(), info.ttl), (&["square:<n>"][..], Some("5m")));
/// assert_eq!(info.stats.as_ref().unwrap().misses, 0); // never called, listed all the same
/// ```
pub fn manifest() -> Manifest {
    let mut functions: Vec<FunctionInfo> = inventory::iter::<ManifestEntry>().map(FunctionInfo::from_entry).collect();
    functions.sort_by(|a, b| (a.module, a.name).cmp(&(b.module, b.name)));
    Manifest { functions }
}
