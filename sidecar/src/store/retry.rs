//! The one retry engine: every loop in medusa-rs that tries a storage operation again takes its
//! budget from [`Retries`] and counts its attempts with [`Attempts`].
//!
//! Two layers retry, and each retries what the other cannot:
//!
//! 1. **The store's client** (object_store, configured by [`client_retry_config`]) retries one
//!    HTTP request: a 5xx, 429 or 408 answer, a connection that could not be made or a request
//!    that could not be sent, and a timeout or cut connection of an idempotent request (GET,
//!    HEAD, PUT, DELETE; not CreateMultipartUpload nor CompleteMultipartUpload). It gives up
//!    after `max_retries` retries or `retry_timeout`, backing off from 200 ms to 15 s. It cannot
//!    retry what happens once the answer has begun: a body cut midway.
//! 2. **medusa-rs** ([`Attempts`]) retries a whole operation when the store's client has given
//!    up with an error that another try can mend ([`super::StorageError::is_retryable`]: the
//!    store unavailable, a body cut midway, a lost answer), and when the bytes did not verify
//!    (an upload whose ETag disagrees, a download whose digest does): a LIST page resumed after
//!    the last key ([`super::Storage::list`]), a small object read or written again
//!    ([`Retries::run`]), a file uploaded again (the transfer room), one request of a
//!    streamed upload sent again, a batch of downloads fetched again (the restore room).
//!    Refusals (403, 404, a bad key, a full disk) are never retried by either layer.
//!
//! Both layers draw on the same `[storage]` settings, and the outer one starts no attempt once
//! `retry_timeout` has passed since its first, so an outage is reported within about one budget,
//! not after the inner budget multiplied by the outer count.

use std::time::{Duration, Instant};

use object_store::{BackoffConfig, RetryConfig};

use crate::config::StorageConfig;

/// The budget of medusa-rs' own retries of a whole storage operation: `max` more attempts
/// (`[storage] max_retries`), none started once `budget` (`retry_timeout`) has passed since
/// the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Attempts after the first.
    pub max: usize,
    /// No attempt starts later than this after the first.
    pub budget: Duration,
}

impl Retries {
    /// No retries of our own (the store's still apply).
    pub const NONE: Retries = Retries { max: 0, budget: Duration::ZERO };

    /// From `[storage] max_retries` and `retry_timeout`.
    pub fn from_config(cfg: &StorageConfig) -> Retries {
        Retries { max: cfg.max_retries, budget: Duration::from_secs(cfg.retry_timeout_seconds) }
    }

    /// The same number of attempts without the deadline: for operations one attempt of which
    /// may outlast `retry_timeout` (the download of a large file).
    pub fn without_deadline(self) -> Retries {
        Retries { budget: Duration::MAX, ..self }
    }

    /// The budget of one operation whose first attempt starts now.
    pub fn start(self) -> Attempts {
        Attempts { retries: self, made: 0, started: Instant::now() }
    }

    /// The pause before retry `attempt` (1 = the first retry): 200 ms doubling, at most 3.2 s.
    pub fn backoff(attempt: usize) -> Duration {
        Duration::from_millis(200u64.saturating_mul(1 << attempt.min(5).saturating_sub(1)))
    }

    /// Runs `f` until it succeeds, fails with an error no retry can mend, or the budget is spent.
    pub async fn run<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, super::StorageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, super::StorageError>>,
    {
        let mut attempts = self.start();
        loop {
            match f().await {
                Err(e) if e.is_retryable() => {
                    let Some(retry) = attempts.retry() else { return Err(e) };
                    tracing::debug!(error = %e, attempt = retry.number(), "retrying {what}");
                    retry.wait().await;
                }
                other => return other,
            }
        }
    }
}

/// One operation's use of its [`Retries`] budget: the retries made so far and when the first
/// attempt started.
#[derive(Debug, Clone, Copy)]
pub struct Attempts {
    retries: Retries,
    made: usize,
    started: Instant,
}

impl Attempts {
    /// After an attempt failed with an error that another try can mend: the next retry, if the
    /// budget allows one (it is then counted), else `None` and the error is final.
    pub fn retry(&mut self) -> Option<Retry> {
        let number = self.made + 1;
        if number > self.retries.max || self.started.elapsed() >= self.retries.budget {
            return None;
        }
        self.made = number;
        Some(Retry { number })
    }
}

/// A retry the budget allowed: log it with its [`Retry::number`], then [`Retry::wait`] before
/// starting it.
#[derive(Debug)]
#[must_use = "a retry waits its backoff before it starts"]
pub struct Retry {
    number: usize,
}

impl Retry {
    /// Which retry this is (1 = the first).
    pub fn number(&self) -> usize {
        self.number
    }

    /// Waits the backoff before this retry ([`Retries::backoff`]).
    pub async fn wait(self) {
        tokio::time::sleep(Retries::backoff(self.number)).await;
    }
}

/// The store client's own retries of each HTTP request (the first layer above), from the same
/// `[storage] max_retries` and `retry_timeout`.
pub(super) fn client_retry_config(cfg: &StorageConfig) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: cfg.max_retries,
        retry_timeout: Duration::from_secs(cfg.retry_timeout_seconds),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_stop_at_the_count_and_at_the_deadline() {
        let mut a = Retries { max: 2, budget: Duration::from_secs(3600) }.start();
        assert_eq!(a.retry().map(|r| r.number()), Some(1));
        assert_eq!(a.retry().map(|r| r.number()), Some(2));
        assert!(a.retry().is_none(), "max retries spent");
        assert!(a.retry().is_none(), "and stays spent");
        let mut late = Retries { max: 5, budget: Duration::ZERO }.start();
        assert!(late.retry().is_none(), "no retry starts after the deadline");
        let mut long = Retries { max: 1, budget: Duration::ZERO }.without_deadline().start();
        assert_eq!(long.retry().map(|r| r.number()), Some(1), "without a deadline only the count limits");
        assert!(Retries::NONE.start().retry().is_none());
    }

    #[test]
    fn backoff_doubles_up_to_3_2_seconds() {
        let b: Vec<u64> = (1..=7).map(|n| Retries::backoff(n).as_millis() as u64).collect();
        assert_eq!(b, [200, 400, 800, 1600, 3200, 3200, 3200]);
    }
}
