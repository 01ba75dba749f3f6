//! One Python call in flight: its inputs, its outcome and how its caller is woken.

use std::sync::{Arc, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyTimeoutError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::errors::failure_to_err;
use crate::call::{Call, Failure};
use crate::pending::Cancellable;

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
    pub outcome: Call<Py<PyAny>, Py<PyAny>>,
    pub waiter: Waiter,
}

pub(crate) type CallRef = Arc<PyCall>;

impl Cancellable for CallRef {
    fn is_cancelled(&self) -> bool {
        self.outcome.is_abandoned()
    }
}

impl PyCall {
    pub fn new(inputs: Inputs, len: usize, waiter: Waiter) -> CallRef {
        Arc::new(Self {
            inputs,
            outcome: Call::new(len),
            waiter,
        })
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

    /// Blocks with the GIL released until the call ends. On the main thread it wakes every
    /// `SIGNAL_CHECK` to let Ctrl-C through; elsewhere it sleeps until woken.
    pub fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        // A timeout too large to represent means no limit.
        let deadline = timeout
            .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
            .and_then(|limit| Instant::now().checked_add(limit));
        let on_main_thread = MAIN_THREAD.get() == Some(&std::thread::current().id());
        loop {
            let slice_end = match (on_main_thread, deadline) {
                (false, deadline) => deadline,
                (true, None) => Some(Instant::now() + SIGNAL_CHECK),
                (true, Some(deadline)) => Some(deadline.min(Instant::now() + SIGNAL_CHECK)),
            };
            if py.detach(|| self.outcome.wait(slice_end)) {
                return self.take_outcome(py);
            }
            if let Err(interrupt) = py.check_signals() {
                self.outcome.fail(Failure::Abandoned);
                return Err(interrupt);
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return match self.outcome.fail(Failure::Abandoned) {
                    // It ended just now, between the wait and the check: hand out its outcome.
                    crate::call::Delivery::Ignored => self.take_outcome(py),
                    _ => Err(timeout_error(timeout.unwrap_or_default())),
                };
            }
        }
    }
}

pub(crate) fn timeout_error(seconds: f64) -> PyErr {
    PyTimeoutError::new_err(format!(
        "the call did not complete within its timeout of {seconds} s"
    ))
}

const SIGNAL_CHECK: Duration = Duration::from_millis(100);

static MAIN_THREAD: OnceLock<ThreadId> = OnceLock::new();

/// Records the interpreter's main thread, the only one that receives signals, if the module is
/// being imported there (the usual case; elsewhere waits simply never check for Ctrl-C).
pub(crate) fn remember_main_thread(py: Python<'_>) -> PyResult<()> {
    let threading = py.import("threading")?;
    let current = threading.call_method0("current_thread")?;
    let main = threading.call_method0("main_thread")?;
    if current.is(&main) {
        let _ = MAIN_THREAD.set(std::thread::current().id());
    }
    Ok(())
}
