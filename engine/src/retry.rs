//! Retry policy: exponential backoff with full jitter, so retries of many steps do not stampede a database.

use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How often and how patiently a step is retried after a retryable error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Backoff before the second attempt, in milliseconds.
    pub initial_backoff_ms: u64,
    /// Upper bound of any backoff, in milliseconds.
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff_ms: 200,
            max_backoff_ms: 30_000,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `next_attempt` (≥ 2): uniform in [cap/2, cap] where cap doubles per attempt.
    /// Half-range jitter keeps a floor so a flapping server still gets breathing room.
    pub fn backoff(&self, next_attempt: u32) -> Duration {
        let exp = next_attempt.saturating_sub(2).min(30);
        let cap = self
            .initial_backoff_ms
            .saturating_mul(1u64 << exp)
            .min(self.max_backoff_ms);
        if cap == 0 {
            return Duration::ZERO;
        }
        let ms = rand::rng().random_range(cap / 2..=cap);
        Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
        };
        for _ in 0..50 {
            let b2 = p.backoff(2).as_millis();
            assert!((50..=100).contains(&b2), "{b2}");
            let b4 = p.backoff(4).as_millis();
            assert!((200..=400).contains(&b4), "{b4}");
            let b20 = p.backoff(20).as_millis();
            assert!((500..=1000).contains(&b20), "{b20}");
        }
    }

    #[test]
    fn zero_backoff_is_immediate() {
        let p = RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 0,
            max_backoff_ms: 0,
        };
        assert_eq!(p.backoff(3), Duration::ZERO);
    }
}
