//! The knobs a user sets on a processor, validated once at decoration time.

use std::fmt;
use std::time::Duration;

/// How a processor forms batches.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchPolicy {
    /// The most items one call of the user function receives.
    pub batch_size: usize,
    /// How long the oldest waiting item may wait for companions before its batch leaves.
    pub max_wait: Duration,
    /// Calls with at most this many items are served before larger calls of the same priority.
    pub small_call_threshold: usize,
}

/// A policy argument that cannot work, with the reason in words a user can act on.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyError {
    BatchSize(i64),
    Timeout(f64),
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BatchSize(n) => write!(f, "batch_size must be an integer of at least 1, got {n}"),
            Self::Timeout(ms) => write!(
                f,
                "timeout_ms must be a finite number of milliseconds of at least 0, got {ms}"
            ),
        }
    }
}

impl std::error::Error for PolicyError {}

impl BatchPolicy {
    pub fn new(
        batch_size: i64,
        timeout_ms: f64,
        small_call_threshold: usize,
    ) -> Result<Self, PolicyError> {
        if batch_size < 1 {
            return Err(PolicyError::BatchSize(batch_size));
        }
        // An hour is far beyond any sane batching window and keeps Duration arithmetic safe.
        if !timeout_ms.is_finite() || !(0.0..=3_600_000.0).contains(&timeout_ms) {
            return Err(PolicyError::Timeout(timeout_ms));
        }
        Ok(Self {
            batch_size: batch_size as usize,
            max_wait: Duration::from_secs_f64(timeout_ms / 1000.0),
            small_call_threshold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_sane_values() {
        let policy = BatchPolicy::new(32, 5.0, 8).unwrap();
        assert_eq!(policy.batch_size, 32);
        assert_eq!(policy.max_wait, Duration::from_millis(5));
        assert_eq!(policy.small_call_threshold, 8);
        assert_eq!(
            BatchPolicy::new(1, 0.0, 0).unwrap().max_wait,
            Duration::ZERO
        );
    }

    #[test]
    fn rejects_bad_values_with_a_message() {
        let err = BatchPolicy::new(0, 5.0, 8).unwrap_err();
        assert_eq!(err, PolicyError::BatchSize(0));
        assert!(err.to_string().contains("batch_size"));
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e12] {
            let err = BatchPolicy::new(4, bad, 8).unwrap_err();
            assert!(err.to_string().contains("timeout_ms"), "{err}");
        }
    }
}
