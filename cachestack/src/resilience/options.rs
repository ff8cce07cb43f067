//! [`ComputeOptions`]: what a [`get_or_compute`](crate::Cache::get_or_compute) call may do besides
//! computing on a miss, checked once when the options are built.

use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::ttl::{format_ttl, parse_ttl};

/// How long callers get the stale value without running the body again after it failed, when
/// [`ComputeOptionsBuilder::stale_throttle`] is not set.
pub const DEFAULT_STALE_THROTTLE: Duration = Duration::from_secs(5);

/// The lease of a distributed lock when [`ComputeOptionsBuilder::lock_lease`] is not set. The
/// leader renews it every third of the lease while it computes.
pub const DEFAULT_LOCK_LEASE: Duration = Duration::from_secs(10);

/// Who computes a missing key.
///
/// ```
/// use cachestack::{ComputeOptions, LockMode};
///
/// assert_eq!(ComputeOptions::default().lock(), LockMode::Process);
/// let across = ComputeOptions::builder().lock(LockMode::Distributed).build().unwrap();
/// assert_eq!(across.lock(), LockMode::Distributed);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LockMode {
    /// Single flight in this process: one computation per key per process (the default).
    #[default]
    Process,
    /// Single flight across processes: one computation per key among every process sharing the
    /// store, through the store's lock ([`crate::LockOps`]); the process's own callers still
    /// share one contender. A store without a lock is a configuration error.
    Distributed,
}

/// When a hit starts a background refresh: after this part of the TTL has passed.
///
/// Text: a percentage (`"80%"`) or a duration (`"4m"`).
///
/// ```
/// use std::time::Duration;
/// use cachestack::RefreshAhead;
///
/// assert_eq!("80%".parse::<RefreshAhead>().unwrap(), RefreshAhead::Fraction(0.8));
/// assert_eq!("4m".parse::<RefreshAhead>().unwrap(), RefreshAhead::After(Duration::from_secs(240)));
/// assert!("120%".parse::<RefreshAhead>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RefreshAhead {
    /// After this fraction of the TTL (strictly between 0 and 1).
    Fraction(f64),
    /// After this long (less than the TTL).
    After(Duration),
}

impl FromStr for RefreshAhead {
    type Err = Error;
    fn from_str(text: &str) -> Result<Self> {
        let trimmed = text.trim();
        match trimmed.strip_suffix('%') {
            Some(percent) => {
                let fraction = parse_percent_value("refresh_ahead", text, percent)?;
                check_fraction("refresh_ahead", fraction)?;
                Ok(RefreshAhead::Fraction(fraction))
            }
            None => Ok(RefreshAhead::After(parse_ttl(trimmed)?)),
        }
    }
}

/// Reads `percent` (the text before `%` in `text`) as a fraction of 1.
fn parse_percent_value(option: &str, text: &str, percent: &str) -> Result<f64> {
    let value: f64 = percent
        .trim()
        .parse()
        .map_err(|_| Error::config(format!("invalid {option} {text:?}: write a percentage such as \"80%\"")))?;
    Ok(value / 100.0)
}

/// A fraction must be a number strictly between 0 and 1 (0% and 100% excluded).
fn check_fraction(option: &str, fraction: f64) -> Result<()> {
    if fraction.is_finite() && fraction > 0.0 && fraction < 1.0 {
        Ok(())
    } else {
        Err(Error::config(format!(
            "invalid {option} {:.0}%: it must be more than 0% and less than 100% of the TTL",
            fraction * 100.0
        )))
    }
}

/// Checks tags: none empty or too long, at most [`MAX_TAGS`](crate::value::envelope::MAX_TAGS).
fn check_tags(tags: &[String]) -> Result<()> {
    let most = crate::value::envelope::MAX_TAGS;
    if tags.len() > most {
        return Err(Error::config(format!("{} tags; at most {most}", tags.len())));
    }
    tags.iter().try_for_each(|tag| crate::tags::validate_tag(tag))
}

/// What a [`get_or_compute`](crate::Cache::get_or_compute) call may do besides computing on a miss:
/// serve a stale value when the computation fails (`stale_if_error`) or while it is redone in the
/// background (`stale_while_revalidate`), refresh a hot key before it expires (`refresh_ahead`),
/// bound the wait (`timeout`, `hard_timeout`, `lock_timeout`) and spread expiries (`jitter`).
///
/// Built with [`ComputeOptions::builder`]; [`ComputeOptionsBuilder::build`] rejects every
/// inconsistent combination with an error naming the option. `ComputeOptions::default()` is plain
/// caching: no TTL (the store's default), no stale values, no timeouts.
///
/// ```
/// use std::time::Duration;
/// use cachestack::{ComputeOptions, RefreshAhead};
///
/// let options = ComputeOptions::builder()
///     .ttl(Duration::from_secs(300))
///     .stale_if_error(Duration::from_secs(3600))
///     .stale_while_revalidate(Duration::from_secs(30))
///     .refresh_ahead(RefreshAhead::Fraction(0.8))
///     .timeout(Duration::from_millis(200))
///     .hard_timeout(Duration::from_secs(2))
///     .jitter(0.1)
///     .lock_timeout(Duration::from_secs(5))
///     .build()
///     .unwrap();
/// assert_eq!(options.ttl(), Some(Duration::from_secs(300)));
///
/// // Mistakes are errors that name the option:
/// let err = ComputeOptions::builder().stale_if_error(Duration::from_secs(60)).build().unwrap_err();
/// assert!(err.to_string().contains("stale_if_error needs a ttl"));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComputeOptions {
    ttl: Option<Duration>,
    stale_if_error: Option<Duration>,
    stale_throttle: Option<Duration>,
    stale_while_revalidate: Option<Duration>,
    refresh_ahead: Option<RefreshAhead>,
    timeout: Option<Duration>,
    hard_timeout: Option<Duration>,
    jitter: Option<f64>,
    lock_timeout: Option<Duration>,
    lock: LockMode,
    lock_lease: Option<Duration>,
    tags: Vec<String>,
}

/// Builds [`ComputeOptions`]; see there.
#[derive(Debug, Clone, Default)]
pub struct ComputeOptionsBuilder {
    options: ComputeOptions,
}

impl ComputeOptions {
    /// A builder with nothing set.
    pub fn builder() -> ComputeOptionsBuilder {
        ComputeOptionsBuilder::default()
    }

    /// How long a computed value is fresh (`None`: the store's default TTL, never stale).
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// The tags computed values are written with (see [`crate::tags`]).
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// These options with `tags` instead of theirs, checked: how a `#[cached]` function with
    /// tags adds the tags each call renders.
    pub(crate) fn with_tags(mut self, tags: Vec<String>) -> Result<Self> {
        check_tags(&tags)?;
        self.tags = tags;
        Ok(self)
    }

    /// How long after its TTL a value is kept to answer when the computation fails.
    pub fn stale_if_error(&self) -> Option<Duration> {
        self.stale_if_error
    }

    /// How long after a failure callers get the stale value without running the computation.
    pub fn stale_throttle(&self) -> Duration {
        self.stale_throttle.unwrap_or(DEFAULT_STALE_THROTTLE)
    }

    /// How long after its TTL a value is served at once while one background refresh runs.
    pub fn stale_while_revalidate(&self) -> Option<Duration> {
        self.stale_while_revalidate
    }

    /// When a hit starts a background refresh.
    pub fn refresh_ahead(&self) -> Option<RefreshAhead> {
        self.refresh_ahead
    }

    /// The soft timeout: when a stale value exists, the caller gets it after this long and the
    /// computation finishes in the background.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The hard timeout: the caller stops waiting after this long, with [`crate::Timeout`].
    pub fn hard_timeout(&self) -> Option<Duration> {
        self.hard_timeout
    }

    /// The largest part of the TTL that is randomly cut from each stored TTL.
    pub fn jitter(&self) -> Option<f64> {
        self.jitter
    }

    /// How long a caller waits for another caller's computation of the same key before computing
    /// itself.
    pub fn lock_timeout(&self) -> Option<Duration> {
        self.lock_timeout
    }

    /// Single flight in this process, or across processes.
    pub fn lock(&self) -> LockMode {
        self.lock
    }

    /// The lease of the distributed lock (see [`ComputeOptionsBuilder::lock_lease`]).
    pub fn lock_lease(&self) -> Duration {
        self.lock_lease.unwrap_or(DEFAULT_LOCK_LEASE)
    }

    /// The longest time a value is kept after its TTL (the store keeps each entry this much
    /// longer than it is fresh).
    pub(crate) fn stale_window(&self) -> Duration {
        self.stale_if_error.unwrap_or_default().max(self.stale_while_revalidate.unwrap_or_default())
    }

    /// How long before the end of its TTL a hit refreshes a value (`None`: never).
    pub(crate) fn refresh_window(&self) -> Option<Duration> {
        let ttl = self.ttl?;
        let after = match self.refresh_ahead? {
            RefreshAhead::Fraction(fraction) => ttl.mul_f64(fraction),
            RefreshAhead::After(after) => after,
        };
        ttl.checked_sub(after)
    }

    /// The TTL of one write: the TTL shortened by a random part up to `jitter` of it.
    pub(crate) fn jittered_ttl(&self) -> Option<Duration> {
        let ttl = self.ttl?;
        Some(match self.jitter {
            // Validated: 0 < jitter < 1, so the cut is less than the TTL.
            Some(jitter) => ttl.saturating_sub(ttl.mul_f64(jitter * fastrand::f64())),
            None => ttl,
        })
    }
}

impl ComputeOptionsBuilder {
    /// How long a computed value is fresh. Without it, entries get the store's default TTL and
    /// are never stale (the stale options need it).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.options.ttl = Some(ttl);
        self
    }

    /// Fail-safe: an entry is kept this long after its TTL; when the computation then fails
    /// (returns `Err` or panics), the caller gets the stale value instead of the failure.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.options.stale_if_error = Some(window);
        self
    }

    /// After a failure answered with a stale value, callers get the stale value for this long
    /// without running the computation again (default [`DEFAULT_STALE_THROTTLE`]); needs
    /// `stale_if_error`.
    pub fn stale_throttle(mut self, throttle: Duration) -> Self {
        self.options.stale_throttle = Some(throttle);
        self
    }

    /// Within this long after its TTL, a caller gets the stale value at once and one background
    /// refresh replaces it.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.options.stale_while_revalidate = Some(window);
        self
    }

    /// A hit after this part of the TTL starts one background refresh, so a key read steadily
    /// never expires.
    pub fn refresh_ahead(mut self, when: RefreshAhead) -> Self {
        self.options.refresh_ahead = Some(when);
        self
    }

    /// Soft timeout: when the computation has not finished after this long and a stale value
    /// exists (needs `stale_if_error`), the caller gets it; the computation goes on in the
    /// background and stores its value when done.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// Hard timeout: the caller stops waiting after this long and gets [`crate::Timeout`] (the
    /// computation goes on in the background and stores its value when done).
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.options.hard_timeout = Some(timeout);
        self
    }

    /// Each stored TTL is shortened by a random part up to this fraction of it (`0.1`: up to
    /// 10%), so keys written together do not expire together.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.options.jitter = Some(fraction);
        self
    }

    /// A caller waiting for another caller's computation of the same key stops waiting after
    /// this long and computes itself (a hung computation no longer blocks its waiters).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.options.lock_timeout = Some(timeout);
        self
    }

    /// [`LockMode::Distributed`]: one computation per key among every process sharing the
    /// store (see [`Cache::get_or_compute`](crate::Cache::get_or_compute)).
    pub fn lock(mut self, mode: LockMode) -> Self {
        self.options.lock = mode;
        self
    }

    /// The lease of the distributed lock (default [`DEFAULT_LOCK_LEASE`]): how long the lock
    /// outlives a leader that stopped renewing it (a killed process) before another process takes
    /// over. The leader renews it every third of the lease while it computes. Needs
    /// [`LockMode::Distributed`].
    pub fn lock_lease(mut self, lease: Duration) -> Self {
        self.options.lock_lease = Some(lease);
        self
    }

    /// Computed values are written with these tags: once one of them is invalidated
    /// ([`Cache::invalidate_tag`](crate::Cache::invalidate_tag)), the entry is a miss, and its
    /// stale value is never served either (not by `stale_if_error`, `stale_while_revalidate` or
    /// a soft timeout). The write time is taken when the computation starts, so an invalidation
    /// made while it runs wins.
    ///
    /// ```
    /// let options = cachestack::ComputeOptions::builder().tags(["user:7", "org:3"]).build().unwrap();
    /// assert_eq!(options.tags(), ["user:7", "org:3"]);
    /// assert!(cachestack::ComputeOptions::builder().tags([""]).build().is_err());
    /// ```
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        self.options.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Checks the options: every duration positive, `stale_*`, `refresh_ahead` and `jitter` only
    /// with a `ttl`, `refresh_ahead` before the end of the TTL, `timeout` only with
    /// `stale_if_error` and shorter than `hard_timeout`, fractions between 0% and 100%.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cachestack::{ComputeOptions, RefreshAhead};
    ///
    /// let s = Duration::from_secs;
    /// let bad = [
    ///     ComputeOptions::builder().ttl(Duration::ZERO).build(),
    ///     ComputeOptions::builder().ttl(s(10)).refresh_ahead(RefreshAhead::Fraction(1.0)).build(),
    ///     ComputeOptions::builder().ttl(s(10)).refresh_ahead(RefreshAhead::After(s(10))).build(),
    ///     ComputeOptions::builder().stale_while_revalidate(s(10)).build(),
    ///     ComputeOptions::builder().ttl(s(10)).stale_if_error(s(60)).timeout(s(2)).hard_timeout(s(1)).build(),
    ///     ComputeOptions::builder().ttl(s(10)).jitter(-0.1).build(),
    /// ];
    /// assert!(bad.iter().all(Result::is_err));
    /// ```
    pub fn build(self) -> Result<ComputeOptions> {
        let o = self.options;
        check_tags(&o.tags)?;
        let positive = [
            ("ttl", o.ttl),
            ("stale_if_error", o.stale_if_error),
            ("stale_throttle", o.stale_throttle),
            ("stale_while_revalidate", o.stale_while_revalidate),
            ("timeout", o.timeout),
            ("hard_timeout", o.hard_timeout),
            ("lock_timeout", o.lock_timeout),
            ("lock_lease", o.lock_lease),
        ];
        for (name, value) in positive {
            if value.is_some_and(|d| d.is_zero()) {
                return Err(Error::config(format!("{name} must be greater than zero")));
            }
        }
        if o.ttl.is_none() {
            let needs_ttl = [
                ("stale_if_error", o.stale_if_error.is_some()),
                ("stale_while_revalidate", o.stale_while_revalidate.is_some()),
                ("refresh_ahead", o.refresh_ahead.is_some()),
                ("jitter", o.jitter.is_some()),
            ];
            if let Some((name, _)) = needs_ttl.iter().find(|(_, set)| *set) {
                return Err(Error::config(format!(
                    "{name} needs a ttl: a value is stale or refreshed only relative to its time to live"
                )));
            }
        }
        if o.lock_lease.is_some() && o.lock != LockMode::Distributed {
            return Err(Error::config(
                "lock_lease needs the distributed lock (LockMode::Distributed): it is that lock's lease",
            ));
        }
        if o.stale_throttle.is_some() && o.stale_if_error.is_none() {
            return Err(Error::config("stale_throttle needs stale_if_error: it throttles fail-safe answers"));
        }
        if let (Some(ttl), Some(refresh)) = (o.ttl, o.refresh_ahead) {
            match refresh {
                RefreshAhead::Fraction(fraction) => check_fraction("refresh_ahead", fraction)?,
                RefreshAhead::After(after) if after.is_zero() => {
                    return Err(Error::config("refresh_ahead must be greater than zero"));
                }
                RefreshAhead::After(after) if after >= ttl => {
                    return Err(Error::config(format!(
                        "refresh_ahead = {} must be less than the ttl ({}): a refresh after the value expired \
                         is a miss",
                        format_ttl(after),
                        format_ttl(ttl)
                    )));
                }
                RefreshAhead::After(_) => {}
            }
        }
        if let Some(jitter) = o.jitter {
            check_fraction("jitter", jitter)?;
        }
        if o.timeout.is_some() && o.stale_if_error.is_none() {
            return Err(Error::config(
                "timeout (the soft timeout) needs stale_if_error: it answers with a stale value, so without one \
                 it never applies; use hard_timeout to bound every call",
            ));
        }
        if let (Some(soft), Some(hard)) = (o.timeout, o.hard_timeout)
            && soft >= hard
        {
            return Err(Error::config(format!(
                "timeout ({}) must be less than hard_timeout ({})",
                format_ttl(soft),
                format_ttl(hard)
            )));
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn message(builder: ComputeOptionsBuilder) -> String {
        builder.build().unwrap_err().to_string()
    }

    #[test]
    fn every_misuse_is_an_error_naming_the_option() {
        let b = ComputeOptions::builder;
        assert!(message(b().ttl(Duration::ZERO)).contains("ttl must be greater than zero"));
        assert!(message(b().ttl(s(1)).lock_timeout(Duration::ZERO)).contains("lock_timeout must be greater"));
        assert!(message(b().stale_if_error(s(1))).contains("stale_if_error needs a ttl"));
        assert!(message(b().stale_while_revalidate(s(1))).contains("stale_while_revalidate needs a ttl"));
        assert!(message(b().refresh_ahead(RefreshAhead::Fraction(0.5))).contains("refresh_ahead needs a ttl"));
        assert!(message(b().jitter(0.1)).contains("jitter needs a ttl"));
        assert!(message(b().ttl(s(9)).stale_throttle(s(1))).contains("stale_throttle needs stale_if_error"));
        assert!(message(b().lock_lease(s(1))).contains("lock_lease needs the distributed lock"));
        assert!(
            message(b().lock(LockMode::Distributed).lock_lease(Duration::ZERO)).contains("lock_lease must be greater")
        );
        assert!(message(b().ttl(s(9)).refresh_ahead(RefreshAhead::Fraction(1.0))).contains("less than 100%"));
        assert!(message(b().ttl(s(9)).refresh_ahead(RefreshAhead::Fraction(-0.2))).contains("more than 0%"));
        assert!(message(b().ttl(s(9)).refresh_ahead(RefreshAhead::After(s(9)))).contains("less than the ttl"));
        assert!(message(b().ttl(s(9)).jitter(f64::NAN)).contains("jitter"));
        assert!(message(b().ttl(s(9)).jitter(1.5)).contains("jitter"));
        assert!(message(b().ttl(s(9)).timeout(s(1))).contains("timeout (the soft timeout) needs stale_if_error"));
        let soft_over_hard = b().ttl(s(9)).stale_if_error(s(60)).timeout(s(2)).hard_timeout(s(2));
        assert!(message(soft_over_hard).contains("must be less than hard_timeout"));
    }

    #[test]
    fn windows_follow_the_options() {
        let o = ComputeOptions::builder()
            .ttl(s(100))
            .stale_if_error(s(60))
            .stale_while_revalidate(s(10))
            .refresh_ahead(RefreshAhead::Fraction(0.8))
            .build()
            .unwrap();
        assert_eq!(o.stale_window(), s(60));
        assert_eq!(o.refresh_window(), Some(s(20)));
        assert_eq!(o.stale_throttle(), DEFAULT_STALE_THROTTLE);
        let after = ComputeOptions::builder().ttl(s(100)).refresh_ahead(RefreshAhead::After(s(90))).build().unwrap();
        assert_eq!(after.refresh_window(), Some(s(10)));
        assert_eq!(ComputeOptions::default().refresh_window(), None);
    }

    #[test]
    fn jitter_only_shortens_and_stays_within_its_fraction() {
        let o = ComputeOptions::builder().ttl(s(1000)).jitter(0.1).build().unwrap();
        let ttls: Vec<Duration> = (0..200).map(|_| o.jittered_ttl().unwrap()).collect();
        assert!(ttls.iter().all(|t| *t <= s(1000) && *t >= s(900)), "{ttls:?}");
        assert!(ttls.iter().any(|t| *t != ttls[0]), "jitter varies the TTL");
        let plain = ComputeOptions::builder().ttl(s(1000)).build().unwrap();
        assert_eq!(plain.jittered_ttl(), Some(s(1000)));
    }

    #[test]
    fn refresh_ahead_and_percentages_parse_from_text() {
        assert_eq!("80%".parse::<RefreshAhead>().unwrap(), RefreshAhead::Fraction(0.8));
        assert_eq!(" 90 % ".parse::<RefreshAhead>().unwrap(), RefreshAhead::Fraction(0.9));
        assert!("100%".parse::<RefreshAhead>().is_err());
        assert!("0%".parse::<RefreshAhead>().is_err());
        assert!("-5%".parse::<RefreshAhead>().is_err());
        assert!("eighty%".parse::<RefreshAhead>().is_err());
        assert!("0s".parse::<RefreshAhead>().is_err());
    }
}
