//! The processor: accepts calls from any thread or event loop and hands batches to the Python
//! worker that runs the user function.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::batch::{Batch, BatchOwner};
use super::errors::{closed_error, refusal_error, self_call_error};
use super::gil::release_gil;
use super::in_flight::{new_call, CallRef, PyCall, Waiter};
use super::interrupt::{deadline_after, timeout_error, Interruptible, Stop};
use super::options::Options;
use super::settle::{wake_room_waiters, RoomWaiter, Settlement};
use super::stats::{histograms_dict, BatchSettings, BatchStats};
use super::wake_relay::Rhythm;
use crate::admission::{Admission, Refusal};
use crate::call::{Delivery, Failure};
use crate::reentry::WorkerMark;
use crate::scheduler::{Next, Rejected, Scheduler};
use crate::stats::Unserved;

struct Shared {
    scheduler: Scheduler<CallRef, RoomWaiter>,
    /// `on_full="block"`: a call finding the queue full waits for room instead of failing.
    block_when_full: bool,
    deliver: Py<PyAny>,
    /// Blocked callers whose results are in. They are woken with the GIL released (woken
    /// earlier, each would find it taken and sleep a second time), and only once the worker
    /// must wait or has built its next batch's arguments (see `next_batch`).
    wake_later: Mutex<Vec<CallRef>>,
    /// Tells a call from inside the batch function (on a worker thread) from any other.
    workers: WorkerMark,
    /// The options in force, as the statistics show them.
    settings: Mutex<BatchSettings>,
}

impl BatchOwner for Shared {
    fn record_batch(&self, items: usize, padded: usize, elapsed: Duration, succeeded: bool) {
        self.scheduler
            .record_batch(items, padded, elapsed, succeeded);
    }

    fn record_padding(&self, real: u64, padded: u64) {
        self.scheduler.record_padding(real, padded);
    }

    fn record_unserved(&self, why: Unserved, items: usize) {
        self.scheduler.record_unserved(why, items);
    }

    fn wake(&self, calls: Vec<CallRef>) {
        self.wake_later
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(calls);
    }

    fn wake_served(&self) {
        let calls = std::mem::take(
            &mut *self
                .wake_later
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        PyCall::wake_in_turn(&calls);
    }

    fn has_served(&self) -> bool {
        !self
            .wake_later
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

impl Shared {
    /// Resolves the futures of tasks waiting for room that releases have woken.
    fn wake_room(&self, py: Python<'_>) {
        let woken = self.scheduler.take_woken();
        if !woken.is_empty() {
            wake_room_waiters(py, &self.deliver, woken);
        }
    }

    /// The exception for a refused submission, counted unless it was only the queue being
    /// closed or a full queue that the caller will wait on.
    fn refuse(&self, rejected: Rejected<CallRef>) -> PyErr {
        let counted = match &rejected {
            Rejected::Closed(_) => None,
            Rejected::Refused { .. } if self.block_when_full => None,
            Rejected::Refused { submission, .. } | Rejected::TooLong { submission, .. } => {
                Some(submission.count)
            }
        };
        if let Some(items) = counted {
            self.record_unserved(Unserved::Rejected, items);
        }
        rejected_error(rejected)
    }

    /// Admits `count` items into the bounded queue, blocking with the GIL released until there
    /// is room, `deadline` passes (`TimeoutError`) or Ctrl-C.
    fn admit_blocking(
        &self,
        py: Python<'_>,
        count: usize,
        deadline: Option<Instant>,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let admission = self.scheduler.admission();
        let mut wait = Interruptible::new(deadline);
        loop {
            let slice_end = wait.slice_end();
            let admitted = release_gil(py, || admission.admit_blocking(count, slice_end));
            match admitted {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => {}
                Err(refusal) => {
                    if refusal != Refusal::Closed {
                        self.record_unserved(Unserved::Rejected, count);
                    }
                    return Err(refusal_error(refusal));
                }
            }
            match wait.check(py) {
                Ok(()) => {}
                Err(Stop::Interrupted(interrupt)) => {
                    self.record_unserved(Unserved::Cancelled, count);
                    return Err(interrupt);
                }
                Err(Stop::DeadlinePassed) => {
                    self.record_unserved(Unserved::TimedOut, count);
                    return Err(timeout_error(timeout.unwrap_or_default()));
                }
            }
        }
    }
}

/// Call in a forked child before using any processor: see [`Rhythm::forget_keeper_after_fork`].
#[pyfunction]
pub(crate) fn reset_after_fork() {
    Rhythm::forget_keeper_after_fork();
}

/// Registers an event-loop task to be woken when `admission` may have room for `count` items.
/// Returns false when it need not wait (room now, or closed): the task retries at once.
pub(crate) fn register_room_waiter(
    admission: &Admission<RoomWaiter>,
    count: usize,
    event_loop: Py<PyAny>,
    future: Py<PyAny>,
    owner: &dyn BatchOwner,
) -> PyResult<bool> {
    if let Some(limit) = admission.limit().filter(|&limit| count > limit) {
        owner.record_unserved(Unserved::Rejected, count);
        return Err(refusal_error(Refusal::TooLarge { count, limit }));
    }
    let waiter = RoomWaiter { event_loop, future };
    Ok(admission.register(count, waiter).is_none())
}

#[pyclass(frozen, module = "batched._core")]
pub struct Processor {
    shared: Arc<Shared>,
}

/// A call waiting on an asyncio future; lets the awaiting task withdraw it.
#[pyclass(frozen, module = "batched._core")]
pub struct Ticket {
    pub(crate) call: CallRef,
    pub(crate) owner: Arc<dyn BatchOwner>,
}

#[pymethods]
impl Ticket {
    /// Withdraws the call: items not yet dispatched never reach the user function, and results
    /// of items already running are dropped. `timed_out` says why, for the statistics.
    #[pyo3(signature = (timed_out = false))]
    fn cancel(&self, timed_out: bool) {
        if self.call.outcome.fail(Failure::Abandoned) == Delivery::Completed {
            let why = if timed_out {
                Unserved::TimedOut
            } else {
                Unserved::Cancelled
            };
            self.owner.record_unserved(why, self.call.len);
        }
    }
}

/// The exception for a refused submission.
pub(crate) fn rejected_error<C>(rejected: Rejected<C>) -> PyErr {
    match rejected {
        Rejected::Closed(_) => closed_error(),
        Rejected::Refused { refusal, .. } => refusal_error(refusal),
        Rejected::TooLong {
            index,
            length,
            budget,
            ..
        } => PyValueError::new_err(format!(
            "item {index} of this call has length {length}, more than max_batch_tokens={budget}, \
             so no batch can hold it; raise max_batch_tokens or shorten the item"
        )),
    }
}

#[pymethods]
impl Processor {
    #[new]
    fn new(options: &Options, deliver: Py<PyAny>) -> Self {
        Self {
            shared: Arc::new(Shared {
                scheduler: Scheduler::new(options.policy.clone(), options.max_queued),
                block_when_full: options.block_when_full,
                deliver,
                wake_later: Mutex::new(Vec::new()),
                workers: WorkerMark::new(),
                settings: Mutex::new(options.batch_settings()),
            }),
        }
    }

    /// Submits `arg` (one item, a list of items, or with `rows` a payload of that many rows)
    /// and blocks, with the GIL released, until its results are in. Raises `TimeoutError` after
    /// `timeout` seconds. `lengths` gives each item's length for length-aware packing. Also
    /// called from Rust, by [`super::entry::CallEntry`].
    #[pyo3(signature = (arg, priority = 0, timeout = None, rows = None, lengths = None))]
    pub(crate) fn call(
        &self,
        py: Python<'_>,
        arg: &Bound<'_, PyAny>,
        priority: i32,
        timeout: Option<f64>,
        rows: Option<usize>,
        lengths: Option<Vec<usize>>,
    ) -> PyResult<Py<PyAny>> {
        if self.shared.workers.is_current_thread() {
            return Err(self_call_error());
        }
        let Some((call, submission)) = new_call(arg, rows, lengths, priority, Waiter::Thread)?
        else {
            return Ok(PyList::empty(py).into_any().unbind());
        };
        if let Some(seconds) = timeout.filter(|seconds| seconds.is_nan() || *seconds <= 0.0) {
            // No time to wait at all (or NaN): fail before queueing anything, as asyncio does.
            return Err(timeout_error(seconds));
        }
        let deadline = deadline_after(timeout);
        let len = call.len;
        let shared = &*self.shared;
        let scheduler = &shared.scheduler;
        let submitted = if shared.block_when_full {
            let submission = scheduler.check(submission).map_err(|r| shared.refuse(r))?;
            shared.admit_blocking(py, len, deadline, timeout)?;
            scheduler.submit_admitted(submission)
        } else {
            scheduler.submit(submission)
        };
        submitted.map_err(|rejected| shared.refuse(rejected))?;
        call.wait(py, deadline, timeout, &|why, items| {
            shared.record_unserved(why, items);
        })
    }

    /// Submits `arg` for a caller awaiting `future` on `event_loop`. Returns `None` for an empty
    /// list (nothing to wait for), else a ticket to cancel the call with.
    #[pyo3(signature = (arg, event_loop, future, priority = 0, rows = None, lengths = None))]
    fn submit(
        &self,
        arg: &Bound<'_, PyAny>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
        priority: i32,
        rows: Option<usize>,
        lengths: Option<Vec<usize>>,
    ) -> PyResult<Option<Ticket>> {
        if self.shared.workers.is_current_thread() {
            return Err(self_call_error());
        }
        let waiter = Waiter::Future { event_loop, future };
        let Some((call, submission)) = new_call(arg, rows, lengths, priority, waiter)? else {
            return Ok(None);
        };
        let shared = &self.shared;
        shared
            .scheduler
            .submit(submission)
            .map_err(|rejected| shared.refuse(rejected))?;
        let owner: Arc<dyn BatchOwner> = shared.clone();
        Ok(Some(Ticket { call, owner }))
    }

    /// For a task that `submit` refused with `QueueFullError` under `on_full="block"`: registers
    /// `future` to be resolved once the queue may have room for `count` items. Returns false
    /// when the task should retry at once instead. Raises `QueueFullError` if `count` items can
    /// never fit.
    fn wait_for_room(
        &self,
        count: usize,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
    ) -> PyResult<bool> {
        let shared = &*self.shared;
        register_room_waiter(
            shared.scheduler.admission(),
            count,
            event_loop,
            future,
            shared,
        )
    }

    /// Counts `items` of a call that gave up waiting for room after `timeout`.
    fn record_timed_out(&self, items: usize) {
        self.shared.record_unserved(Unserved::TimedOut, items);
    }

    /// Blocks, with the GIL released, until a batch may leave; `None` once the processor is
    /// closed and has nothing left to run.
    fn next_batch(&self, py: Python<'_>) -> Option<Batch> {
        let this = &self.shared;
        this.workers.claim_current_thread();
        loop {
            // Callers served by the last batch are woken here only if the worker must wait:
            // while it prepares a batch that is ready now, they would compete with it for the
            // GIL, so that batch wakes them (`Batch.wake_served`) just before the user function
            // runs. (A batch function that itself made blocking calls may keep a baton:
            // release_gil hands it over.) With no blocked callers served (asyncio callers
            // only), a batch ready at once is taken with the GIL held: letting it go would hand
            // it to the event loop for up to a switch interval.
            let ready = if this.has_served() {
                None
            } else {
                this.scheduler.try_next()
            };
            let next = ready.unwrap_or_else(|| {
                release_gil(py, || this.scheduler.next(&mut || this.wake_served()))
            });
            if matches!(next, Next::Closed) {
                release_gil(py, || this.wake_served()); // no next batch will wake them
            }
            this.wake_room(py);
            match next {
                Next::Batch(batch) => {
                    let owner: Arc<dyn BatchOwner> = this.clone();
                    return Some(Batch::new(batch, owner));
                }
                Next::Closed => return None,
                Next::RoomFreed => {}
            }
        }
    }

    /// Applies `options`' batch size, wait and token budget from the next batch on; the other
    /// options are those the processor was made with (the Python layer refuses changes to them).
    fn reconfigure(&self, options: &Options) {
        self.shared.scheduler.reconfigure(&options.policy);
        *lock(&self.shared.settings) = options.batch_settings();
    }

    /// Stops accepting calls. With `drain`, queued items still run; otherwise the worker stops
    /// after its current batch and `fail_remaining` tells the queued callers (at once: it need
    /// not wait for that batch).
    fn close(&self, py: Python<'_>, drain: bool) {
        self.shared.scheduler.close(drain);
        self.shared.wake_room(py);
    }

    /// Fails every still-queued call with `ProcessorClosedError`; call after `close`. A batch
    /// the worker is still running is left to it.
    fn fail_remaining(&self, py: Python<'_>) {
        self.shared.wake_served();
        let remaining = self.shared.scheduler.take_remaining();
        let mut settlement = Settlement::default();
        settlement.fail_all(py, &remaining, || Failure::Closed);
        settlement.flush_and_wake(py);
        self.shared.wake_room(py);
    }

    #[getter]
    fn closed(&self) -> bool {
        self.shared.scheduler.is_closed()
    }

    /// A snapshot of the running statistics.
    fn stats(&self) -> BatchStats {
        let settings = lock(&self.shared.settings).clone();
        BatchStats::snapshot(
            &self.shared.scheduler.stats(),
            self.shared.scheduler.queued(),
            settings,
        )
    }

    /// The histograms behind the statistics, cumulated at the given bounds (what
    /// `batched.prometheus` exports): a dict of `(counts, sum, count)` tuples.
    fn histograms<'py>(
        &self,
        py: Python<'py>,
        time_bounds: Vec<f64>,
        size_bounds: Vec<u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        histograms_dict(py, &self.shared.scheduler.stats(), time_bounds, size_bounds)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
