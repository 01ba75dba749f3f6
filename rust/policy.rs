//! The knobs a user sets on a processor, validated once at decoration time.

use std::fmt;
use std::sync::{PoisonError, RwLock};
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
    /// How items are packed into a batch by length.
    pub packing: Packing,
    /// `timeout_ms="auto"`: wait only while waiting pays (see [`crate::adaptive`]), never
    /// longer than `max_wait`.
    pub adaptive: bool,
}

/// Length-aware batching. An item's length is what padding stretches (tokens, say); a batch of
/// `n` items whose longest has length `l` costs `n * l` padded positions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Packing {
    /// The most padded positions one batch may hold; a batch is full once the queue holds this
    /// many positions. Items longer than this are refused when submitted.
    pub max_batch_tokens: Option<usize>,
    /// Group items of similar length (around the item that must leave first) to cut padding.
    pub sort_by_length: bool,
}

impl Packing {
    /// Whether batching looks at item lengths at all.
    pub fn is_length_aware(&self) -> bool {
        self.sort_by_length || self.max_batch_tokens.is_some()
    }
}

/// A policy argument that cannot work, with the reason in words a user can act on.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyError {
    BatchSize(i64),
    Timeout(f64),
    MaxBatchTokens(i64),
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BatchSize(n) => write!(f, "batch_size must be an integer of at least 1, got {n}"),
            Self::Timeout(ms) => write!(
                f,
                "timeout_ms must be a finite number of milliseconds of at least 0, got {ms}"
            ),
            Self::MaxBatchTokens(n) => write!(
                f,
                "max_batch_tokens must be an integer of at least 1 (or None for no budget), got {n}"
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
            packing: Packing::default(),
            adaptive: false,
        })
    }

    /// Adds length-aware batching: a budget of padded positions and/or grouping by length.
    pub fn with_packing(
        mut self,
        max_batch_tokens: Option<i64>,
        sort_by_length: bool,
    ) -> Result<Self, PolicyError> {
        let max_batch_tokens = match max_batch_tokens {
            None => None,
            Some(tokens) if tokens >= 1 => Some(tokens as usize),
            Some(tokens) => return Err(PolicyError::MaxBatchTokens(tokens)),
        };
        self.packing = Packing {
            max_batch_tokens,
            sort_by_length,
        };
        Ok(self)
    }

    /// Makes `max_wait` an upper bound for adaptive dispatch rather than a fixed window.
    pub fn with_adaptive(mut self, adaptive: bool) -> Self {
        self.adaptive = adaptive;
        self
    }

    /// This policy with the knobs that may change while batches are formed taken from `new`:
    /// `batch_size`, the wait (`max_wait`, `adaptive`) and the token budget. The rest shapes the
    /// queue itself (its classes) or which items carry lengths, so it stays.
    pub fn reconfigured(&self, new: &BatchPolicy) -> BatchPolicy {
        BatchPolicy {
            batch_size: new.batch_size,
            max_wait: new.max_wait,
            adaptive: new.adaptive,
            packing: Packing {
                max_batch_tokens: new.packing.max_batch_tokens,
                ..self.packing
            },
            ..self.clone()
        }
    }
}

/// The policy a queue applies now, replaceable from any thread. Readers copy it out once per
/// decision, so each batch is assembled under one policy throughout.
#[derive(Debug)]
pub struct LivePolicy(RwLock<BatchPolicy>);

impl LivePolicy {
    pub fn new(policy: BatchPolicy) -> Self {
        Self(RwLock::new(policy))
    }

    pub fn get(&self) -> BatchPolicy {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes the runtime knobs of `new` (see [`BatchPolicy::reconfigured`]).
    pub fn reconfigure(&self, new: &BatchPolicy) {
        let mut policy = self.0.write().unwrap_or_else(PoisonError::into_inner);
        *policy = policy.reconfigured(new);
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
    fn packing_is_optional_and_validated() {
        let plain = BatchPolicy::new(8, 1.0, 2).unwrap();
        assert!(!plain.packing.is_length_aware());
        let packed = plain.clone().with_packing(Some(4096), true).unwrap();
        assert_eq!(packed.packing.max_batch_tokens, Some(4096));
        assert!(packed.packing.is_length_aware());
        let err = plain.with_packing(Some(0), false).unwrap_err();
        assert!(err.to_string().contains("max_batch_tokens"));
    }

    #[test]
    fn reconfiguring_takes_only_the_runtime_knobs() {
        let live = LivePolicy::new(
            BatchPolicy::new(8, 5.0, 2)
                .unwrap()
                .with_packing(None, true)
                .unwrap(),
        );
        let new = BatchPolicy::new(64, 20.0, 99)
            .unwrap()
            .with_packing(Some(4096), false)
            .unwrap()
            .with_adaptive(true);
        live.reconfigure(&new);
        let now = live.get();
        assert_eq!(now.batch_size, 64);
        assert_eq!(now.max_wait, Duration::from_millis(20));
        assert!(now.adaptive);
        assert_eq!(now.packing.max_batch_tokens, Some(4096));
        // The queue's classes and whether items are sorted were fixed when it was made.
        assert_eq!(now.small_call_threshold, 2);
        assert!(now.packing.sort_by_length);
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
