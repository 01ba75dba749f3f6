//! The blocking scheduler: producers on any thread hand calls over a crossbeam channel; one
//! worker at a time assembles batches and sleeps, with no timer while idle, until the dispatch
//! rule says a batch may leave.
//!
//! The channel is used only as a lock-free queue. The worker sleeps on a parker that producers
//! wake only when their submission changes what the worker would decide: before it sleeps, the
//! worker publishes how many more items it waits for (one when idle: the first item starts the
//! deadline; the rest of a batch otherwise), and a producer that finds that many items in the
//! channel after its send wakes it (items, not messages: one list call brings many). Waking the
//! worker on every item would cost a context switch per item for nothing.

use std::time::Instant;

use crate::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use crate::sync::{now, Mutex, MutexGuard, PoisonError, RwLock, TryLockError};
use crate::sync::{Parker, Receiver, Sender, TryRecvError, Unparker};

use crate::adaptive::{ArrivalRate, Learned};
use crate::admission::{Admission, Refusal};
use crate::costs::BatchCosts;
use crate::late_timer::LateTimer;
use crate::pending::{Cancellable, Entry, Pending, Submission};
use crate::policy::{BatchPolicy, LivePolicy};
use crate::rules::{decide, Decision, DispatchReason, QueueShape};
use crate::stats::{Stats, Unserved};

/// A batch on its way to the user function.
#[derive(Debug)]
pub struct Batch<C> {
    pub entries: Vec<Entry<C>>,
    pub reason: DispatchReason,
    pub dispatched: Instant,
}

/// The queue's contents and the one rule for taking a batch out of it, shared by the blocking
/// scheduler and by callers that drive the clock themselves (an event loop's timer).
#[derive(Debug)]
pub struct Assembly<C> {
    pending: Pending<C>,
    /// Observed only for adaptive dispatch, the one rule that reads it.
    arrivals: Option<ArrivalRate>,
}

/// What [`Assembly::poll`] found.
#[derive(Debug)]
pub enum Poll<C> {
    Ready(Batch<C>),
    /// Nothing may leave before `until`, unless the queue reaches `wake_at_items` items.
    WaitUntil {
        until: Instant,
        wake_at_items: usize,
    },
    Idle,
}

impl<C> Assembly<C> {
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

impl<C: Clone + Cancellable> Assembly<C> {
    pub fn new(policy: &BatchPolicy) -> Self {
        Self {
            pending: Pending::new(policy.small_call_threshold),
            arrivals: policy.adaptive.then(ArrivalRate::default),
        }
    }

    pub fn push(&mut self, submission: Submission<C>) {
        if let Some(arrivals) = &mut self.arrivals {
            arrivals.observe(submission.arrival, submission.count);
        }
        self.pending.push(submission);
    }

    /// Applies the dispatch rule at `now`, with the batch `costs` learned so far (adaptive
    /// dispatch and length-aware packing read them). `draining` sends whatever is queued at
    /// once. Returns the batch, if any, and how many queued items it removed (cancelled ones
    /// included).
    pub fn poll(
        &mut self,
        now: Instant,
        policy: &BatchPolicy,
        draining: bool,
        stats: &mut Stats,
        costs: &BatchCosts,
    ) -> (Poll<C>, usize) {
        // `reconfigure` may switch adaptive dispatch on or off: the arrival rate is learned
        // exactly while it is on.
        if policy.adaptive != self.arrivals.is_some() {
            self.arrivals = policy.adaptive.then(ArrivalRate::default);
        }
        let mut removed = 0;
        loop {
            let decision = if draining && !self.pending.is_empty() {
                Decision::Dispatch(DispatchReason::Drain)
            } else {
                let shape = QueueShape {
                    items: self.pending.len(),
                    tokens: self.pending.tokens(),
                    oldest_arrival: self.pending.oldest_arrival(),
                };
                let learned = self.arrivals.as_ref().map(|arrivals| Learned {
                    arrivals,
                    cost: &costs.by_size,
                });
                decide(shape, now, policy, learned)
            };
            let reason = match decision {
                Decision::Dispatch(reason) => reason,
                Decision::WaitUntil {
                    until,
                    wake_at_items,
                } => {
                    let poll = Poll::WaitUntil {
                        until,
                        wake_at_items,
                    };
                    return (poll, removed);
                }
                Decision::Idle => return (Poll::Idle, removed),
            };
            let padding_cost = policy
                .packing
                .sort_by_length
                .then(|| costs.by_padding.fit())
                .flatten();
            let taken =
                self.pending
                    .take(policy.batch_size, &policy.packing, padding_cost.as_ref());
            removed += taken.entries.len() + taken.discarded;
            // A batch of nothing but cancelled items: look again at what is left.
            if taken.entries.is_empty() {
                continue;
            }
            stats.record_dispatch(reason);
            for entry in &taken.entries {
                stats
                    .queue_wait
                    .record(now.saturating_duration_since(entry.arrival));
            }
            let batch = Batch {
                entries: taken.entries,
                reason,
                dispatched: now,
            };
            return (Poll::Ready(batch), removed);
        }
    }

    pub fn drain(&mut self) -> Vec<Entry<C>> {
        self.pending.drain()
    }
}

/// What [`Scheduler::next`] found.
#[derive(Debug)]
pub enum Next<C> {
    Batch(Batch<C>),
    /// Registered waiters for room were woken (see [`Scheduler::take_woken`]).
    RoomFreed,
    /// Closed, and (when draining) empty.
    Closed,
}

/// Why a submission was refused; the submission comes back so its caller can be told.
#[derive(Debug)]
pub enum Rejected<C> {
    Closed(Submission<C>),
    /// The queue is bounded and has no room for the submission.
    Refused {
        submission: Submission<C>,
        refusal: Refusal,
    },
    /// An item is longer than the token budget, so no batch could ever hold it.
    TooLong {
        submission: Submission<C>,
        index: usize,
        length: usize,
        budget: usize,
    },
}

/// Checks that every item can fit in a batch on its own, so none can be stuck in the queue.
pub fn check_lengths<C>(
    submission: Submission<C>,
    policy: &BatchPolicy,
) -> Result<Submission<C>, Rejected<C>> {
    let (Some(budget), Some(lengths)) = (policy.packing.max_batch_tokens, &submission.lengths)
    else {
        return Ok(submission);
    };
    match lengths.iter().position(|&length| length > budget) {
        None => Ok(submission),
        Some(index) => Err(Rejected::TooLong {
            length: lengths[index],
            index,
            budget,
            submission,
        }),
    }
}

/// `W` is how a caller that cannot block waits for room in a bounded queue (see [`Admission`]).
#[derive(Debug)]
pub struct Scheduler<C, W = ()> {
    // `None` once closed. Dropping the only sender disconnects the channel, so the worker learns
    // of the close and no submission can slip in after the final drain.
    sender: RwLock<Option<Sender<Submission<C>>>>,
    receiver: Receiver<Submission<C>>,
    // The parker lives with the assembly: only the worker holding that lock sleeps on it.
    assembly: Mutex<(Assembly<C>, Parker, LateTimer)>,
    wake_worker: Unparker,
    policy: LivePolicy,
    admission: Admission<W>,
    // Waiters for room that a release handed back, until the owner wakes them.
    woken: Mutex<Vec<W>>,
    draining: AtomicBool,
    stats: Mutex<Stats>,
    /// What timed batches cost, for adaptive dispatch and length-aware packing.
    costs: Mutex<BatchCosts>,
    /// While the worker sleeps: how many items in the channel make it worth waking (the rest of
    /// a batch, or of the size adaptive dispatch waits for); `AWAKE` otherwise.
    sleeping_for: AtomicUsize,
    /// Items sent on the channel and not yet received: counted before the send and after the
    /// receive, so it is never less than the channel holds.
    items_in_channel: AtomicUsize,
    /// Under loom only: producers follow the earlier wake-up rule, which woke the worker when
    /// the admission count they got was 0 or their items crossed the batch size. It loses
    /// wake-ups; the models show that they catch it (see `scripts/loom.sh`).
    #[cfg(loom)]
    previous_wake_rule: bool,
}

const AWAKE: usize = usize::MAX;

/// Linux lets a sleeping thread overshoot its deadline by its "timer slack", 50 µs by default,
/// to batch wake-ups. A batch deadline is a latency promise, so the worker asks for 1 µs.
fn precise_timers_for_this_thread() {
    #[cfg(target_os = "linux")]
    {
        thread_local!(static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
        if !DONE.replace(true) {
            const SLACK_NANOS: libc::c_ulong = 1_000;
            // SAFETY: PR_SET_TIMERSLACK takes one integer argument and only affects this thread.
            unsafe {
                libc::prctl(libc::PR_SET_TIMERSLACK, SLACK_NANOS, 0, 0, 0);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<C: Clone + Cancellable, W> Scheduler<C, W> {
    /// `max_queued` bounds the items accepted and not yet dispatched; `None` leaves it open.
    pub fn new(policy: BatchPolicy, max_queued: Option<usize>) -> Self {
        let (sender, receiver) = crate::sync::channel();
        let parker = Parker::new();
        Self {
            sender: RwLock::new(Some(sender)),
            receiver,
            wake_worker: parker.unparker().clone(),
            assembly: Mutex::new((Assembly::new(&policy), parker, LateTimer::default())),
            sleeping_for: AtomicUsize::new(AWAKE),
            items_in_channel: AtomicUsize::new(0),
            policy: LivePolicy::new(policy),
            admission: Admission::new(max_queued),
            woken: Mutex::new(Vec::new()),
            draining: AtomicBool::new(false),
            stats: Mutex::new(Stats::default()),
            costs: Mutex::new(BatchCosts::default()),
            #[cfg(loom)]
            previous_wake_rule: false,
        }
    }

    /// See `previous_wake_rule`.
    #[cfg(all(loom, test))]
    pub(crate) fn with_previous_wake_rule(mut self) -> Self {
        self.previous_wake_rule = true;
        self
    }

    /// Items accepted and not yet dispatched.
    pub fn queued(&self) -> usize {
        self.admission.queued()
    }

    /// The queue's bound, for blocking admission ([`Admission::admit_blocking`]) and for
    /// registering waiters; a submission it admitted goes in with [`Scheduler::submit_admitted`].
    pub fn admission(&self) -> &Admission<W> {
        &self.admission
    }

    /// Waiters for room that releases handed back since the last call.
    pub fn take_woken(&self) -> Vec<W> {
        std::mem::take(&mut *lock(&self.woken))
    }

    /// Gives back the room of `count` items; true if that woke registered waiters.
    fn release(&self, count: usize) -> bool {
        let woken = self.admission.release(count);
        if woken.is_empty() {
            return false;
        }
        lock(&self.woken).extend(woken);
        true
    }

    pub fn is_closed(&self) -> bool {
        self.sender
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    /// Refuses a submission holding an item that no batch could ever hold.
    pub fn check(&self, submission: Submission<C>) -> Result<Submission<C>, Rejected<C>> {
        check_lengths(submission, &self.policy.get())
    }

    /// Queues a submission if the queue has room for it, else refuses it.
    pub fn submit(&self, submission: Submission<C>) -> Result<(), Rejected<C>> {
        let submission = check_lengths(submission, &self.policy.get())?;
        match self.admission.try_admit(submission.count) {
            Ok(before) => self.enqueue(submission, Some(before)),
            Err(refusal) => Err(Rejected::Refused {
                submission,
                refusal,
            }),
        }
    }

    /// Queues a submission whose items [`Scheduler::admission`] already admitted.
    pub fn submit_admitted(&self, submission: Submission<C>) -> Result<(), Rejected<C>> {
        self.enqueue(submission, None)
    }

    /// Sends an admitted submission to the worker, and wakes it if this changes its decision.
    /// `admitted_onto`, the items queued before its own were admitted, is read only by the
    /// previous wake-up rule that the loom models keep.
    fn enqueue(
        &self,
        submission: Submission<C>,
        admitted_onto: Option<usize>,
    ) -> Result<(), Rejected<C>> {
        let count = submission.count;
        let sender = self.sender.read().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = sender.as_ref() else {
            drop(sender);
            self.release(count);
            return Err(Rejected::Closed(submission));
        };
        self.items_in_channel.fetch_add(count, Ordering::SeqCst);
        // The receiver lives as long as `self`, so the channel cannot be disconnected here.
        if let Err(returned) = sender.send(submission) {
            self.items_in_channel.fetch_sub(count, Ordering::SeqCst);
            return Err(Rejected::Closed(returned.into_inner()));
        }
        #[cfg(loom)]
        if self.previous_wake_rule {
            let batch_size = self.policy.get().batch_size;
            let crossed = |before: usize| {
                before == 0 || (before < batch_size && before + count >= batch_size)
            };
            if admitted_onto.is_some_and(crossed) {
                self.wake_worker.unpark();
            }
            return Ok(());
        }
        #[cfg(not(loom))]
        let _ = admitted_onto;
        // Pairs with the worker's fence before it sleeps: either it sees this item in the
        // channel, or this producer sees that it sleeps and for how many items.
        fence(Ordering::SeqCst);
        let sleeping_for = self.sleeping_for.load(Ordering::SeqCst);
        if sleeping_for != AWAKE && self.items_in_channel.load(Ordering::SeqCst) >= sleeping_for {
            self.wake_worker.unpark();
        }
        Ok(())
    }

    /// Applies the runtime knobs of `policy` (see [`BatchPolicy::reconfigured`]) from the next
    /// decision on; a sleeping worker wakes to decide again under them.
    pub fn reconfigure(&self, policy: &BatchPolicy) {
        self.policy.reconfigure(policy);
        self.wake_worker.unpark();
    }

    /// The policy applied now.
    #[cfg(test)]
    pub fn policy(&self) -> BatchPolicy {
        self.policy.get()
    }

    /// Stops accepting submissions. With `drain`, the worker first dispatches everything already
    /// accepted; without it, the worker stops and [`Scheduler::take_remaining`] returns the rest.
    pub fn close(&self, drain: bool) {
        self.draining.store(drain, Ordering::Relaxed);
        self.sender
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let woken = self.admission.close();
        lock(&self.woken).extend(woken);
        self.wake_worker.unpark();
    }

    /// Blocks until a batch may leave and returns it; `None` once closed and (when draining)
    /// empty. No timer runs while nothing is queued. Waiters for room are left in
    /// [`Scheduler::take_woken`]; a worker that must wake them uses [`Scheduler::next`].
    pub fn next_batch(&self) -> Option<Batch<C>> {
        loop {
            match self.next(&mut || {}) {
                Next::Batch(batch) => return Some(batch),
                Next::Closed => return None,
                Next::RoomFreed => {}
            }
        }
    }

    /// Like [`Scheduler::next_batch`], but also returns when discarding cancelled items freed
    /// room that registered waiters wait for, so the caller can wake them at once. Calls
    /// `before_waiting` each time before the worker sleeps (or waits for another worker): work
    /// that can wait while a batch is ready at once, but not while the worker idles.
    pub fn next(&self, before_waiting: &mut dyn FnMut()) -> Next<C> {
        self.next_or_wait(Some(before_waiting))
            .expect("a worker that may wait always gets an answer")
    }

    /// Like [`Scheduler::next`], but `None` where it would wait (for a batch, or for another
    /// worker): lets a worker that holds a lock of its own (the GIL) keep it when a batch is
    /// ready at once, and let it go only to wait.
    pub fn try_next(&self) -> Option<Next<C>> {
        self.next_or_wait(None)
    }

    /// [`Scheduler::next`] when `before_waiting` is given, else [`Scheduler::try_next`].
    fn next_or_wait(&self, mut before_waiting: Option<&mut dyn FnMut()>) -> Option<Next<C>> {
        precise_timers_for_this_thread();
        // Another worker may hold the assembly for as long as it sleeps: that is waiting too.
        let mut guard = match self.assembly.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                before_waiting.as_mut()?();
                lock(&self.assembly)
            }
        };
        let (assembly, parker, late_timer) = &mut *guard;
        let mut disconnected = false;
        loop {
            loop {
                match self.receive() {
                    Ok(submission) => assembly.push(submission),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            let draining = disconnected && self.draining.load(Ordering::Relaxed);
            if disconnected && !draining {
                return Some(Next::Closed);
            }
            let now = now();
            let policy = self.policy.get();
            let costs = if BatchCosts::read_by(&policy) {
                lock(&self.costs).clone()
            } else {
                BatchCosts::default()
            };
            let (poll, removed) = {
                let mut stats = lock(&self.stats);
                assembly.poll(now, &policy, draining, &mut stats, &costs)
            };
            if self.release(removed) && !matches!(poll, Poll::Ready(_)) {
                return Some(Next::RoomFreed);
            }
            let (until, wake_at_items) = match poll {
                Poll::Ready(batch) => return Some(Next::Batch(batch)),
                Poll::Idle if disconnected => return Some(Next::Closed),
                Poll::Idle => (None, 1),
                Poll::WaitUntil {
                    until,
                    wake_at_items,
                } => (Some(until), wake_at_items),
            };
            // With a token budget the queue may fill by tokens first: wake on every arrival.
            let sleeping_for = if policy.packing.max_batch_tokens.is_some() {
                1
            } else {
                wake_at_items.saturating_sub(assembly.len()).max(1)
            };
            before_waiting.as_mut()?();
            self.sleeping_for.store(sleeping_for, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if self.receiver.is_empty() {
                match until {
                    None => parker.park(),
                    Some(until) => self.sleep_until(parker, late_timer, until),
                }
            }
            self.sleeping_for.store(AWAKE, Ordering::SeqCst);
        }
    }

    /// Sleeps until `deadline` or a wake-up. The timed sleep asks to end early by as much as
    /// such sleeps have lately been late (see [`LateTimer`]) and spins the rest of the way,
    /// unless a submission arrives or the queue closes meanwhile.
    fn sleep_until(&self, parker: &Parker, late_timer: &mut LateTimer, deadline: Instant) {
        let asked = late_timer.wake_at(deadline);
        if asked > now() {
            parker.park_deadline(asked);
            let woke = now();
            if woke < asked {
                return; // a producer woke it: decide again
            }
            late_timer.observe(asked, woke);
        }
        while now() < deadline && self.receiver.is_empty() && !self.is_closed() {
            std::hint::spin_loop();
        }
    }

    fn receive(&self) -> Result<Submission<C>, TryRecvError> {
        let submission = self.receiver.try_recv()?;
        self.items_in_channel
            .fetch_sub(submission.count, Ordering::SeqCst);
        Ok(submission)
    }

    /// Everything still queued after the worker stopped, so each caller can be told why.
    pub fn take_remaining(&self) -> Vec<Entry<C>> {
        let mut guard = lock(&self.assembly);
        let assembly = &mut guard.0;
        while let Ok(submission) = self.receive() {
            assembly.push(submission);
        }
        let remaining = assembly.drain();
        self.release(remaining.len());
        remaining
    }

    /// Counts a settled batch of `items` padded to `padded` positions; only a `succeeded` one
    /// teaches the scheduler its cost.
    pub fn record_batch(
        &self,
        items: usize,
        padded: usize,
        elapsed: std::time::Duration,
        succeeded: bool,
    ) {
        lock(&self.stats).record_batch(items, elapsed);
        if succeeded {
            lock(&self.costs).observe(&self.policy.get(), items, padded, elapsed);
        }
    }

    pub fn record_padding(&self, real: u64, padded: u64) {
        lock(&self.stats).record_padding(real, padded);
    }

    pub fn record_unserved(&self, why: Unserved, items: usize) {
        lock(&self.stats).record_unserved(why, items);
    }

    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    #[derive(Debug, Default)]
    struct Ticket {
        id: usize,
        cancelled: AtomicBool,
    }

    impl Cancellable for Arc<Ticket> {
        fn is_cancelled(&self) -> bool {
            self.cancelled.load(Ordering::Relaxed)
        }
    }

    type TestScheduler = Scheduler<Arc<Ticket>>;

    fn scheduler(batch_size: i64, timeout_ms: f64) -> Arc<TestScheduler> {
        Arc::new(Scheduler::new(
            BatchPolicy::new(batch_size, timeout_ms, 8).unwrap(),
            None,
        ))
    }

    fn submission(id: usize, count: usize) -> Submission<Arc<Ticket>> {
        Submission {
            call: Arc::new(Ticket {
                id,
                ..Default::default()
            }),
            count,
            priority: 0,
            arrival: Instant::now(),
            lengths: None,
        }
    }

    #[test]
    fn an_assembly_learns_arrivals_exactly_while_its_policy_is_adaptive() {
        let fixed = BatchPolicy::new(8, 5.0, 8).unwrap();
        let adaptive = BatchPolicy {
            adaptive: true,
            ..fixed.clone()
        };
        let mut assembly: Assembly<Arc<Ticket>> = Assembly::new(&fixed);
        let mut stats = Stats::default();
        let costs = BatchCosts::default();
        assert!(assembly.arrivals.is_none());
        // reconfigure(timeout_ms="auto") reaches the assembly through the policy it polls with.
        assembly.poll(Instant::now(), &adaptive, false, &mut stats, &costs);
        assert!(assembly.arrivals.is_some());
        assembly.push(submission(1, 1));
        assembly.poll(Instant::now(), &fixed, false, &mut stats, &costs);
        assert!(assembly.arrivals.is_none());
    }

    #[test]
    fn full_batch_leaves_without_waiting_for_the_deadline() {
        let scheduler = scheduler(4, 60_000.0);
        scheduler.submit(submission(1, 4)).unwrap();
        let started = Instant::now();
        let batch = scheduler.next_batch().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(batch.entries.len(), 4);
        assert_eq!(batch.reason, DispatchReason::Full);
        assert_eq!(scheduler.queued(), 0);
    }

    #[test]
    fn short_batch_leaves_at_the_deadline_of_its_oldest_item() {
        let scheduler = scheduler(8, 30.0);
        let submitted = submission(1, 2);
        let arrival = submitted.arrival;
        scheduler.submit(submitted).unwrap();
        let batch = scheduler.next_batch().unwrap();
        assert!(arrival.elapsed() >= Duration::from_millis(30));
        assert_eq!(batch.reason, DispatchReason::Deadline);
        assert_eq!(batch.entries.len(), 2);
    }

    #[test]
    fn deadline_batches_never_leave_early_however_late_the_timer_was_learnt_to_be() {
        // Each round teaches the worker's late timer; none may make a batch leave before its
        // oldest item's deadline (the early wake-up only spins the rest of the way).
        let scheduler = scheduler(8, 2.0);
        for id in 0..20 {
            let submitted = submission(id, 1);
            let arrival = submitted.arrival;
            scheduler.submit(submitted).unwrap();
            let batch = scheduler.next_batch().unwrap();
            assert!(arrival.elapsed() >= Duration::from_millis(2), "round {id}");
            assert_eq!(batch.reason, DispatchReason::Deadline);
        }
        let learnt = lock(&scheduler.assembly).2.lateness();
        assert!(learnt <= Duration::from_secs(1));
    }

    #[test]
    fn work_deferred_until_waiting_runs_only_when_the_worker_must_wait() {
        let scheduler = scheduler(2, 60_000.0);
        let mut deferred_runs = 0;
        scheduler.submit(submission(1, 2)).unwrap();
        let ready = scheduler.next(&mut || deferred_runs += 1);
        assert!(matches!(ready, Next::Batch(_)));
        assert_eq!(
            deferred_runs, 0,
            "a batch was ready: nothing had to run first"
        );

        scheduler.submit(submission(2, 1)).unwrap();
        let producer = {
            let scheduler = Arc::clone(&scheduler);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                scheduler.submit(submission(3, 1)).unwrap();
            })
        };
        let filled = scheduler.next(&mut || deferred_runs += 1);
        producer.join().unwrap();
        assert!(matches!(filled, Next::Batch(batch) if batch.entries.len() == 2));
        assert!(
            deferred_runs >= 1,
            "the worker slept without running the deferred work"
        );
    }

    #[test]
    fn a_worker_blocked_behind_another_sleeping_worker_runs_its_deferred_work() {
        // The second worker waits on the first, which holds the assembly while it sleeps: it
        // must not keep the wake-ups it deferred until then.
        let scheduler = scheduler(1, 60_000.0);
        let first = {
            let scheduler = Arc::clone(&scheduler);
            thread::spawn(move || scheduler.next_batch())
        };
        thread::sleep(Duration::from_millis(20));
        let (ran, deferred_ran) = std::sync::mpsc::channel();
        let second = {
            let scheduler = Arc::clone(&scheduler);
            thread::spawn(move || {
                let next = scheduler.next(&mut || {
                    let _ = ran.send(());
                });
                matches!(next, Next::Batch(_))
            })
        };
        deferred_ran
            .recv_timeout(Duration::from_secs(10))
            .expect("the deferred work waited for the other worker");
        scheduler.submit(submission(1, 1)).unwrap();
        scheduler.submit(submission(2, 1)).unwrap();
        assert!(first.join().unwrap().is_some());
        assert!(second.join().unwrap());
    }

    #[test]
    fn a_waiting_worker_wakes_when_the_batch_fills() {
        let scheduler = scheduler(2, 60_000.0);
        let worker = {
            let scheduler = Arc::clone(&scheduler);
            thread::spawn(move || scheduler.next_batch())
        };
        scheduler.submit(submission(1, 1)).unwrap();
        thread::sleep(Duration::from_millis(20));
        scheduler.submit(submission(2, 1)).unwrap();
        let batch = worker.join().unwrap().unwrap();
        let ids: Vec<usize> = batch.entries.iter().map(|e| e.call.id).collect();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(batch.reason, DispatchReason::Full);
    }

    #[test]
    fn close_without_drain_wakes_an_idle_worker_and_hands_back_the_queue() {
        let scheduler = scheduler(8, 60_000.0);
        let worker = {
            let scheduler = Arc::clone(&scheduler);
            thread::spawn(move || scheduler.next_batch())
        };
        scheduler.submit(submission(1, 3)).unwrap();
        thread::sleep(Duration::from_millis(20));
        scheduler.close(false);
        assert!(worker.join().unwrap().is_none());
        assert!(matches!(
            scheduler.submit(submission(2, 1)),
            Err(Rejected::Closed(_))
        ));
        assert_eq!(scheduler.take_remaining().len(), 3);
        assert_eq!(scheduler.queued(), 0);
    }

    #[test]
    fn close_with_drain_dispatches_everything_at_once() {
        let scheduler = scheduler(2, 60_000.0);
        scheduler.submit(submission(1, 3)).unwrap();
        scheduler.close(true);
        let first = scheduler.next_batch().unwrap();
        let second = scheduler.next_batch().unwrap();
        assert_eq!((first.entries.len(), second.entries.len()), (2, 1));
        assert_eq!(second.reason, DispatchReason::Drain);
        assert!(scheduler.next_batch().is_none());
    }

    #[test]
    fn an_item_over_the_token_budget_is_refused_at_once() {
        let policy = BatchPolicy::new(8, 60_000.0, 8)
            .unwrap()
            .with_packing(Some(100), false)
            .unwrap();
        let scheduler: Scheduler<Arc<Ticket>> = Scheduler::new(policy, None);
        let mut too_long = submission(1, 3);
        too_long.lengths = Some(vec![10, 101, 5]);
        match scheduler.submit(too_long) {
            Err(Rejected::TooLong {
                index,
                length,
                budget,
                ..
            }) => assert_eq!((index, length, budget), (1, 101, 100)),
            other => panic!("expected TooLong, got {other:?}"),
        }
        assert_eq!(scheduler.queued(), 0);
    }

    #[test]
    fn timed_batches_teach_sorted_packing_to_leave_a_far_longer_item_for_later() {
        let policy = BatchPolicy::new(8, 20.0, 8)
            .unwrap()
            .with_packing(None, true)
            .unwrap();
        let scheduler: Scheduler<Arc<Ticket>> = Scheduler::new(policy, None);
        let lengths = vec![10, 10, 10, 200, 10, 10, 10, 10];
        let take_full_batch = |id: usize| {
            let mut queued = submission(id, 8);
            queued.lengths = Some(lengths.clone());
            scheduler.submit(queued).unwrap();
            let batch = scheduler.next_batch().unwrap();
            batch.entries.iter().map(|e| e.length).collect::<Vec<_>>()
        };
        // Nothing timed yet: the batch is full, padded to the long item.
        assert_eq!(take_full_batch(1).len(), 8);
        // 10 ms a batch and 0.1 ms a padded position, over batches of every shape.
        for (items, longest) in [(8, 200), (4, 10), (8, 10), (2, 50), (6, 120), (8, 60)].repeat(2) {
            let seconds = 0.010 + 0.0001 * (items * longest) as f64;
            scheduler.record_batch(
                items,
                items * longest,
                Duration::from_secs_f64(seconds),
                true,
            );
        }
        // Padding 7 items of 10 to 200 would cost 133 ms; a second batch costs 10 ms.
        assert_eq!(take_full_batch(2), vec![10; 7]);
        // It leaves alone at its deadline.
        let rest = scheduler.next_batch().unwrap();
        assert_eq!(
            rest.entries.iter().map(|e| e.length).collect::<Vec<_>>(),
            vec![200]
        );
    }

    #[test]
    fn a_smaller_batch_size_applies_to_a_worker_already_waiting() {
        let scheduler = scheduler(8, 60_000.0);
        let batches = worker(&scheduler);
        scheduler.submit(submission(1, 3)).unwrap();
        thread::sleep(Duration::from_millis(20));
        scheduler.reconfigure(&BatchPolicy::new(2, 60_000.0, 8).unwrap());
        assert_eq!(
            batches.recv_timeout(Duration::from_secs(10)),
            Ok(vec![1, 1])
        );
        assert_eq!(scheduler.policy().batch_size, 2);
        scheduler.close(false);
    }

    #[test]
    fn a_shorter_timeout_applies_to_items_already_waiting() {
        let scheduler = scheduler(8, 60_000.0);
        let batches = worker(&scheduler);
        scheduler.submit(submission(1, 1)).unwrap();
        thread::sleep(Duration::from_millis(20));
        scheduler.reconfigure(&BatchPolicy::new(8, 1.0, 8).unwrap());
        assert_eq!(batches.recv_timeout(Duration::from_secs(10)), Ok(vec![1]));
        scheduler.close(false);
    }

    #[test]
    fn many_producers_lose_nothing() {
        let scheduler = scheduler(16, 1.0);
        let producers: Vec<_> = (0..8)
            .map(|p| {
                let scheduler = Arc::clone(&scheduler);
                thread::spawn(move || {
                    for i in 0..500 {
                        scheduler
                            .submit(submission(p * 1000 + i, 1 + i % 3))
                            .unwrap();
                    }
                })
            })
            .collect();
        let expected: usize = 8 * (0..500).map(|i| 1 + i % 3).sum::<usize>();
        let mut seen = 0;
        while seen < expected {
            let batch = scheduler.next_batch().unwrap();
            assert!(batch.entries.len() <= 16);
            seen += batch.entries.len();
        }
        for producer in producers {
            producer.join().unwrap();
        }
        assert_eq!(seen, expected);
        assert_eq!(scheduler.queued(), 0);
        let stats = scheduler.stats();
        assert_eq!(stats.queue_wait.count(), expected as u64);
    }

    /// Runs `next_batch` on a worker thread; the receiver gets each batch's ids.
    fn worker(scheduler: &Arc<TestScheduler>) -> std::sync::mpsc::Receiver<Vec<usize>> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let scheduler = Arc::clone(scheduler);
        thread::spawn(move || {
            while let Some(batch) = scheduler.next_batch() {
                let ids = batch.entries.iter().map(|entry| entry.call.id).collect();
                if sender.send(ids).is_err() {
                    break;
                }
            }
        });
        receiver
    }

    #[test]
    fn a_list_call_that_fills_the_batch_wakes_the_worker() {
        // The worker waits for 3 more items; they come in one message.
        let scheduler = scheduler(4, 60_000.0);
        let batches = worker(&scheduler);
        scheduler.submit(submission(1, 1)).unwrap();
        thread::sleep(Duration::from_millis(20));
        scheduler.submit(submission(2, 3)).unwrap();
        assert_eq!(
            batches.recv_timeout(Duration::from_secs(10)),
            Ok(vec![1, 2, 2, 2])
        );
        scheduler.close(false);
    }

    #[test]
    fn an_item_admitted_before_the_worker_slept_still_wakes_it() {
        // Found by the loom model: admitted while item 1 was queued, item 2 reaches the channel
        // only after the worker sent item 1 and went to sleep with no timer.
        let scheduler = scheduler(4, 20.0);
        scheduler.submit(submission(1, 1)).unwrap();
        scheduler.admission().try_admit(1).unwrap();
        let batches = worker(&scheduler);
        assert_eq!(batches.recv_timeout(Duration::from_secs(5)), Ok(vec![1]));
        thread::sleep(Duration::from_millis(20));
        scheduler.submit_admitted(submission(2, 1)).unwrap();
        assert_eq!(batches.recv_timeout(Duration::from_secs(5)), Ok(vec![2]));
        scheduler.close(false);
    }

    #[test]
    fn the_item_that_fills_a_batch_wakes_the_worker_whatever_the_admission_order() {
        let scheduler = scheduler(3, 60_000.0);
        let batches = worker(&scheduler);
        for _ in 0..3 {
            scheduler.admission().try_admit(1).unwrap();
        }
        scheduler.submit_admitted(submission(0, 1)).unwrap();
        thread::sleep(Duration::from_millis(20));
        scheduler.submit_admitted(submission(2, 1)).unwrap();
        thread::sleep(Duration::from_millis(20));
        scheduler.submit_admitted(submission(1, 1)).unwrap();
        let batch = batches.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(batch, vec![0, 2, 1]);
        scheduler.close(false);
    }
}
