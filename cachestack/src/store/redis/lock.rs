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
use crate::store::{token, LockGuard, LockOps, TokenLease, TokenLock};

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
        Ok(TokenLock::guard(taken, self.clone(), key, token))
    }
}

#[async_trait]
impl TokenLease for RedisStore {
    async fn extend(&self, key: &str, token: &str, lease: Duration) -> Result<bool> {
        Ok(self.lock_script(RENEW, key, token, lease_ms(lease)).await? == 1)
    }

    async fn remove(&self, key: &str, token: &str) -> Result<()> {
        self.lock_script(RELEASE, key, token, 0).await.map(drop)
    }
}
