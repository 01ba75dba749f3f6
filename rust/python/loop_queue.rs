//! The queue of one asyncio event loop. It applies the same assembly and dispatch rule as the
//! threaded scheduler, but never blocks: the loop asks for a batch when something changed, and
//! is told when to ask again, so an idle processor has no timer at all.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::batch::{Batch, BatchOwner};
use super::call::{CallRef, PyCall, Waiter};
use super::errors::closed_error;
use super::processor::{call_spec, policy_from, rejected_error, stats_dict, CallSpec, Ticket};
use super::settle::Settlement;
use crate::call::Failure;
use crate::pending::Submission;
use crate::policy::BatchPolicy;
use crate::scheduler::{check_lengths, Assembly, Poll};
use crate::stats::Stats;

/// Statistics shared by the queues of one processor across event loops.
#[derive(Default)]
struct Totals {
    stats: Mutex<Stats>,
    queued: AtomicUsize,
}

struct Inner {
    assembly: Mutex<Assembly<CallRef>>,
    policy: BatchPolicy,
    totals: Arc<Totals>,
    deliver: Py<PyAny>,
    closed: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BatchOwner for Inner {
    fn record_batch(&self, items: usize, elapsed: Duration) {
        lock(&self.totals.stats).record_batch(items, elapsed);
    }

    fn record_padding(&self, real: u64, padded: u64) {
        lock(&self.totals.stats).record_padding(real, padded);
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
    #[pyo3(signature = (batch_size, timeout_ms, small_batch_threshold, deliver, share_stats_with = None, max_batch_tokens = None, sort_by_length = false))]
    fn new(
        batch_size: i64,
        timeout_ms: f64,
        small_batch_threshold: i64,
        deliver: Py<PyAny>,
        share_stats_with: Option<&LoopQueue>,
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
        let totals = share_stats_with.map_or_else(Arc::default, |other| other.inner.totals.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                assembly: Mutex::new(Assembly::new(&policy)),
                policy,
                totals,
                deliver,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Queues `arg` (one item or a list) for a caller awaiting `future`. Returns the ticket (or
    /// `None` for an empty list) and whether the loop should ask for a batch now: true when this
    /// call started the deadline or filled a batch.
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
        let CallSpec {
            inputs,
            len,
            lengths,
        } = call_spec(arg, rows, lengths)?;
        if len == 0 {
            return Ok((None, false));
        }
        let call = PyCall::new(inputs, len, Waiter::Future { event_loop, future });
        let policy = &self.inner.policy;
        let submission = check_lengths(
            Submission {
                call: Arc::clone(&call),
                count: len,
                priority,
                arrival: Instant::now(),
                lengths,
            },
            policy,
        )
        .map_err(rejected_error)?;
        let mut assembly = lock(&self.inner.assembly);
        let before = assembly.len();
        assembly.push(submission);
        self.inner.totals.queued.fetch_add(len, Ordering::Relaxed);
        // As in the threaded scheduler: act when the deadline starts or a batch fills.
        let batch_size = policy.batch_size;
        let act = before == 0
            || (before < batch_size && before + len >= batch_size)
            || policy.packing.max_batch_tokens.is_some();
        Ok((Some(Ticket { call }), act))
    }

    /// A batch that may leave now, else `None` and the seconds until one may (or `None` when
    /// nothing is queued).
    fn poll(&self) -> (Option<Batch>, Option<f64>) {
        let (poll, removed) = {
            let mut assembly = lock(&self.inner.assembly);
            let mut stats = lock(&self.inner.totals.stats);
            assembly.poll(Instant::now(), &self.inner.policy, false, &mut stats)
        };
        self.inner
            .totals
            .queued
            .fetch_sub(removed, Ordering::Relaxed);
        match poll {
            Poll::Ready(batch) => {
                let owner: Arc<dyn BatchOwner> = self.inner.clone();
                (Some(Batch::new(batch, owner)), None)
            }
            Poll::WaitUntil(deadline) => (
                None,
                Some(
                    deadline
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64(),
                ),
            ),
            Poll::Idle => (None, None),
        }
    }

    /// Refuses further calls; queued ones stay until `fail_remaining` or `poll` takes them.
    fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }

    /// Fails every queued call with `ProcessorClosedError`.
    fn fail_remaining(&self, py: Python<'_>) {
        let remaining = lock(&self.inner.assembly).drain();
        self.inner
            .totals
            .queued
            .fetch_sub(remaining.len(), Ordering::Relaxed);
        let mut settlement = Settlement::default();
        for entry in &remaining {
            settlement.ended(py, &entry.call, entry.call.outcome.fail(Failure::Closed));
        }
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
}
