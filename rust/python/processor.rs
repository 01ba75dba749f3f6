//! The processor: accepts calls from any thread or event loop and hands batches to the Python
//! worker that runs the user function.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::batch::{Batch, BatchOwner};
use super::call::{timeout_error, CallRef, Inputs, PyCall, Waiter};
use super::errors::closed_error;
use super::settle::Settlement;
use crate::call::Failure;
use crate::pending::Submission;
use crate::policy::BatchPolicy;
use crate::scheduler::{Rejected, Scheduler};
use crate::stats::Stats;

struct Shared {
    scheduler: Scheduler<CallRef>,
    deliver: Py<PyAny>,
    /// Blocked callers whose results are in, woken once the worker has released the GIL: woken
    /// earlier, each would find the GIL taken and sleep a second time.
    wake_later: Mutex<Vec<CallRef>>,
}

impl BatchOwner for Shared {
    fn record_batch(&self, items: usize, elapsed: Duration) {
        self.scheduler.record_batch(items, elapsed);
    }

    fn record_padding(&self, real: u64, padded: u64) {
        self.scheduler.record_padding(real, padded);
    }

    fn deliver(&self) -> &Py<PyAny> {
        &self.deliver
    }

    fn wake(&self, calls: Vec<CallRef>) {
        self.wake_later
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(calls);
    }
}

impl Shared {
    fn wake_waiting(&self) {
        let calls = std::mem::take(
            &mut *self
                .wake_later
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for call in calls {
            call.outcome.wake();
        }
    }
}

/// Validates the batching options at decoration time, raising `ValueError` with what is wrong.
#[pyfunction]
#[pyo3(signature = (batch_size, timeout_ms, small_batch_threshold, max_batch_tokens = None, sort_by_length = false))]
pub(crate) fn validate_policy(
    batch_size: i64,
    timeout_ms: f64,
    small_batch_threshold: i64,
    max_batch_tokens: Option<i64>,
    sort_by_length: bool,
) -> PyResult<()> {
    policy_from(
        batch_size,
        timeout_ms,
        small_batch_threshold,
        max_batch_tokens,
        sort_by_length,
    )
    .map(drop)
}

pub(crate) fn policy_from(
    batch_size: i64,
    timeout_ms: f64,
    small_batch_threshold: i64,
    max_batch_tokens: Option<i64>,
    sort_by_length: bool,
) -> PyResult<BatchPolicy> {
    let small = usize::try_from(small_batch_threshold).map_err(|_| {
        PyValueError::new_err(format!(
            "small_batch_threshold must be an integer of at least 0, got {small_batch_threshold}"
        ))
    })?;
    BatchPolicy::new(batch_size, timeout_ms, small)
        .and_then(|policy| policy.with_packing(max_batch_tokens, sort_by_length))
        .map_err(|error| PyValueError::new_err(error.to_string()))
}

#[pyclass(frozen, module = "batched._core")]
pub struct Processor {
    shared: Arc<Shared>,
}

/// A call waiting on an asyncio future; lets the awaiting task withdraw it.
#[pyclass(frozen, module = "batched._core")]
pub struct Ticket {
    pub(crate) call: CallRef,
}

#[pymethods]
impl Ticket {
    /// Withdraws the call: items not yet dispatched never reach the user function, and results
    /// of items already running are dropped.
    fn cancel(&self) {
        self.call.outcome.fail(Failure::Abandoned);
    }
}

/// What one call submits: its inputs, how many items they hold and, optionally, their lengths.
pub(crate) struct CallSpec {
    pub inputs: Inputs,
    pub len: usize,
    pub lengths: Option<Vec<usize>>,
}

/// A list means many items; anything else is one item; with `rows`, `arg` is an opaque payload
/// of that many rows. A list is copied so that a caller mutating it later cannot change what
/// the batch sees.
pub(crate) fn call_spec(
    arg: &Bound<'_, PyAny>,
    rows: Option<usize>,
    lengths: Option<Vec<usize>>,
) -> PyResult<CallSpec> {
    let (inputs, len) = match (rows, arg.cast::<PyList>()) {
        (Some(rows), _) => (Inputs::Rows(arg.clone().unbind()), rows),
        (None, Ok(list)) => {
            let copy = list.get_slice(0, list.len());
            let len = copy.len();
            (Inputs::Many(copy.unbind()), len)
        }
        (None, Err(_)) => (Inputs::One(arg.clone().unbind()), 1),
    };
    if let Some(lengths) = &lengths {
        if lengths.len() != len {
            return Err(PyValueError::new_err(format!(
                "got {} lengths for a call of {len} items; give one length per item",
                lengths.len()
            )));
        }
    }
    Ok(CallSpec {
        inputs,
        len,
        lengths,
    })
}

/// The exception for a refused submission.
pub(crate) fn rejected_error<C>(rejected: Rejected<C>) -> PyErr {
    match rejected {
        Rejected::Closed(_) => closed_error(),
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

impl Processor {
    fn submit_call(
        &self,
        call: &CallRef,
        len: usize,
        lengths: Option<Vec<usize>>,
        priority: i32,
    ) -> PyResult<()> {
        let submission = Submission {
            call: Arc::clone(call),
            count: len,
            priority,
            arrival: Instant::now(),
            lengths,
        };
        self.shared
            .scheduler
            .submit(submission)
            .map_err(rejected_error)
    }
}

#[pymethods]
impl Processor {
    #[new]
    #[pyo3(signature = (batch_size, timeout_ms, small_batch_threshold, deliver, max_batch_tokens = None, sort_by_length = false))]
    fn new(
        batch_size: i64,
        timeout_ms: f64,
        small_batch_threshold: i64,
        deliver: Py<PyAny>,
        max_batch_tokens: Option<i64>,
        sort_by_length: bool,
    ) -> PyResult<Self> {
        let policy = policy_from(
            batch_size,
            timeout_ms,
            small_batch_threshold,
            max_batch_tokens,
            sort_by_length,
        )?;
        Ok(Self {
            shared: Arc::new(Shared {
                scheduler: Scheduler::new(policy),
                deliver,
                wake_later: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Submits `arg` (one item, a list of items, or with `rows` a payload of that many rows)
    /// and blocks, with the GIL released, until its results are in. Raises `TimeoutError` after
    /// `timeout` seconds. `lengths` gives each item's length for length-aware packing.
    #[pyo3(signature = (arg, priority = 0, timeout = None, rows = None, lengths = None))]
    fn call(
        &self,
        py: Python<'_>,
        arg: &Bound<'_, PyAny>,
        priority: i32,
        timeout: Option<f64>,
        rows: Option<usize>,
        lengths: Option<Vec<usize>>,
    ) -> PyResult<Py<PyAny>> {
        let CallSpec {
            inputs,
            len,
            lengths,
        } = call_spec(arg, rows, lengths)?;
        if len == 0 {
            return Ok(PyList::empty(py).into_any().unbind());
        }
        if let Some(seconds) = timeout.filter(|seconds| seconds.is_nan() || *seconds <= 0.0) {
            // No time to wait at all (or NaN): fail before queueing anything, as asyncio does.
            return Err(timeout_error(seconds));
        }
        let call = PyCall::new(inputs, len, Waiter::Thread);
        self.submit_call(&call, len, lengths, priority)?;
        call.wait(py, timeout)
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
        let CallSpec {
            inputs,
            len,
            lengths,
        } = call_spec(arg, rows, lengths)?;
        if len == 0 {
            return Ok(None);
        }
        let call = PyCall::new(inputs, len, Waiter::Future { event_loop, future });
        self.submit_call(&call, len, lengths, priority)?;
        Ok(Some(Ticket { call }))
    }

    /// Blocks, with the GIL released, until a batch may leave; `None` once the processor is
    /// closed and has nothing left to run.
    fn next_batch(&self, py: Python<'_>) -> Option<Batch> {
        let shared: Arc<dyn BatchOwner> = self.shared.clone();
        let this = &self.shared;
        py.detach(|| {
            this.wake_waiting();
            this.scheduler.next_batch()
        })
        .map(|batch| Batch::new(batch, shared))
    }

    /// Stops accepting calls. With `drain`, queued items still run; otherwise the worker stops
    /// after its current batch and `fail_remaining` tells the queued callers.
    fn close(&self, drain: bool) {
        self.shared.scheduler.close(drain);
    }

    /// Fails every still-queued call with `ProcessorClosedError`; call after the worker stopped.
    fn fail_remaining(&self, py: Python<'_>) {
        self.shared.wake_waiting();
        let remaining = self.shared.scheduler.take_remaining();
        let mut settlement = Settlement::default();
        for entry in &remaining {
            settlement.ended(py, &entry.call, entry.call.outcome.fail(Failure::Closed));
        }
        settlement.flush_and_wake(py, &self.shared.deliver);
    }

    #[getter]
    fn closed(&self) -> bool {
        self.shared.scheduler.is_closed()
    }

    /// A snapshot of the running statistics as a dict of plain numbers (seconds for times).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(
            py,
            &self.shared.scheduler.stats(),
            self.shared.scheduler.queued(),
        )
    }
}

/// The statistics as the Python `BatchStats` fields, times in seconds.
pub(crate) fn stats_dict<'py>(
    py: Python<'py>,
    stats: &Stats,
    queued: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let seconds = |duration: Duration| duration.as_secs_f64();
    let dict = PyDict::new(py);
    dict.set_item("queue_size", queued)?;
    dict.set_item("total_processed", stats.total_items)?;
    dict.set_item("total_batches", stats.total_batches)?;
    dict.set_item("avg_batch_size", stats.mean_batch_size())?;
    dict.set_item("avg_processing_time", seconds(stats.mean_batch_time()))?;
    dict.set_item("queue_wait_p50", seconds(stats.queue_wait.quantile(0.5)))?;
    dict.set_item("queue_wait_p99", seconds(stats.queue_wait.quantile(0.99)))?;
    dict.set_item("batch_time_p50", seconds(stats.batch_time.quantile(0.5)))?;
    dict.set_item("batch_time_p99", seconds(stats.batch_time.quantile(0.99)))?;
    dict.set_item("full_batches", stats.full_batches)?;
    dict.set_item("deadline_batches", stats.deadline_batches)?;
    dict.set_item("drain_batches", stats.drain_batches)?;
    dict.set_item("padded_fraction", stats.padded_fraction())?;
    Ok(dict)
}
