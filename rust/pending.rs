//! The items waiting for a batch, and which of them the next batch takes.
//!
//! Items are grouped by priority (lower runs first) and, inside a priority, into two classes:
//! items of small calls (at most `small_call_threshold` items) and items of bulk calls. Each class
//! is first in, first out. Small calls go first so that a lone request is not stuck behind a
//! 100 000-item call, but while small calls keep coming a quarter of every batch still goes to
//! the oldest bulk items, so bulk work never starves.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

/// Lets the queue skip items whose caller has gone away (cancelled, timed out or already failed).
pub trait Cancellable {
    fn is_cancelled(&self) -> bool;
}

/// One call's worth of items, as a producer hands them over.
#[derive(Debug)]
pub struct Submission<C> {
    pub call: C,
    pub count: usize,
    pub priority: i32,
    pub arrival: Instant,
}

/// One queued item: the `index`-th item of `call`.
#[derive(Debug, Clone)]
pub struct Entry<C> {
    pub call: C,
    pub index: usize,
    pub arrival: Instant,
}

#[derive(Debug)]
struct Level<C> {
    small: VecDeque<Entry<C>>,
    bulk: VecDeque<Entry<C>>,
}

impl<C> Default for Level<C> {
    fn default() -> Self {
        Self {
            small: VecDeque::new(),
            bulk: VecDeque::new(),
        }
    }
}

impl<C> Level<C> {
    fn is_empty(&self) -> bool {
        self.small.is_empty() && self.bulk.is_empty()
    }
}

/// The result of taking a batch: what goes to the user function, and how many cancelled items
/// were discarded on the way.
#[derive(Debug)]
pub struct Taken<C> {
    pub entries: Vec<Entry<C>>,
    pub discarded: usize,
}

#[derive(Debug)]
pub struct Pending<C> {
    levels: BTreeMap<i32, Level<C>>,
    len: usize,
    small_call_threshold: usize,
}

/// Share of each batch kept for bulk items while small items are also waiting.
const BULK_SHARE_DIVISOR: usize = 4;

impl<C: Clone + Cancellable> Pending<C> {
    pub fn new(small_call_threshold: usize) -> Self {
        Self {
            levels: BTreeMap::new(),
            len: 0,
            small_call_threshold,
        }
    }

    /// Items queued, including cancelled ones not yet discarded.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, submission: Submission<C>) {
        let level = self.levels.entry(submission.priority).or_default();
        let class = if submission.count <= self.small_call_threshold {
            &mut level.small
        } else {
            &mut level.bulk
        };
        class.extend((0..submission.count).map(|index| Entry {
            call: submission.call.clone(),
            index,
            arrival: submission.arrival,
        }));
        self.len += submission.count;
    }

    /// Arrival time of the oldest queued item, whatever its priority or class.
    pub fn oldest_arrival(&self) -> Option<Instant> {
        self.levels
            .values()
            .flat_map(|level| [level.small.front(), level.bulk.front()])
            .flatten()
            .map(|entry| entry.arrival)
            .min()
    }

    /// Removes up to `max` live items in service order and returns them.
    pub fn take(&mut self, max: usize) -> Taken<C> {
        let mut taken = Taken {
            entries: Vec::with_capacity(max.min(self.len)),
            discarded: 0,
        };
        for level in self.levels.values_mut() {
            let room = max - taken.entries.len();
            if room == 0 {
                break;
            }
            let bulk_reserve = if level.small.is_empty() || level.bulk.is_empty() {
                0
            } else {
                (room / BULK_SHARE_DIVISOR).max(1).min(level.bulk.len())
            };
            move_live(&mut level.small, room - bulk_reserve, &mut taken);
            move_live(&mut level.bulk, max - taken.entries.len(), &mut taken);
            // The bulk class may have had fewer live items than reserved.
            move_live(&mut level.small, max - taken.entries.len(), &mut taken);
        }
        self.levels.retain(|_, level| !level.is_empty());
        self.len -= taken.entries.len() + taken.discarded;
        taken
    }

    /// Empties the queue, returning every item (live or not) so its caller can be told.
    pub fn drain(&mut self) -> Vec<Entry<C>> {
        let levels = std::mem::take(&mut self.levels);
        self.len = 0;
        levels
            .into_values()
            .flat_map(|level| level.small.into_iter().chain(level.bulk))
            .collect()
    }
}

fn move_live<C: Cancellable>(from: &mut VecDeque<Entry<C>>, count: usize, into: &mut Taken<C>) {
    let mut moved = 0;
    while moved < count {
        let Some(entry) = from.pop_front() else { break };
        if entry.call.is_cancelled() {
            into.discarded += 1;
        } else {
            into.entries.push(entry);
            moved += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[derive(Debug)]
    struct FakeCall {
        id: usize,
        cancelled: AtomicBool,
    }

    type CallRef = Arc<FakeCall>;

    impl Cancellable for CallRef {
        fn is_cancelled(&self) -> bool {
            self.cancelled.load(Ordering::Relaxed)
        }
    }

    fn call(id: usize) -> CallRef {
        Arc::new(FakeCall {
            id,
            cancelled: AtomicBool::new(false),
        })
    }

    fn submit(pending: &mut Pending<CallRef>, call: &CallRef, count: usize, priority: i32) {
        pending.push(Submission {
            call: call.clone(),
            count,
            priority,
            arrival: Instant::now(),
        });
    }

    fn ids(taken: &Taken<CallRef>) -> Vec<(usize, usize)> {
        taken.entries.iter().map(|e| (e.call.id, e.index)).collect()
    }

    #[test]
    fn one_call_comes_out_in_input_order_split_by_batch_size() {
        let mut pending = Pending::new(8);
        submit(&mut pending, &call(1), 10, 0);
        assert_eq!(pending.len(), 10);
        let first = pending.take(4);
        assert_eq!(ids(&first), vec![(1, 0), (1, 1), (1, 2), (1, 3)]);
        let second = pending.take(4);
        assert_eq!(ids(&second), vec![(1, 4), (1, 5), (1, 6), (1, 7)]);
        let third = pending.take(4);
        assert_eq!(ids(&third), vec![(1, 8), (1, 9)]);
        assert!(pending.is_empty());
        assert!(pending.oldest_arrival().is_none());
    }

    #[test]
    fn small_calls_go_before_an_earlier_bulk_call_but_bulk_keeps_a_share() {
        let mut pending = Pending::new(2);
        submit(&mut pending, &call(1), 100, 0);
        for id in 2..12 {
            submit(&mut pending, &call(id), 1, 0);
        }
        let batch = pending.take(8);
        // 8 / 4 = 2 slots for bulk, the other 6 for the small calls in arrival order.
        assert_eq!(
            ids(&batch),
            vec![
                (2, 0),
                (3, 0),
                (4, 0),
                (5, 0),
                (6, 0),
                (7, 0),
                (1, 0),
                (1, 1)
            ]
        );
    }

    #[test]
    fn bulk_fills_the_batch_when_few_small_items_wait() {
        let mut pending = Pending::new(2);
        submit(&mut pending, &call(1), 100, 0);
        submit(&mut pending, &call(2), 1, 0);
        let batch = pending.take(4);
        assert_eq!(ids(&batch), vec![(2, 0), (1, 0), (1, 1), (1, 2)]);
    }

    #[test]
    fn lower_priority_numbers_run_first() {
        let mut pending = Pending::new(8);
        submit(&mut pending, &call(1), 2, 5);
        submit(&mut pending, &call(2), 2, -1);
        submit(&mut pending, &call(3), 2, 0);
        let batch = pending.take(5);
        assert_eq!(ids(&batch), vec![(2, 0), (2, 1), (3, 0), (3, 1), (1, 0)]);
    }

    #[test]
    fn cancelled_items_are_discarded_not_dispatched() {
        let mut pending = Pending::new(8);
        let gone = call(1);
        submit(&mut pending, &gone, 3, 0);
        submit(&mut pending, &call(2), 2, 0);
        gone.cancelled.store(true, Ordering::Relaxed);
        let batch = pending.take(4);
        assert_eq!(ids(&batch), vec![(2, 0), (2, 1)]);
        assert_eq!(batch.discarded, 3);
        assert!(pending.is_empty());
    }

    #[test]
    fn oldest_arrival_looks_across_priorities_and_classes() {
        let mut pending = Pending::new(1);
        let early = Instant::now();
        pending.push(Submission {
            call: call(1),
            count: 5,
            priority: 9,
            arrival: early,
        });
        submit(&mut pending, &call(2), 1, 0);
        assert_eq!(pending.oldest_arrival(), Some(early));
    }

    #[test]
    fn drain_returns_everything() {
        let mut pending = Pending::new(1);
        submit(&mut pending, &call(1), 5, 9);
        submit(&mut pending, &call(2), 1, 0);
        assert_eq!(pending.drain().len(), 6);
        assert!(pending.is_empty());
    }

    proptest! {
        /// Whatever the calls, every live item comes out exactly once, no batch is over size,
        /// each call's items keep their order, and a higher priority never follows a lower one
        /// inside a batch.
        #[test]
        fn every_item_comes_out_once_in_call_order(
            calls in prop::collection::vec((1usize..40, -2i32..3, any::<bool>()), 1..30),
            batch_size in 1usize..20,
            threshold in 0usize..10,
        ) {
            let mut pending = Pending::new(threshold);
            let mut expected = 0;
            let refs: Vec<CallRef> = (0..calls.len()).map(call).collect();
            for (call_ref, &(count, priority, cancelled)) in refs.iter().zip(&calls) {
                submit(&mut pending, call_ref, count, priority);
                if cancelled {
                    call_ref.cancelled.store(true, Ordering::Relaxed);
                } else {
                    expected += count;
                }
            }
            let mut next_index = vec![0usize; calls.len()];
            let mut seen = 0;
            while !pending.is_empty() {
                let batch = pending.take(batch_size);
                prop_assert!(batch.entries.len() <= batch_size);
                prop_assert!(!batch.entries.is_empty() || batch.discarded > 0);
                let priorities: Vec<i32> =
                    batch.entries.iter().map(|e| calls[e.call.id].1).collect();
                prop_assert!(priorities.windows(2).all(|w| w[0] <= w[1]));
                for entry in &batch.entries {
                    prop_assert!(!calls[entry.call.id].2);
                    prop_assert_eq!(entry.index, next_index[entry.call.id]);
                    next_index[entry.call.id] += 1;
                }
                seen += batch.entries.len();
            }
            prop_assert_eq!(seen, expected);
        }
    }
}
