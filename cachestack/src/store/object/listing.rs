//! What the object store cache does by listing its namespace's folder (object stores have no
//! TTL and no key index): key patterns, the purge of expired entries, `clear`.
//!
//! A listing goes page by page (1000 objects), and each object's key and deadline are read from
//! its first bytes (a ranged read, several at once), so memory stays bounded whatever the size of
//! the namespace and values are never downloaded whole.

use object_store::path::Path;
use object_store::ObjectMeta;

use super::requests::Listing;
use super::ObjectStoreCache;
use crate::error::Result;
use crate::expiry::Deadline;
use crate::pattern::KeyPattern;
use crate::store::KeyVisitor;

/// An object of the namespace with what its first bytes say.
struct Listed {
    path: Path,
    /// The key and sealed deadline; `None` when the object is not a readable entry.
    entry: Option<(String, Option<Deadline>)>,
}

impl ObjectStoreCache {
    /// Calls `page` with each page of the namespace's objects named as this store names them
    /// (others are not touched), their heads read; stops when `page` returns false.
    async fn walk(&self, op: &'static str, mut page: impl FnMut(Vec<Listed>) -> Result<bool>) -> Result<()> {
        let mut listing: Option<Listing> = Some(self.list());
        while let Some(current) = listing {
            let (metas, rest) = self.next_page(op, current).await?;
            listing = rest;
            let ours: Vec<ObjectMeta> = metas.into_iter().filter(|meta| self.is_entry_name(&meta.location)).collect();
            let heads = self.each(&ours, |meta| self.peek(op, &meta.location, meta.size)).await;
            let mut listed = Vec::with_capacity(ours.len());
            for (meta, head) in ours.into_iter().zip(heads) {
                // An entry whose key does not hash to its name is misplaced: not this key's.
                let entry = head?.filter(|(key, _)| self.path(key) == meta.location);
                listed.push(Listed { path: meta.location, entry });
            }
            if !page(listed)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// True for `<root>/<32 hex digits>`: an object this store may have written.
    fn is_entry_name(&self, path: &Path) -> bool {
        let Some(rest) = path.prefix_match(&self.root) else { return false };
        let parts: Vec<_> = rest.collect();
        parts.len() == 1 && {
            let name = parts[0].as_ref();
            name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit())
        }
    }

    /// [`Backend::keys_matching`](crate::Backend::keys_matching): the live keys that match.
    pub(super) async fn list_keys(&self, pattern: &KeyPattern, batch: usize, visit: &mut KeyVisitor<'_>) -> Result<()> {
        let batch = batch.max(1);
        let mut pending: Vec<String> = Vec::new();
        let mut go_on = true;
        self.walk("keys_matching", |listed| {
            for (key, deadline) in listed.into_iter().filter_map(|l| l.entry) {
                if !deadline.is_some_and(Deadline::has_passed) && pattern.matches(&key) {
                    pending.push(key);
                }
                if pending.len() >= batch {
                    go_on = visit(std::mem::take(&mut pending));
                    if !go_on {
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        })
        .await?;
        if go_on && !pending.is_empty() {
            visit(pending);
        }
        Ok(())
    }

    /// [`Backend::delete_matching`](crate::Backend::delete_matching): removes the entries whose
    /// key matches (one request each, from the listing); returns how many were live.
    pub(super) async fn remove_matching(&self, pattern: &KeyPattern) -> Result<u64> {
        let (mut doomed, mut live) = (Vec::new(), 0u64);
        self.walk("delete_matching", |listed| {
            for Listed { path, entry } in listed {
                if let Some((_, deadline)) = entry.filter(|(key, _)| pattern.matches(key)) {
                    live += u64::from(!deadline.is_some_and(Deadline::has_passed));
                    doomed.push(path);
                }
            }
            Ok(true)
        })
        .await?;
        self.remove_paths("delete_matching", &doomed).await?;
        self.counters.record_deletes(doomed.len() as u64);
        Ok(live)
    }

    /// [`Backend::purge_expired`](crate::Backend::purge_expired): removes the entries whose
    /// deadline has passed. Not atomic: an entry rewritten between the check and the removal is
    /// removed too (a miss later, never a stale value).
    pub(super) async fn remove_expired(&self) -> Result<u64> {
        let mut expired: Vec<Path> = Vec::new();
        self.walk("purge_expired", |listed| {
            expired.extend(
                listed
                    .into_iter()
                    .filter(|l| l.entry.as_ref().is_some_and(|(_, d)| d.is_some_and(Deadline::has_passed)))
                    .map(|l| l.path),
            );
            Ok(true)
        })
        .await?;
        self.remove_paths("purge_expired", &expired).await?;
        Ok(expired.len() as u64)
    }

    /// [`Backend::clear`](crate::Backend::clear): removes every object of the namespace's folder
    /// that this store names (entries, and unreadable objects under entry names).
    pub(super) async fn remove_all(&self) -> Result<()> {
        let mut listing: Option<Listing> = Some(self.list());
        while let Some(current) = listing {
            let (metas, rest) = self.next_page("clear", current).await?;
            listing = rest;
            let doomed: Vec<Path> =
                metas.into_iter().map(|meta| meta.location).filter(|path| self.is_entry_name(path)).collect();
            self.remove_paths("clear", &doomed).await?;
        }
        Ok(())
    }

    async fn remove_paths(&self, op: &'static str, paths: &[Path]) -> Result<()> {
        self.each(paths, |path| self.remove(op, path)).await.into_iter().collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::object::{ObjectStoreConfig, S3Options};

    #[test]
    fn only_hash_names_directly_under_the_root_are_entries() {
        let config = ObjectStoreConfig::new(S3Options::new("b")).with_prefix("p").with_namespace("ns");
        let store = ObjectStoreCache::with_store(Arc::new(object_store::memory::InMemory::new()), config).unwrap();
        assert!(store.is_entry_name(&store.path("any key")));
        for other in
            ["p/ns/readme.txt", "p/ns/sub/0123456789abcdef0123456789abcdef", "p/nsx/0123456789abcdef0123456789abcdef"]
        {
            assert!(!store.is_entry_name(&Path::parse(other).unwrap()), "{other}");
        }
    }
}
