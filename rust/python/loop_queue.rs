//! The queue of one asyncio event loop. It applies the same assembly and dispatch rule as the
//! threaded scheduler, but never blocks: the loop asks for a batch when something changed, and
//! is told when to ask again, so an idle processor has no timer at all.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::batch::{Batch, BatchOwner};
use super::call::{new_call, CallRef, Waiter};
use super::errors::closed_error;
use super::errors::refusal_error;
use super::options::QueueOptions;
use super::processor::{histograms_dict, register_room_waiter, rejected_error, stats_dict, Ticket};
use super::settle::{wake_room_waiters, RoomWaiter, Settlement};
use crate::adaptive::CostModel;
use crate::admission::Admission;
use crate::call::Failure;
use crate::policy::LivePolicy;
use crate::scheduler::{check_lengths, Assembly, Poll};
use crate::stats::{Stats, Unserved};

/// Statistics shared by the queues of one processor across event loops.
#[derive(Default)]
struct Totals {
    stats: Mutex<Stats>,
    queued: AtomicUsize,
}

struct Inner {
    assembly: Mutex<Assembly<CallRef>>,
    policy: LivePolicy,
    /// This loop's bound: each event loop's queue has its own `max_queue_size`.
    admission: Admission<RoomWaiter>,
    block_when_full: bool,
    /// This loop's batch cost curve, for adaptive dispatch.
    cost: Mutex<CostModel>,
    /// The queue length at which a submission should make the loop look again.
    wake_at_items: AtomicUsize,
    totals: Arc<Totals>,
    deliver: Py<PyAny>,
    closed: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    /// Gives back the room of `count` items and wakes the tasks waiting for it.
    fn release(&self, py: Python<'_>, count: usize) {
        self.totals.queued.fetch_sub(count, Ordering::Relaxed);
        let woken = self.admission.release(count);
        if !woken.is_empty() {
            wake_room_waiters(py, &self.deliver, woken);
        }
    }
}

impl Drop for Inner {
    // A loop that ended with items still queued (their callers gave up) takes them along: they
    // no longer count in the shared statistics.
    fn drop(&mut self) {
        let left = self
            .assembly
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        self.totals.queued.fetch_sub(left, Ordering::Relaxed);
    }
}

impl BatchOwner for Inner {
    fn record_batch(&self, items: usize, elapsed: Duration, succeeded: bool) {
        lock(&self.totals.stats).record_batch(items, elapsed);
        if succeeded && self.policy.get().adaptive {
            lock(&self.cost).observe(items, elapsed);
        }
    }

    fn record_padding(&self, real: u64, padded: u64) {
        lock(&self.totals.stats).record_padding(real, padded);
    }

    fn record_unserved(&self, why: Unserved, items: usize) {
        lock(&self.totals.stats).record_unserved(why, items);
    }

    fn deliver(&self) -> &Py<PyAny> {
        &self.deliver
    }

    fn wake(&self, calls: Vec<CallRef>) {
        for call in calls {
            call.outcome.wake();
        }
    }
}

#[pyclass(frozen, module = "batched._core")]
pub struct LoopQueue {
    inner: Arc<Inner>,
}

#[pymethods]
impl LoopQueue {
    /// `share_stats_with` makes this queue add to another queue's statistics, so that one
    /// processor reports once across all its event loops.
    #[new]
    #[pyo3(signature = (options, deliver, share_stats_with = None))]
    fn new(
        options: &QueueOptions,
        deliver: Py<PyAny>,
        share_stats_with: Option<&LoopQueue>,
    ) -> Self {
        let policy = options.policy.clone();
        let totals = share_stats_with.map_or_else(Arc::default, |other| other.inner.totals.clone());
        Self {
            inner: Arc::new(Inner {
                assembly: Mutex::new(Assembly::new(&policy)),
                cost: Mutex::new(CostModel::default()),
                wake_at_items: AtomicUsize::new(policy.batch_size),
                policy: LivePolicy::new(policy),
                admission: Admission::new(options.max_queued),
                block_when_full: options.block_when_full,
                totals,
                deliver,
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Queues `arg` (one item, a list, or a payload of `rows` rows with per-item `lengths`) for
    /// a caller awaiting `future`. Returns the ticket (or `None` for an empty list) and whether
    /// the loop should ask for a batch now: true when this call started the deadline or filled a
    /// batch.
    #[pyo3(signature = (arg, event_loop, future, priority = 0, rows = None, lengths = None))]
    fn submit(
        &self,
        arg: &Bound<'_, PyAny>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
        priority: i32,
        rows: Option<usize>,
        lengths: Option<Vec<usize>>,
    ) -> PyResult<(Option<Ticket>, bool)> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(closed_error());
        }
        let waiter = Waiter::Future { event_loop, future };
        let Some((call, submission)) = new_call(arg, rows, lengths, priority, waiter)? else {
            return Ok((None, false));
        };
        let len = call.len;
        let inner = &self.inner;
        let policy = inner.policy.get();
        let submission = check_lengths(submission, &policy).map_err(|rejected| {
            inner.record_unserved(Unserved::Rejected, len);
            rejected_error(rejected)
        })?;
        if let Err(refusal) = inner.admission.try_admit(len) {
            // Under on_full="block" the task waits for room (`wait_for_room`) and tries again.
            if !inner.block_when_full {
                inner.record_unserved(Unserved::Rejected, len);
            }
            return Err(refusal_error(refusal));
        }
        let mut assembly = lock(&inner.assembly);
        let before = assembly.len();
        assembly.push(submission);
        self.inner.totals.queued.fetch_add(len, Ordering::Relaxed);
        // As in the threaded scheduler: act when the deadline starts or a batch fills.
        let wake_at = inner.wake_at_items.load(Ordering::Relaxed);
        let act = before == 0
            || (before < wake_at && before + len >= wake_at)
            || policy.packing.max_batch_tokens.is_some();
        let owner: Arc<dyn BatchOwner> = self.inner.clone();
        Ok((Some(Ticket { call, owner }), act))
    }

    /// As `Processor.wait_for_room`, for this loop's queue.
    fn wait_for_room(
        &self,
        count: usize,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
    ) -> PyResult<bool> {
        register_room_waiter(
            &self.inner.admission,
            count,
            event_loop,
            future,
            &*self.inner,
        )
    }

    /// Counts `items` of a call that gave up waiting for room after `timeout`.
    fn record_timed_out(&self, items: usize) {
        self.inner.record_unserved(Unserved::TimedOut, items);
    }

    /// A batch that may leave now, else `None` and the seconds until one may (or `None` when
    /// nothing is queued). `draining` sends whatever is queued without waiting.
    #[pyo3(signature = (draining = false))]
    fn poll(&self, py: Python<'_>, draining: bool) -> (Option<Batch>, Option<f64>) {
        let inner = &self.inner;
        let policy = inner.policy.get();
        let cost = if policy.adaptive {
            lock(&inner.cost).clone()
        } else {
            CostModel::default()
        };
        let (poll, removed) = {
            let mut assembly = lock(&inner.assembly);
            let mut stats = lock(&inner.totals.stats);
            assembly.poll(Instant::now(), &policy, draining, &mut stats, &cost)
        };
        self.inner.release(py, removed);
        match poll {
            Poll::Ready(batch) => {
                let owner: Arc<dyn BatchOwner> = self.inner.clone();
                (Some(Batch::new(batch, owner)), None)
            }
            Poll::WaitUntil {
                until,
                wake_at_items,
            } => {
                inner.wake_at_items.store(wake_at_items, Ordering::Relaxed);
                let delay = until.saturating_duration_since(Instant::now());
                (None, Some(delay.as_secs_f64()))
            }
            Poll::Idle => (None, None),
        }
    }

    /// Applies `options`' batch size, wait and token budget from the next `poll` on (see
    /// `Processor.reconfigure`); the loop should poll again, to wait under the new ones.
    fn reconfigure(&self, options: &QueueOptions) {
        self.inner.policy.reconfigure(&options.policy);
    }

    /// Refuses further calls; queued ones stay until `fail_remaining` or `poll` takes them.
    fn close(&self, py: Python<'_>) {
        self.inner.closed.store(true, Ordering::Release);
        let woken = self.inner.admission.close();
        wake_room_waiters(py, &self.inner.deliver, woken);
    }

    /// Fails every queued call with `ProcessorClosedError`.
    fn fail_remaining(&self, py: Python<'_>) {
        let remaining = lock(&self.inner.assembly).drain();
        self.inner.release(py, remaining.len());
        let mut settlement = Settlement::default();
        settlement.fail_all(py, &remaining, || Failure::Closed);
        settlement.flush_and_wake(py, &self.inner.deliver);
    }

    /// Items queued on this queue.
    fn __len__(&self) -> usize {
        lock(&self.inner.assembly).len()
    }

    /// Statistics of every queue sharing this one's, as a dict like `Processor.stats`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = lock(&self.inner.totals.stats).clone();
        stats_dict(py, &stats, self.inner.totals.queued.load(Ordering::Relaxed))
    }

    /// As `Processor.histograms`, across every queue sharing this one's statistics.
    fn histograms<'py>(
        &self,
        py: Python<'py>,
        time_bounds: Vec<f64>,
        size_bounds: Vec<u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let stats = lock(&self.inner.totals.stats).clone();
        histograms_dict(py, &stats, time_bounds, size_bounds)
    }
}
