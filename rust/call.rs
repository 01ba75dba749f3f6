//! The outcome of one call: its per-item results as batches deliver them, or the failure that
//! ended it. Exactly one outcome is ever recorded for a call, and every waiter sees it.

use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Why a call ended without results. `E` is the error type the user function raises.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure<E> {
    /// The user function failed on a batch holding one of the call's items.
    User(E),
    /// The processor shut down before the call's items ran.
    Closed,
    /// The caller gave up (cancellation or its own deadline).
    Abandoned,
    /// The batching machinery itself broke; the message says how.
    Internal(String),
}

#[derive(Debug)]
enum Progress<R, E> {
    Collecting {
        results: Vec<Option<R>>,
        missing: usize,
    },
    Done(Result<Vec<R>, Failure<E>>),
    Taken,
}

/// What a delivery did to the call.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The call now has all its results (or its failure): wake whoever waits for it.
    Completed,
    /// The call still waits for items in other batches.
    Partial,
    /// The call had already ended; the delivered values were dropped.
    Ignored,
}

#[derive(Debug)]
pub struct Call<R, E> {
    progress: Mutex<Progress<R, E>>,
    finished: Condvar,
    // Read by the scheduler without the lock, to skip items nobody waits for any more.
    abandoned: AtomicBool,
}

impl<R, E> Call<R, E> {
    pub fn new(len: usize) -> Self {
        Self {
            progress: Mutex::new(Progress::Collecting {
                results: (0..len).map(|_| None).collect(),
                missing: len,
            }),
            finished: Condvar::new(),
            abandoned: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Progress<R, E>> {
        // A panic while holding the lock leaves consistent data: every transition is one assignment.
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True once nobody wants the call's remaining items: it failed or its caller gave up.
    pub fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    /// Records results for the items `first_index..first_index + values.len()`.
    pub fn deliver(&self, first_index: usize, values: impl IntoIterator<Item = R>) -> Delivery {
        let mut progress = self.lock();
        let Progress::Collecting { results, missing } = &mut *progress else {
            return Delivery::Ignored;
        };
        for (slot, value) in results[first_index..].iter_mut().zip(values) {
            if slot.replace(value).is_none() {
                *missing -= 1;
            }
        }
        if *missing > 0 {
            return Delivery::Partial;
        }
        let results = std::mem::take(results);
        *progress = Progress::Done(Ok(results.into_iter().flatten().collect()));
        Delivery::Completed
    }

    /// Records one value standing for the `count` items from `first_index` on (a slice of a
    /// batched output, say). The call's results are then its values in index order.
    pub fn deliver_span(&self, first_index: usize, count: usize, value: R) -> Delivery {
        let mut progress = self.lock();
        let Progress::Collecting { results, missing } = &mut *progress else {
            return Delivery::Ignored;
        };
        results[first_index] = Some(value);
        *missing -= count;
        if *missing > 0 {
            return Delivery::Partial;
        }
        let results = std::mem::take(results);
        *progress = Progress::Done(Ok(results.into_iter().flatten().collect()));
        Delivery::Completed
    }

    /// Ends the call with a failure, unless it already ended.
    pub fn fail(&self, failure: Failure<E>) -> Delivery {
        let mut progress = self.lock();
        if !matches!(*progress, Progress::Collecting { .. }) {
            return Delivery::Ignored;
        }
        self.abandoned.store(true, Ordering::Release);
        *progress = Progress::Done(Err(failure));
        Delivery::Completed
    }

    /// Wakes the threads blocked in [`Call::wait`]. Kept apart from recording the outcome so
    /// that the waker can choose the moment, e.g. after it has released a lock the waiters need.
    pub fn wake(&self) {
        self.finished.notify_all();
    }

    /// Blocks until the call ends or `deadline` passes; returns whether it ended.
    pub fn wait(&self, deadline: Option<Instant>) -> bool {
        let mut progress = self.lock();
        loop {
            if !matches!(*progress, Progress::Collecting { .. }) {
                return true;
            }
            progress = match deadline {
                None => self
                    .finished
                    .wait(progress)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.finished
                        .wait_timeout(progress, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// Takes the outcome out of an ended call; `None` if it has not ended or was already taken.
    pub fn take(&self) -> Option<Result<Vec<R>, Failure<E>>> {
        let mut progress = self.lock();
        match std::mem::replace(&mut *progress, Progress::Taken) {
            Progress::Done(outcome) => Some(outcome),
            other => {
                *progress = other;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    type TestCall = Call<u32, String>;

    #[test]
    fn completes_when_every_item_has_arrived_in_any_order() {
        let call = TestCall::new(4);
        assert_eq!(call.deliver(2, [20, 30]), Delivery::Partial);
        assert_eq!(call.deliver(0, [0]), Delivery::Partial);
        assert_eq!(call.deliver(1, [10]), Delivery::Completed);
        assert_eq!(call.take(), Some(Ok(vec![0, 10, 20, 30])));
        assert_eq!(call.take(), None);
    }

    #[test]
    fn spans_stand_for_several_items_each() {
        let call = TestCall::new(5);
        assert_eq!(call.deliver_span(3, 2, 34), Delivery::Partial);
        assert_eq!(call.deliver_span(0, 3, 12), Delivery::Completed);
        assert_eq!(call.take(), Some(Ok(vec![12, 34])));
    }

    #[test]
    fn first_outcome_wins() {
        let call = TestCall::new(2);
        assert_eq!(call.deliver(0, [1]), Delivery::Partial);
        assert!(!call.is_abandoned());
        assert_eq!(call.fail(Failure::User("boom".into())), Delivery::Completed);
        assert!(call.is_abandoned());
        assert_eq!(call.deliver(1, [2]), Delivery::Ignored);
        assert_eq!(call.fail(Failure::Closed), Delivery::Ignored);
        assert_eq!(call.take(), Some(Err(Failure::User("boom".into()))));
    }

    #[test]
    fn wait_times_out_then_wakes_on_delivery_from_another_thread() {
        let call = Arc::new(TestCall::new(1));
        let soon = Instant::now() + Duration::from_millis(10);
        assert!(!call.wait(Some(soon)));
        let producer = {
            let call = Arc::clone(&call);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                let delivery = call.deliver(0, [7]);
                call.wake();
                delivery
            })
        };
        assert!(call.wait(None));
        assert_eq!(producer.join().unwrap(), Delivery::Completed);
        assert_eq!(call.take(), Some(Ok(vec![7])));
    }

    #[test]
    fn an_empty_call_is_never_left_waiting_on_items() {
        let call = TestCall::new(0);
        assert_eq!(call.deliver(0, []), Delivery::Completed);
        assert_eq!(call.take(), Some(Ok(vec![])));
    }
}
