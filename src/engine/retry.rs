//! Retry policy: which failures are retried, and how long to wait before the next attempt.
//!
//! Pure: no clock, no I/O. The caller supplies the attempt number, the elapsed time and a random
//! number in `[0, 1)`, so the schedule is testable and the jitter is real in production.

use std::time::Duration;

use crate::settings::RetrySettings;

/// What went wrong with one attempt, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The engine answered with this HTTP status.
    Status(u16),
    /// No connection could be made: the request was never sent.
    Connect,
    /// The connection broke or timed out after the request may have been sent.
    Transport,
}

/// Jittered exponential backoff with a retry count and a time budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_elapsed: Duration,
}

impl From<&RetrySettings> for RetryPolicy {
    fn from(r: &RetrySettings) -> Self {
        RetryPolicy {
            max_retries: r.max_retries,
            initial_backoff: r.initial_backoff,
            max_backoff: r.max_backoff,
            max_elapsed: r.max_elapsed,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries (readiness probes want a fast, honest answer).
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            max_elapsed: Duration::ZERO,
        }
    }

    /// Whether a failure of this kind may be retried at all.
    ///
    /// 429 means the engine rejected the request before doing anything, and a connect failure
    /// means it was never sent: both are safe to repeat for any request. 502/503/504 and broken
    /// connections may hide a request that did run, so only idempotent requests repeat them.
    pub fn is_retryable(failure: Failure, idempotent: bool) -> bool {
        match failure {
            Failure::Status(429) | Failure::Connect => true,
            Failure::Status(502..=504) | Failure::Transport => idempotent,
            Failure::Status(_) => false,
        }
    }

    /// The wait before retry number `retry` (0-based), or `None` when the budget is spent.
    ///
    /// Full jitter: a uniform draw between zero and the capped exponential step, so that many
    /// clients rejected together do not come back together. A `Retry-After` from the engine is a
    /// floor, capped at `max_backoff`.
    pub fn delay(
        &self,
        retry: u32,
        elapsed: Duration,
        unit_random: f64,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if retry >= self.max_retries {
            return None;
        }
        let exp = self.initial_backoff.as_secs_f64() * 2f64.powi(retry.min(30) as i32);
        let cap = exp.min(self.max_backoff.as_secs_f64());
        let mut wait = Duration::from_secs_f64(cap * unit_random.clamp(0.0, 1.0));
        if let Some(ra) = retry_after {
            wait = wait.max(ra.min(self.max_backoff));
        }
        if elapsed + wait > self.max_elapsed {
            return None;
        }
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(10),
        }
    }

    #[test]
    fn retryable_statuses_depend_on_idempotence() {
        for idem in [true, false] {
            assert!(RetryPolicy::is_retryable(Failure::Status(429), idem));
            assert!(RetryPolicy::is_retryable(Failure::Connect, idem));
            assert_eq!(RetryPolicy::is_retryable(Failure::Status(503), idem), idem);
            assert_eq!(RetryPolicy::is_retryable(Failure::Status(502), idem), idem);
            assert_eq!(RetryPolicy::is_retryable(Failure::Status(504), idem), idem);
            assert_eq!(RetryPolicy::is_retryable(Failure::Transport, idem), idem);
            assert!(!RetryPolicy::is_retryable(Failure::Status(400), idem));
            assert!(!RetryPolicy::is_retryable(Failure::Status(500), idem));
            assert!(!RetryPolicy::is_retryable(Failure::Status(401), idem));
        }
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let p = policy();
        let full = |n| p.delay(n, Duration::ZERO, 1.0, None).unwrap();
        assert_eq!(full(0), Duration::from_millis(100));
        assert_eq!(full(1), Duration::from_millis(200));
        assert_eq!(full(2), Duration::from_millis(400));
        assert_eq!(full(3), Duration::from_millis(800));
        assert_eq!(full(4), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_zero_and_the_step() {
        let p = policy();
        for i in 0..=10 {
            let u = i as f64 / 10.0;
            let d = p.delay(2, Duration::ZERO, u, None).unwrap();
            assert!(d <= Duration::from_millis(400), "{d:?}");
        }
        assert_eq!(p.delay(2, Duration::ZERO, 0.0, None), Some(Duration::ZERO));
    }

    #[test]
    fn the_retry_count_and_time_budget_end_retrying() {
        let p = policy();
        assert!(p.delay(5, Duration::ZERO, 0.5, None).is_none());
        assert!(p.delay(1, Duration::from_millis(9_950), 1.0, None).is_none());
        assert!(p.delay(1, Duration::from_millis(9_000), 1.0, None).is_some());
        assert!(RetryPolicy::none().delay(0, Duration::ZERO, 0.5, None).is_none());
    }

    #[test]
    fn retry_after_is_a_floor_capped_at_max_backoff() {
        let p = policy();
        assert_eq!(p.delay(0, Duration::ZERO, 0.0, Some(Duration::from_millis(300))), Some(Duration::from_millis(300)));
        assert_eq!(p.delay(0, Duration::ZERO, 0.0, Some(Duration::from_secs(60))), Some(Duration::from_secs(1)));
    }
}
