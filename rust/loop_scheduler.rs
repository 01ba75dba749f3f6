//! The scheduler an event loop drives: the same assembly, admission and dispatch rule as the
//! blocking [`crate::scheduler::Scheduler`], but it never blocks and keeps no clock of its own.
//! The loop submits on its own thread, polls when a submission says so or its one timer fires,
//! and is told when to poll again, so an idle loop holds no timer at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admission::Admission;
use crate::costs::BatchCosts;
use crate::pending::{Cancellable, Entry, Submission};
use crate::policy::{BatchPolicy, LivePolicy};
use crate::rules::wakes_dispatcher;
use crate::scheduler::{check_lengths, Assembly, Batch, Poll, Rejected};
use crate::stats::{Stats, Unserved};
use crate::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use crate::sync::{Mutex, MutexGuard, PoisonError};

/// What the loop schedulers of one processor add up across event loops.
#[derive(Debug, Default)]
pub struct Totals {
    stats: Mutex<Stats>,
    /// Items queued on every loop.
    queued: AtomicUsize,
}

impl Totals {
    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// What [`LoopScheduler::poll`] found.
#[derive(Debug)]
pub enum Polled<C> {
    Ready(Batch<C>),
    /// Poll again after this long, unless a submission asks for it sooner.
    After(Duration),
    /// Nothing is queued: no need to poll until a submission asks for it.
    Idle,
}

/// One event loop's queue. `W` is how a task waits for room in a bounded queue (see
/// [`Admission`]).
#[derive(Debug)]
pub struct LoopScheduler<C, W> {
    assembly: Mutex<Assembly<C>>,
    /// Changed at run time by `reconfigure`; each decision reads it once.
    policy: LivePolicy,
    /// This loop's bound: each event loop's queue has its own `max_queue_size`.
    admission: Admission<W>,
    /// `on_full="block"`: a refused task waits for room and tries again, so a refusal is not
    /// counted as a rejection.
    block_when_full: bool,
    /// What this loop's batches cost, for adaptive dispatch and length-aware packing.
    costs: Mutex<BatchCosts>,
    /// The queue length at which a submission should make the loop poll again.
    wake_at_items: AtomicUsize,
    totals: Arc<Totals>,
    closed: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<C: Clone + Cancellable, W> LoopScheduler<C, W> {
    /// `max_queued` bounds this loop's queue; `totals` is shared with the processor's other
    /// loops.
    pub fn new(
        policy: BatchPolicy,
        max_queued: Option<usize>,
        block_when_full: bool,
        totals: Arc<Totals>,
    ) -> Self {
        Self {
            assembly: Mutex::new(Assembly::new(&policy)),
            wake_at_items: AtomicUsize::new(policy.batch_size),
            policy: LivePolicy::new(policy),
            admission: Admission::new(max_queued),
            block_when_full,
            costs: Mutex::new(BatchCosts::default()),
            totals,
            closed: AtomicBool::new(false),
        }
    }

    pub fn totals(&self) -> &Arc<Totals> {
        &self.totals
    }

    /// The queue's bound, for registering tasks that wait for room.
    pub fn admission(&self) -> &Admission<W> {
        &self.admission
    }

    /// Items queued on this loop, cancelled ones not yet discarded included.
    pub fn len(&self) -> usize {
        lock(&self.assembly).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Queues a submission; `Ok(true)` when the loop should poll now (it started a deadline or
    /// filled what the loop waits for). A refusal is counted in the statistics unless it is the
    /// queue being closed, or a full queue that the caller will wait on.
    pub fn submit(&self, submission: Submission<C>) -> Result<bool, Rejected<C>> {
        if self.is_closed() {
            return Err(Rejected::Closed(submission));
        }
        let count = submission.count;
        let policy = self.policy.get();
        let submission = check_lengths(submission, &policy).inspect_err(|_| {
            self.record_unserved(Unserved::Rejected, count);
        })?;
        if let Err(refusal) = self.admission.try_admit(count) {
            if !self.block_when_full {
                self.record_unserved(Unserved::Rejected, count);
            }
            return Err(Rejected::Refused {
                submission,
                refusal,
            });
        }
        let mut assembly = lock(&self.assembly);
        let before = assembly.len();
        assembly.push(submission);
        self.totals.queued.fetch_add(count, Ordering::Relaxed);
        let wake_at = self.wake_at_items.load(Ordering::Relaxed);
        Ok(wakes_dispatcher(before, before + count, wake_at, &policy))
    }

    /// Applies the dispatch rule at `now`; `draining` sends whatever is queued at once. Also
    /// returns the tasks waiting for room that the items it removed let in.
    pub fn poll(&self, now: Instant, draining: bool) -> (Polled<C>, Vec<W>) {
        let policy = self.policy.get();
        let costs = if BatchCosts::read_by(&policy) {
            lock(&self.costs).clone()
        } else {
            BatchCosts::default()
        };
        let (poll, removed) = {
            let mut assembly = lock(&self.assembly);
            let mut stats = lock(&self.totals.stats);
            assembly.poll(now, &policy, draining, &mut stats, &costs)
        };
        let woken = self.release(removed);
        let polled = match poll {
            Poll::Ready(batch) => Polled::Ready(batch),
            Poll::WaitUntil {
                until,
                wake_at_items,
            } => {
                self.wake_at_items.store(wake_at_items, Ordering::Relaxed);
                Polled::After(until.saturating_duration_since(now))
            }
            Poll::Idle => Polled::Idle,
        };
        (polled, woken)
    }

    /// Applies the runtime knobs of `policy` (see [`BatchPolicy::reconfigured`]) from the next
    /// `poll` on; the loop should poll again, to wait under them.
    pub fn reconfigure(&self, policy: &BatchPolicy) {
        self.policy.reconfigure(policy);
    }

    /// Refuses further submissions; queued ones stay until polled or taken. Returns the tasks
    /// waiting for room, to be told.
    pub fn close(&self) -> Vec<W> {
        self.closed.store(true, Ordering::Release);
        self.admission.close()
    }

    /// Everything queued, so each caller can be told why it will not run, and the tasks
    /// waiting for room that this lets in.
    pub fn take_remaining(&self) -> (Vec<Entry<C>>, Vec<W>) {
        let remaining = lock(&self.assembly).drain();
        let woken = self.release(remaining.len());
        (remaining, woken)
    }

    fn release(&self, count: usize) -> Vec<W> {
        self.totals.queued.fetch_sub(count, Ordering::Relaxed);
        self.admission.release(count)
    }

    /// Counts a settled batch of `items` padded to `padded` positions; only a `succeeded` one
    /// teaches the loop its cost.
    pub fn record_batch(&self, items: usize, padded: usize, elapsed: Duration, succeeded: bool) {
        lock(&self.totals.stats).record_batch(items, elapsed);
        if succeeded {
            lock(&self.costs).observe(&self.policy.get(), items, padded, elapsed);
        }
    }

    pub fn record_padding(&self, real: u64, padded: u64) {
        lock(&self.totals.stats).record_padding(real, padded);
    }

    pub fn record_unserved(&self, why: Unserved, items: usize) {
        lock(&self.totals.stats).record_unserved(why, items);
    }
}

impl<C, W> Drop for LoopScheduler<C, W> {
    // A loop that ended with items still queued (their callers gave up) takes them along: they
    // no longer count in the shared totals.
    fn drop(&mut self) {
        let left = lock(&self.assembly).len();
        self.totals.queued.fetch_sub(left, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::admission::Refusal;
    use crate::rules::DispatchReason;
    use std::sync::atomic::AtomicBool as StdAtomicBool;

    #[derive(Debug, Default)]
    struct Ticket {
        id: usize,
        cancelled: StdAtomicBool,
    }

    impl Cancellable for Arc<Ticket> {
        fn is_cancelled(&self) -> bool {
            self.cancelled.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    type TestScheduler = LoopScheduler<Arc<Ticket>, &'static str>;

    fn scheduler(batch_size: i64, timeout_ms: f64, max_queued: Option<usize>) -> TestScheduler {
        let policy = BatchPolicy::new(batch_size, timeout_ms, 8).unwrap();
        LoopScheduler::new(policy, max_queued, false, Arc::default())
    }

    fn submission(id: usize, count: usize, arrival: Instant) -> Submission<Arc<Ticket>> {
        Submission {
            call: Arc::new(Ticket {
                id,
                ..Default::default()
            }),
            count,
            priority: 0,
            arrival,
            lengths: None,
        }
    }

    fn ids(polled: &Polled<Arc<Ticket>>) -> Vec<usize> {
        match polled {
            Polled::Ready(batch) => batch.entries.iter().map(|e| e.call.id).collect(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn the_first_item_and_the_one_that_fills_a_batch_ask_for_a_poll() {
        let scheduler = scheduler(4, 5.0, None);
        let now = Instant::now();
        let asks: Vec<bool> = (0..6)
            .map(|id| scheduler.submit(submission(id, 1, now)).unwrap())
            .collect();
        assert_eq!(asks, [true, false, false, true, false, false]);
        let (polled, _) = scheduler.poll(now, false);
        assert_eq!(ids(&polled), [0, 1, 2, 3]);
        assert_eq!(polled_reason(&polled), DispatchReason::Full);
        // Two items are left, the oldest already waiting: only a full batch asks again.
        assert!(matches!(scheduler.poll(now, false).0, Polled::After(_)));
        assert!(!scheduler.submit(submission(6, 1, now)).unwrap());
        assert!(scheduler.submit(submission(7, 1, now)).unwrap());
    }

    fn polled_reason(polled: &Polled<Arc<Ticket>>) -> DispatchReason {
        match polled {
            Polled::Ready(batch) => batch.reason,
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn a_list_that_crosses_the_batch_size_asks_once() {
        let scheduler = scheduler(4, 5.0, None);
        let now = Instant::now();
        assert!(scheduler.submit(submission(1, 1, now)).unwrap());
        assert!(scheduler.submit(submission(2, 5, now)).unwrap());
        assert!(!scheduler.submit(submission(3, 1, now)).unwrap());
        assert_eq!(scheduler.len(), 7);
        assert_eq!(scheduler.totals().queued(), 7);
    }

    #[test]
    fn a_short_batch_waits_for_the_loop_clock_to_reach_its_deadline() {
        let scheduler = scheduler(8, 5.0, None);
        let arrival = Instant::now();
        scheduler.submit(submission(1, 2, arrival)).unwrap();
        let later = arrival + Duration::from_millis(2);
        match scheduler.poll(later, false).0 {
            Polled::After(delay) => assert_eq!(delay, Duration::from_millis(3)),
            other => panic!("expected a wait, got {other:?}"),
        }
        let due = arrival + Duration::from_millis(5);
        let (polled, _) = scheduler.poll(due, false);
        assert_eq!(ids(&polled), [1, 1]);
        assert_eq!(polled_reason(&polled), DispatchReason::Deadline);
        assert!(matches!(scheduler.poll(due, false).0, Polled::Idle));
        assert_eq!(scheduler.totals().queued(), 0);
        assert_eq!(scheduler.totals().stats().deadline_batches, 1);
    }

    #[test]
    fn draining_sends_everything_at_once() {
        let scheduler = scheduler(2, 60_000.0, None);
        let now = Instant::now();
        scheduler.submit(submission(1, 3, now)).unwrap();
        let (first, _) = scheduler.poll(now, true);
        let (second, _) = scheduler.poll(now, true);
        assert_eq!((ids(&first).len(), ids(&second).len()), (2, 1));
        assert_eq!(polled_reason(&second), DispatchReason::Drain);
        assert!(matches!(scheduler.poll(now, true).0, Polled::Idle));
    }

    #[test]
    fn cancelled_items_are_discarded_and_free_their_room() {
        let scheduler = scheduler(2, 5.0, Some(2));
        let now = Instant::now();
        let gone = submission(1, 2, now);
        gone.call
            .cancelled
            .store(true, std::sync::atomic::Ordering::Relaxed);
        scheduler.submit(gone).unwrap();
        assert!(matches!(
            scheduler.submit(submission(2, 1, now)),
            Err(Rejected::Refused {
                refusal: Refusal::Full { .. },
                ..
            })
        ));
        assert!(scheduler.admission().register(1, "waiter").is_none());
        let (polled, woken) = scheduler.poll(now, false);
        assert!(matches!(polled, Polled::Idle));
        assert_eq!(woken, ["waiter"]);
        assert_eq!(scheduler.totals().queued(), 0);
        assert_eq!(scheduler.totals().stats().items_rejected, 1);
    }

    #[test]
    fn a_closed_queue_refuses_without_counting_and_hands_back_the_rest() {
        let scheduler = scheduler(8, 5.0, Some(10));
        let now = Instant::now();
        scheduler.submit(submission(1, 3, now)).unwrap();
        assert!(scheduler.admission().register(9, "waiter").is_none());
        assert_eq!(scheduler.close(), ["waiter"]);
        assert!(matches!(
            scheduler.submit(submission(2, 1, now)),
            Err(Rejected::Closed(_))
        ));
        let (remaining, _) = scheduler.take_remaining();
        assert_eq!(remaining.len(), 3);
        assert!(scheduler.is_empty());
        assert_eq!(scheduler.totals().queued(), 0);
        assert_eq!(scheduler.totals().stats().items_rejected, 0);
    }

    #[test]
    fn an_item_over_the_token_budget_is_refused_and_counted() {
        let policy = BatchPolicy::new(8, 5.0, 8)
            .unwrap()
            .with_packing(Some(100), false)
            .unwrap();
        let scheduler: TestScheduler = LoopScheduler::new(policy, None, false, Arc::default());
        let mut too_long = submission(1, 2, Instant::now());
        too_long.lengths = Some(vec![10, 101]);
        assert!(matches!(
            scheduler.submit(too_long),
            Err(Rejected::TooLong { index: 1, .. })
        ));
        assert!(scheduler.is_empty());
        assert_eq!(scheduler.totals().stats().items_rejected, 2);
    }

    #[test]
    fn loops_of_one_processor_share_their_totals_and_a_dropped_loop_leaves_them() {
        let totals: Arc<Totals> = Arc::default();
        let policy = BatchPolicy::new(8, 5.0, 8).unwrap();
        let first: TestScheduler = LoopScheduler::new(policy.clone(), None, false, totals.clone());
        let second: TestScheduler = LoopScheduler::new(policy, None, false, totals.clone());
        let now = Instant::now();
        first.submit(submission(1, 2, now)).unwrap();
        second.submit(submission(2, 3, now)).unwrap();
        assert_eq!(totals.queued(), 5);
        drop(second);
        assert_eq!(totals.queued(), 2);
        first.record_batch(2, 2, Duration::from_millis(1), true);
        assert_eq!(totals.stats().total_batches, 1);
    }
}
