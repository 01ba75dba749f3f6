//! One Python call in flight: its inputs, its outcome and how its caller is woken.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::errors::failure_to_err;
use super::gil::release_gil;
use super::interrupt::{timeout_error, Interruptible, Stop};
use super::wake_relay::{PassOnLeave, Rhythm};
use crate::call::{Call, Delivery, Failure};
use crate::pending::{Cancellable, Submission};
use crate::relay::{self, Relay, Wake};
use crate::stats::Unserved;

pub(crate) enum Inputs {
    One(Py<PyAny>),
    Many(Py<PyList>),
    /// An opaque payload holding several rows (a dict of batched features, say): batches see it
    /// as segments, and each batch hands back one value per segment.
    Rows(Py<PyAny>),
}

/// How the caller learns that its call ended.
pub(crate) enum Waiter {
    /// A thread blocked in [`PyCall::wait`], woken by the outcome's condition variable.
    Thread,
    /// An asyncio future, resolved on its own event loop.
    Future {
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
    },
}

pub(crate) struct PyCall {
    pub inputs: Inputs,
    /// How many items the call holds.
    pub len: usize,
    pub outcome: Call<Py<PyAny>, Py<PyAny>>,
    pub waiter: Waiter,
    /// For a blocked thread: the caller it wakes once served (see [`crate::relay`]).
    pub(super) relay: Relay<CallRef>,
    /// Woken by the keeper: its chain stalled, so it hands on at once when served.
    pub(super) woken_late: AtomicBool,
}

pub(crate) type CallRef = Arc<PyCall>;

/// The call `arg` makes and what the core queues for it (all its items, arriving now); `None`
/// for an empty list, which has nothing to wait for.
///
/// A list means many items; anything else is one item; with `rows`, `arg` is an opaque payload
/// of that many rows. A list is copied so that a caller mutating it later cannot change what
/// the batch sees.
pub(crate) fn new_call(
    arg: &Bound<'_, PyAny>,
    rows: Option<usize>,
    lengths: Option<Vec<usize>>,
    priority: i32,
    waiter: Waiter,
) -> PyResult<Option<(CallRef, Submission<CallRef>)>> {
    let (inputs, len) = match (rows, arg.cast::<PyList>()) {
        (Some(rows), _) => (Inputs::Rows(arg.clone().unbind()), rows),
        (None, Ok(list)) => {
            let copy = list.get_slice(0, list.len());
            let len = copy.len();
            (Inputs::Many(copy.unbind()), len)
        }
        (None, Err(_)) => (Inputs::One(arg.clone().unbind()), 1),
    };
    if let Some(given) = lengths.as_ref().map(Vec::len).filter(|&given| given != len) {
        return Err(PyValueError::new_err(format!(
            "got {given} lengths for a call of {len} items; give one length per item"
        )));
    }
    if len == 0 {
        return Ok(None);
    }
    let call = PyCall::new(inputs, len, waiter);
    let submission = Submission {
        call: Arc::clone(&call),
        count: len,
        priority,
        arrival: Instant::now(),
        lengths,
    };
    Ok(Some((call, submission)))
}

impl Cancellable for CallRef {
    fn is_cancelled(&self) -> bool {
        self.outcome.is_abandoned()
    }
}

impl PyCall {
    pub fn new(inputs: Inputs, len: usize, waiter: Waiter) -> CallRef {
        Arc::new(Self {
            inputs,
            len,
            outcome: Call::new(len),
            waiter,
            relay: Relay::default(),
            woken_late: AtomicBool::new(false),
        })
    }

    /// Wakes blocked callers whose outcomes are in: the first now, each of the others once its
    /// predecessor has been served.
    pub fn wake_in_turn(calls: &[CallRef]) {
        for call in relay::chain(calls, |call| &call.relay) {
            call.wake();
        }
    }

    pub fn item<'py>(&self, py: Python<'py>, index: usize) -> PyResult<Bound<'py, PyAny>> {
        match &self.inputs {
            Inputs::One(item) => Ok(item.bind(py).clone()),
            Inputs::Many(items) => items.bind(py).get_item(index),
            Inputs::Rows(_) => Err(PyTypeError::new_err(
                "a batch of row payloads has no single items; use Batch.segments()",
            )),
        }
    }

    /// The object a batch slices for this call: the item, the list, or the row payload.
    pub fn payload<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match &self.inputs {
            Inputs::One(item) | Inputs::Rows(item) => item.bind(py).clone(),
            Inputs::Many(items) => items.bind(py).clone().into_any(),
        }
    }

    /// The value a caller receives: the lone result, the list for a list call, or the list of
    /// per-segment values for a row payload.
    pub fn result_value(&self, py: Python<'_>, mut results: Vec<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        match self.inputs {
            Inputs::One(_) => Ok(results.pop().expect("a single call has one result")),
            Inputs::Many(_) | Inputs::Rows(_) => Ok(PyList::new(py, results)?.into_any().unbind()),
        }
    }

    /// Takes the outcome of an ended call as a Python value or exception.
    pub fn take_outcome(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.outcome.take() {
            Some(Ok(results)) => self.result_value(py, results),
            Some(Err(failure)) => Err(failure_to_err(py, failure)),
            None => Err(failure_to_err(
                py,
                Failure::Internal("outcome taken twice".into()),
            )),
        }
    }

    /// Blocks with the GIL released until the call ends or `deadline` passes (raising
    /// `TimeoutError` for a `timeout` of that many seconds). A caller that gives up withdraws
    /// the call and tells `unserved` why.
    pub fn wait(
        &self,
        py: Python<'_>,
        deadline: Option<Instant>,
        timeout: Option<f64>,
        unserved: &dyn Fn(Unserved, usize),
    ) -> PyResult<Py<PyAny>> {
        // Served or not (a panic included), this caller leaves: the next one in its chain must
        // not wait on it.
        let _leaving = PassOnLeave::new(self, Rhythm::came_straight_back());
        self.wait_unrelayed(py, deadline, timeout, unserved)
    }

    fn wait_unrelayed(
        &self,
        py: Python<'_>,
        deadline: Option<Instant>,
        timeout: Option<f64>,
        unserved: &dyn Fn(Unserved, usize),
    ) -> PyResult<Py<PyAny>> {
        let mut wait = Interruptible::new(deadline);
        loop {
            if release_gil(py, || self.outcome.wait(wait.slice_end())) {
                return self.take_outcome(py);
            }
            match wait.check(py) {
                Ok(()) => continue,
                Err(Stop::Interrupted(interrupt)) => {
                    if self.outcome.fail(Failure::Abandoned) == Delivery::Completed {
                        unserved(Unserved::Cancelled, self.len);
                    }
                    return Err(interrupt);
                }
                Err(Stop::DeadlinePassed) => {
                    return match self.outcome.fail(Failure::Abandoned) {
                        // It ended just now, between the wait and the check: hand out its outcome.
                        Delivery::Ignored => self.take_outcome(py),
                        _ => {
                            unserved(Unserved::TimedOut, self.len);
                            Err(timeout_error(timeout.unwrap_or_default()))
                        }
                    };
                }
            }
        }
    }
}
