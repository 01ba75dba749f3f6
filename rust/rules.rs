//! When a batch leaves: the dispatch rule as a pure function of the queue's shape and the clock.

use std::time::Instant;

use crate::adaptive::{Advice, Learned};
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
    /// Adaptive dispatch: traffic was too sparse for waiting to pay, so it left at once.
    Idle,
    /// Adaptive dispatch: waiting for more items stopped paying.
    Adaptive,
}

impl DispatchReason {
    /// Every reason, in the order the statistics list them.
    pub const ALL: [Self; 5] = [
        Self::Full,
        Self::Deadline,
        Self::Drain,
        Self::Idle,
        Self::Adaptive,
    ];

    /// The reason's name in the statistics: `full` counts `full_batches`, and so on.
    pub fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Deadline => "deadline",
            Self::Drain => "drain",
            Self::Idle => "idle",
            Self::Adaptive => "adaptive",
        }
    }
}

/// What the scheduler should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Dispatch(DispatchReason),
    /// Sleep until `until`, or until the queue holds `wake_at_items` items.
    WaitUntil {
        until: Instant,
        wake_at_items: usize,
    },
    /// Nothing is queued: sleep until an item arrives, with no timer at all.
    Idle,
}

/// What the dispatch rule needs to know about the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueShape {
    pub items: usize,
    /// The sum of the queued items' lengths (1 each unless lengths are given).
    pub tokens: usize,
    pub oldest_arrival: Option<Instant>,
}

/// Decides from the queue's shape and the clock, and, for adaptive dispatch, from what the
/// processor has `learned`.
///
/// The deadline counts from the oldest item's arrival, not from when the scheduler noticed it,
/// so time spent while the user function ran counts towards it. A batch is full at `batch_size`
/// items, or, with a token budget, once the queue holds enough positions to fill it. Adaptive
/// dispatch may send a batch before its deadline, never after.
pub fn decide(
    queue: QueueShape,
    now: Instant,
    policy: &BatchPolicy,
    learned: Option<Learned<'_>>,
) -> Decision {
    let Some(oldest) = queue.oldest_arrival.filter(|_| queue.items > 0) else {
        return Decision::Idle;
    };
    let budget_filled = policy
        .packing
        .max_batch_tokens
        .is_some_and(|budget| queue.tokens >= budget);
    if queue.items >= policy.batch_size || budget_filled {
        return Decision::Dispatch(DispatchReason::Full);
    }
    let deadline = oldest + policy.max_wait;
    if now >= deadline {
        return Decision::Dispatch(DispatchReason::Deadline);
    }
    let wait_for_deadline = Decision::WaitUntil {
        until: deadline,
        wake_at_items: policy.batch_size,
    };
    let Some(learned) = learned.filter(|_| policy.adaptive) else {
        return wait_for_deadline;
    };
    let waited = now.saturating_duration_since(oldest);
    match learned.advise(queue.items, waited, now, policy.batch_size) {
        Advice::DispatchIdle => Decision::Dispatch(DispatchReason::Idle),
        Advice::DispatchNow => Decision::Dispatch(DispatchReason::Adaptive),
        Advice::WaitUntil { at, target } => Decision::WaitUntil {
            until: at.min(deadline),
            wake_at_items: target,
        },
    }
}

/// Whether a submission that took the queue from `before` to `after` items changes what a
/// dispatcher waiting for `wake_at_items` items would decide: the first item starts a deadline,
/// and the item that reaches `wake_at_items` fills what it waits for. With a token budget any
/// submission may fill the budget first.
pub fn wakes_dispatcher(
    before: usize,
    after: usize,
    wake_at_items: usize,
    policy: &BatchPolicy,
) -> bool {
    before == 0
        || (before < wake_at_items && after >= wake_at_items)
        || policy.packing.max_batch_tokens.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(batch_size: i64, timeout_ms: f64) -> BatchPolicy {
        BatchPolicy::new(batch_size, timeout_ms, 8).unwrap()
    }

    fn decide(queue: QueueShape, now: Instant, policy: &BatchPolicy) -> Decision {
        super::decide(queue, now, policy, None)
    }

    fn shape(items: usize, oldest_arrival: Option<Instant>) -> QueueShape {
        QueueShape {
            items,
            tokens: items,
            oldest_arrival,
        }
    }

    #[test]
    fn a_dispatcher_is_woken_by_the_first_item_and_by_the_one_reaching_its_target() {
        let fixed = policy(4, 5.0);
        assert!(wakes_dispatcher(0, 1, 4, &fixed));
        assert!(!wakes_dispatcher(1, 2, 4, &fixed));
        assert!(wakes_dispatcher(3, 4, 4, &fixed));
        assert!(wakes_dispatcher(2, 9, 4, &fixed)); // a list crossing the target
        assert!(!wakes_dispatcher(4, 5, 4, &fixed)); // already past it: it was woken then
        let packed = fixed.with_packing(Some(64), false).unwrap();
        assert!(wakes_dispatcher(1, 2, 4, &packed));
    }

    #[test]
    fn idle_when_nothing_is_queued() {
        let now = Instant::now();
        assert_eq!(decide(shape(0, None), now, &policy(4, 5.0)), Decision::Idle);
        assert_eq!(
            decide(shape(0, Some(now)), now, &policy(4, 5.0)),
            Decision::Idle
        );
    }

    #[test]
    fn full_batch_leaves_at_once_even_before_the_deadline() {
        let now = Instant::now();
        let decision = decide(shape(4, Some(now)), now, &policy(4, 1000.0));
        assert_eq!(decision, Decision::Dispatch(DispatchReason::Full));
        assert_eq!(
            decide(shape(9, Some(now)), now, &policy(4, 1000.0)),
            Decision::Dispatch(DispatchReason::Full)
        );
    }

    #[test]
    fn short_batch_waits_until_the_oldest_arrival_plus_max_wait() {
        let arrival = Instant::now();
        let now = arrival + Duration::from_millis(2);
        assert_eq!(
            decide(shape(1, Some(arrival)), now, &policy(4, 5.0)),
            Decision::WaitUntil {
                until: arrival + Duration::from_millis(5),
                wake_at_items: 4
            }
        );
    }

    #[test]
    fn short_batch_leaves_once_the_oldest_item_is_due() {
        let arrival = Instant::now();
        let due = arrival + Duration::from_millis(5);
        let expected = Decision::Dispatch(DispatchReason::Deadline);
        assert_eq!(
            decide(shape(1, Some(arrival)), due, &policy(4, 5.0)),
            expected
        );
        let late = due + Duration::from_millis(1);
        assert_eq!(
            decide(shape(3, Some(arrival)), late, &policy(4, 5.0)),
            expected
        );
    }

    #[test]
    fn a_filled_token_budget_counts_as_full() {
        let now = Instant::now();
        let packed = policy(64, 1000.0).with_packing(Some(1024), false).unwrap();
        let long_items = QueueShape {
            items: 2,
            tokens: 1024,
            oldest_arrival: Some(now),
        };
        assert_eq!(
            decide(long_items, now, &packed),
            Decision::Dispatch(DispatchReason::Full)
        );
        let short_items = QueueShape {
            tokens: 1023,
            ..long_items
        };
        assert!(matches!(
            decide(short_items, now, &packed),
            Decision::WaitUntil { .. }
        ));
    }

    #[test]
    fn zero_timeout_dispatches_whatever_is_there() {
        let now = Instant::now();
        assert_eq!(
            decide(shape(1, Some(now)), now, &policy(64, 0.0)),
            Decision::Dispatch(DispatchReason::Deadline)
        );
    }

    #[test]
    fn adaptive_dispatch_follows_the_advice_within_the_deadline() {
        use crate::adaptive::{ArrivalRate, CostModel};

        let start = Instant::now();
        let auto = policy(32, 20.0).with_adaptive(true);
        let mut cost = CostModel::default();
        for n in [1, 2, 4, 8] {
            cost.observe(n, Duration::from_millis(10));
        }
        let sparse = ArrivalRate::new(Duration::from_millis(100));
        let learned = |arrivals| {
            Some(Learned {
                arrivals,
                cost: &cost,
            })
        };
        assert_eq!(
            super::decide(shape(1, Some(start)), start, &auto, learned(&sparse)),
            Decision::Dispatch(DispatchReason::Idle)
        );
        let mut busy = ArrivalRate::new(Duration::from_millis(100));
        for i in 0..200 {
            busy.observe(start + Duration::from_micros(i * 500), 1);
        }
        let now = start + Duration::from_millis(100);
        let oldest = now;
        let Decision::WaitUntil {
            until,
            wake_at_items,
        } = super::decide(shape(3, Some(oldest)), now, &auto, learned(&busy))
        else {
            panic!("expected a wait under load");
        };
        assert!(until <= oldest + Duration::from_millis(20));
        assert!(wake_at_items > 3 && wake_at_items < 32);
        assert_eq!(
            super::decide(
                shape(wake_at_items, Some(oldest)),
                until,
                &auto,
                learned(&busy)
            ),
            Decision::Dispatch(DispatchReason::Adaptive)
        );
        // The deadline still bounds the wait, and a fixed policy ignores what was learned.
        let late = oldest + Duration::from_millis(20);
        assert_eq!(
            super::decide(shape(3, Some(oldest)), late, &auto, learned(&busy)),
            Decision::Dispatch(DispatchReason::Deadline)
        );
        let fixed = policy(32, 20.0);
        assert!(matches!(
            super::decide(shape(1, Some(start)), start, &fixed, learned(&sparse)),
            Decision::WaitUntil { .. }
        ));
    }
}
