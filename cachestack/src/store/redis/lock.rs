//! The lock of [`RedisStore`] ([`LockOps`]): `SET <lock key> <token> NX PX <lease>`, where the
//! token is random per holder; renewal and release are scripts that act only while the key still
//! holds the holder's token (compare-and-extend, compare-and-delete), so a holder whose lease ran
//! out never extends or removes another holder's lock.
//!
//! Lock keys live apart from entries: `cachestack-lock:<namespace>:<key>` (so that listing,
//! pattern deletion and `clear` of the namespace never see them).

use std::time::Duration;

use async_trait::async_trait;

use super::RedisStore;
use crate::error::Result;
use crate::store::{token, LockGuard, LockOps};

/// If the key holds the token `ARGV[1]`, give it the lease `ARGV[2]` (ms): 1, else 0.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0";

/// If the key holds the token `ARGV[1]`, remove it: 1, else 0.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// Milliseconds of a lease, at least 1 (Redis rejects `PX 0`).
fn lease_ms(lease: Duration) -> u64 {
    u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    /// The Redis key of the lock `name`.
    pub fn lock_key(&self, name: &str) -> String {
        format!("cachestack-lock:{}:{name}", self.inner.config.settings.namespace)
    }

    /// Runs `script` on the lock key with the token and `arg`; the script's integer answer.
    async fn lock_script(&self, script: &'static str, key: &str, token: &str, arg: u64) -> Result<i64> {
        let inner = self.inner.clone();
        let (key, token) = (key.to_owned(), token.to_owned());
        self.io(async move {
            let mut cmd = ::redis::cmd("EVAL");
            cmd.arg(script).arg(1).arg(&key).arg(&token).arg(arg);
            inner.query::<i64>(&cmd).await
        })
        .await
    }
}

#[async_trait]
impl LockOps for RedisStore {
    async fn try_lock(&self, name: &str, lease: Duration) -> Result<Option<Box<dyn LockGuard>>> {
        let key = self.lock_key(name);
        let token = token();
        let inner = self.inner.clone();
        let (set_key, set_token, ms) = (key.clone(), token.clone(), lease_ms(lease));
        let taken = self
            .io(async move {
                let mut cmd = ::redis::cmd("SET");
                cmd.arg(&set_key).arg(&set_token).arg("NX").arg("PX").arg(ms);
                inner.query::<Option<String>>(&cmd).await.map(|reply| reply.is_some())
            })
            .await?;
        Ok(taken.then(|| Box::new(RedisLock { store: self.clone(), key, token }) as Box<dyn LockGuard>))
    }
}

/// A Redis lock this process holds.
struct RedisLock {
    store: RedisStore,
    key: String,
    token: String,
}

impl std::fmt::Debug for RedisLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLock").field("key", &self.key).finish_non_exhaustive()
    }
}

#[async_trait]
impl LockGuard for RedisLock {
    async fn renew(&mut self, lease: Duration) -> Result<bool> {
        Ok(self.store.lock_script(RENEW, &self.key, &self.token, lease_ms(lease)).await? == 1)
    }

    async fn release(self: Box<Self>) -> Result<()> {
        self.store.lock_script(RELEASE, &self.key, &self.token, 0).await.map(drop)
    }
}
