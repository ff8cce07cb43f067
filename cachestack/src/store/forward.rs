//! Forwarding for wrappers (layers, shared handles): one place that lists the `Backend` methods a
//! wrapper passes through unchanged.

/// Inside an `impl Backend for Wrapper`: forwards the methods a wrapper does not change.
///
/// `forward_backend!(passive: |s| s.inner)`, inside an impl, forwards `default_ttl`, `signing`, `as_local`,
/// `local_l1`, `as_memory`, `l1_memory`, `locks` and `bind_cache_name` (`passive_unbound:` all but `bind_cache_name`); `forward_backend!(impl [generics] for Type => |s| s.inner)` is a whole impl
/// that forwards every method.
macro_rules! forward_backend {
    (passive: |$s:ident| $inner:expr) => {
        $crate::store::forward_backend!(passive_unbound: |$s| $inner);
        fn bind_cache_name(&self, name: &str) {
            let $s = self;
            $crate::store::Backend::bind_cache_name(&$inner, name)
        }
    };
    (passive_unbound: |$s:ident| $inner:expr) => {
        fn default_ttl(&self) -> Option<std::time::Duration> {
            let $s = self;
            $crate::store::Backend::default_ttl(&$inner)
        }
        fn signing(&self) -> $crate::store::Signing {
            let $s = self;
            $crate::store::Backend::signing(&$inner)
        }
        fn as_local(&self) -> Option<&dyn $crate::store::LocalBackend> {
            let $s = self;
            $crate::store::Backend::as_local(&$inner)
        }
        fn local_l1(&self) -> Option<&dyn $crate::store::LocalRead> {
            let $s = self;
            $crate::store::Backend::local_l1(&$inner)
        }
        fn locks(&self) -> Option<&dyn $crate::store::LockOps> {
            let $s = self;
            $crate::store::Backend::locks(&$inner)
        }
        fn shared_tier(&self) -> Option<std::sync::Arc<dyn $crate::store::Backend>> {
            let $s = self;
            $crate::store::Backend::shared_tier(&$inner)
        }
        #[cfg(feature = "memory")]
        fn as_memory(&self) -> Option<&$crate::store::memory::MemoryBackend> {
            let $s = self;
            $crate::store::Backend::as_memory(&$inner)
        }
        fn as_tiered(&self) -> Option<&$crate::TieredCache> {
            let $s = self;
            $crate::store::Backend::as_tiered(&$inner)
        }
        #[cfg(feature = "memory")]
        fn l1_memory(&self) -> Option<&$crate::store::memory::MemoryBackend> {
            let $s = self;
            $crate::store::Backend::l1_memory(&$inner)
        }
    };
    (impl [$($generics:tt)*] for $ty:ty => |$s:ident| $inner:expr) => {
        #[async_trait::async_trait]
        impl<$($generics)*> $crate::store::Backend for $ty {
        $crate::store::forward_backend!(passive: |$s| $inner);
        fn name(&self) -> &str {
            let $s = self;
            $crate::store::Backend::name(&$inner)
        }
        async fn get(&self, key: &str) -> $crate::Result<Option<$crate::store::Entry>> {
            let $s = self;
            $crate::store::Backend::get(&$inner, key).await
        }
        async fn get_current(
            &self,
            key: &str,
            check: &dyn $crate::tags::TagCheck,
        ) -> $crate::Result<Option<$crate::store::Entry>> {
            let $s = self;
            $crate::store::Backend::get_current(&$inner, key, check).await
        }
        async fn set(&self, key: &str, value: $crate::Value, expiry: $crate::Expiry) -> $crate::Result<()> {
            let $s = self;
            $crate::store::Backend::set(&$inner, key, value, expiry).await
        }
        async fn delete(&self, key: &str) -> $crate::Result<bool> {
            let $s = self;
            $crate::store::Backend::delete(&$inner, key).await
        }
        async fn exists(&self, key: &str) -> $crate::Result<bool> {
            let $s = self;
            $crate::store::Backend::exists(&$inner, key).await
        }
        async fn exists_current(&self, key: &str, check: &dyn $crate::tags::TagCheck) -> $crate::Result<bool> {
            let $s = self;
            $crate::store::Backend::exists_current(&$inner, key, check).await
        }
        async fn clear(&self) -> $crate::Result<()> {
            let $s = self;
            $crate::store::Backend::clear(&$inner).await
        }
        async fn get_many(&self, keys: &[&str]) -> $crate::Result<Vec<Option<$crate::store::Entry>>> {
            let $s = self;
            $crate::store::Backend::get_many(&$inner, keys).await
        }
        async fn get_many_current(
            &self,
            keys: &[&str],
            check: &dyn $crate::tags::TagCheck,
        ) -> $crate::Result<Vec<Option<$crate::store::Entry>>> {
            let $s = self;
            $crate::store::Backend::get_many_current(&$inner, keys, check).await
        }
        async fn set_many(&self, entries: &[(&str, $crate::Value)], expiry: $crate::Expiry) -> $crate::Result<()> {
            let $s = self;
            $crate::store::Backend::set_many(&$inner, entries, expiry).await
        }
        async fn delete_many(&self, keys: &[&str]) -> $crate::Result<u64> {
            let $s = self;
            $crate::store::Backend::delete_many(&$inner, keys).await
        }
        async fn set_if_absent(&self, key: &str, value: $crate::Value, expiry: $crate::Expiry) -> $crate::Result<bool> {
            let $s = self;
            $crate::store::Backend::set_if_absent(&$inner, key, value, expiry).await
        }
        async fn incr(&self, key: &str, delta: i64, expiry: $crate::Expiry) -> $crate::Result<i64> {
            let $s = self;
            $crate::store::Backend::incr(&$inner, key, delta, expiry).await
        }
        async fn expire(&self, key: &str, expiry: $crate::Expiry) -> $crate::Result<bool> {
            let $s = self;
            $crate::store::Backend::expire(&$inner, key, expiry).await
        }
        async fn ttl(&self, key: &str) -> $crate::Result<Option<Option<$crate::Deadline>>> {
            let $s = self;
            $crate::store::Backend::ttl(&$inner, key).await
        }
        async fn keys_matching(
            &self,
            pattern: &$crate::KeyPattern,
            batch: usize,
            visit: &mut $crate::store::KeyVisitor<'_>,
        ) -> $crate::Result<()> {
            let $s = self;
            $crate::store::Backend::keys_matching(&$inner, pattern, batch, visit).await
        }
        async fn delete_matching(&self, pattern: &$crate::KeyPattern) -> $crate::Result<u64> {
            let $s = self;
            $crate::store::Backend::delete_matching(&$inner, pattern).await
        }
        async fn purge_expired(&self) -> $crate::Result<u64> {
            let $s = self;
            $crate::store::Backend::purge_expired(&$inner).await
        }
        fn stats(&self) -> $crate::store::BackendStats {
            let $s = self;
            $crate::store::Backend::stats(&$inner)
        }
        async fn flush(&self) -> $crate::Result<()> {
            let $s = self;
            $crate::store::Backend::flush(&$inner).await
        }
        async fn close(&self) -> $crate::Result<()> {
            let $s = self;
            $crate::store::Backend::close(&$inner).await
        }
        }
    };
}
pub(crate) use forward_backend;
