//! The queue of one asyncio event loop: conversions and loop hooks around the pure-Rust
//! [`LoopScheduler`], which makes every decision.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use std::sync::{Mutex, PoisonError};

use pyo3::types::PyDict;

use super::batch::{Batch, BatchOwner};
use super::in_flight::{new_call, CallRef, Waiter};
use super::options::Options;
use super::processor::{register_room_waiter, rejected_error, Ticket};
use super::settle::{wake_room_waiters, RoomWaiter, Settlement};
use super::stats::{histograms_dict, BatchSettings, BatchStats};
use crate::call::Failure;
use crate::loop_scheduler::{LoopScheduler, Polled};
use crate::stats::Unserved;

struct Inner {
    scheduler: LoopScheduler<CallRef, RoomWaiter>,
    deliver: Py<PyAny>,
    /// The options in force, as the statistics show them.
    settings: Mutex<BatchSettings>,
}

impl LoopQueue {
    fn settings(&self) -> std::sync::MutexGuard<'_, BatchSettings> {
        self.inner
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// Resolves the futures of the tasks waiting for room that were let in.
    fn wake_room(&self, py: Python<'_>, woken: Vec<RoomWaiter>) {
        if !woken.is_empty() {
            wake_room_waiters(py, &self.deliver, woken);
        }
    }
}

impl BatchOwner for Inner {
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
    fn new(options: &Options, deliver: Py<PyAny>, share_stats_with: Option<&LoopQueue>) -> Self {
        let totals = share_stats_with
            .map_or_else(Arc::default, |other| other.inner.scheduler.totals().clone());
        let scheduler = LoopScheduler::new(
            options.policy.clone(),
            options.max_queued,
            options.block_when_full,
            totals,
        );
        Self {
            inner: Arc::new(Inner {
                scheduler,
                deliver,
                settings: Mutex::new(options.batch_settings()),
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
        let waiter = Waiter::Future { event_loop, future };
        let Some((call, submission)) = new_call(arg, rows, lengths, priority, waiter)? else {
            return Ok((None, false));
        };
        let poll_now = self
            .inner
            .scheduler
            .submit(submission)
            .map_err(rejected_error)?;
        let owner: Arc<dyn BatchOwner> = self.inner.clone();
        Ok((Some(Ticket { call, owner }), poll_now))
    }

    /// As `Processor.wait_for_room`, for this loop's queue.
    fn wait_for_room(
        &self,
        count: usize,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
    ) -> PyResult<bool> {
        register_room_waiter(
            self.inner.scheduler.admission(),
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
        let (polled, woken) = self.inner.scheduler.poll(Instant::now(), draining);
        self.inner.wake_room(py, woken);
        match polled {
            Polled::Ready(batch) => {
                let owner: Arc<dyn BatchOwner> = self.inner.clone();
                (Some(Batch::new(batch, owner)), None)
            }
            Polled::After(delay) => (None, Some(delay.as_secs_f64())),
            Polled::Idle => (None, None),
        }
    }

    /// Applies `options`' batch size, wait and token budget from the next `poll` on (see
    /// `Processor.reconfigure`); the loop should poll again, to wait under the new ones.
    fn reconfigure(&self, options: &Options) {
        self.inner.scheduler.reconfigure(&options.policy);
        *self.settings() = options.batch_settings();
    }

    /// Refuses further calls; queued ones stay until `fail_remaining` or `poll` takes them.
    fn close(&self, py: Python<'_>) {
        let woken = self.inner.scheduler.close();
        self.inner.wake_room(py, woken);
    }

    /// Fails every queued call with `ProcessorClosedError`.
    fn fail_remaining(&self, py: Python<'_>) {
        let (remaining, woken) = self.inner.scheduler.take_remaining();
        self.inner.wake_room(py, woken);
        let mut settlement = Settlement::default();
        settlement.fail_all(py, &remaining, || Failure::Closed);
        settlement.flush_and_wake(py);
    }

    /// Items queued on this queue.
    fn __len__(&self) -> usize {
        self.inner.scheduler.len()
    }

    /// Statistics of every queue sharing this one's, under this queue's settings.
    fn stats(&self) -> BatchStats {
        let totals = self.inner.scheduler.totals();
        BatchStats::snapshot(&totals.stats(), totals.queued(), self.settings().clone())
    }

    /// As `Processor.histograms`, across every queue sharing this one's statistics.
    fn histograms<'py>(
        &self,
        py: Python<'py>,
        time_bounds: Vec<f64>,
        size_bounds: Vec<u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.inner.scheduler.totals().stats();
        histograms_dict(py, &stats, time_bounds, size_bounds)
    }
}
