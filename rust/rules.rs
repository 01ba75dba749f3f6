//! When a batch leaves: the dispatch rule as a pure function of the queue's shape and the clock.

use std::time::Instant;

use crate::policy::BatchPolicy;

/// Why a batch was dispatched; reported in the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DispatchReason {
    /// `batch_size` items were waiting.
    Full,
    /// The oldest waiting item had waited `max_wait` since it arrived.
    Deadline,
    /// The processor is shutting down and finishing the work it already accepted.
    Drain,
}

/// What the scheduler should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Dispatch(DispatchReason),
    /// Sleep until this instant unless an item arrives first.
    WaitUntil(Instant),
    /// Nothing is queued: sleep until an item arrives, with no timer at all.
    Idle,
}

/// Decides from the number of queued items and the arrival time of the oldest one.
///
/// The deadline counts from the oldest item's arrival, not from when the scheduler noticed it,
/// so time spent while the user function ran counts towards it.
pub fn decide(
    queued: usize,
    oldest_arrival: Option<Instant>,
    now: Instant,
    policy: &BatchPolicy,
) -> Decision {
    let Some(oldest) = oldest_arrival.filter(|_| queued > 0) else {
        return Decision::Idle;
    };
    if queued >= policy.batch_size {
        return Decision::Dispatch(DispatchReason::Full);
    }
    let deadline = oldest + policy.max_wait;
    if now >= deadline {
        Decision::Dispatch(DispatchReason::Deadline)
    } else {
        Decision::WaitUntil(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(batch_size: i64, timeout_ms: f64) -> BatchPolicy {
        BatchPolicy::new(batch_size, timeout_ms, 8).unwrap()
    }

    #[test]
    fn idle_when_nothing_is_queued() {
        let now = Instant::now();
        assert_eq!(decide(0, None, now, &policy(4, 5.0)), Decision::Idle);
        assert_eq!(decide(0, Some(now), now, &policy(4, 5.0)), Decision::Idle);
    }

    #[test]
    fn full_batch_leaves_at_once_even_before_the_deadline() {
        let now = Instant::now();
        let decision = decide(4, Some(now), now, &policy(4, 1000.0));
        assert_eq!(decision, Decision::Dispatch(DispatchReason::Full));
        assert_eq!(
            decide(9, Some(now), now, &policy(4, 1000.0)),
            Decision::Dispatch(DispatchReason::Full)
        );
    }

    #[test]
    fn short_batch_waits_until_the_oldest_arrival_plus_max_wait() {
        let arrival = Instant::now();
        let now = arrival + Duration::from_millis(2);
        assert_eq!(
            decide(1, Some(arrival), now, &policy(4, 5.0)),
            Decision::WaitUntil(arrival + Duration::from_millis(5))
        );
    }

    #[test]
    fn short_batch_leaves_once_the_oldest_item_is_due() {
        let arrival = Instant::now();
        let due = arrival + Duration::from_millis(5);
        let expected = Decision::Dispatch(DispatchReason::Deadline);
        assert_eq!(decide(1, Some(arrival), due, &policy(4, 5.0)), expected);
        let late = due + Duration::from_millis(1);
        assert_eq!(decide(3, Some(arrival), late, &policy(4, 5.0)), expected);
    }

    #[test]
    fn zero_timeout_dispatches_whatever_is_there() {
        let now = Instant::now();
        assert_eq!(
            decide(1, Some(now), now, &policy(64, 0.0)),
            Decision::Dispatch(DispatchReason::Deadline)
        );
    }
}
