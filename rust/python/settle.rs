//! Handing outcomes to asyncio futures: on their loop's own thread at once, else with a single
//! `call_soon_threadsafe` per event loop per batch.

use std::sync::{Mutex, PoisonError};

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyList;

use super::in_flight::{CallRef, Waiter};
use crate::call::{Delivery, Failure};
use crate::pending::Entry;

struct LoopGroup {
    event_loop: Py<PyAny>,
    futures: Vec<Py<PyAny>>,
    values: Vec<Py<PyAny>>,
    failed_futures: Vec<Py<PyAny>>,
    errors: Vec<Py<PyAny>>,
}

/// Outcomes of calls that ended in one batch: futures grouped by the event loop waiting for
/// them, and the blocked threads to wake.
#[derive(Default)]
pub(crate) struct Settlement {
    groups: Vec<LoopGroup>,
    threads: Vec<CallRef>,
}

impl Settlement {
    /// Ends every call of `entries` that has not ended yet with `failure()`.
    pub fn fail_all(
        &mut self,
        py: Python<'_>,
        entries: &[Entry<CallRef>],
        failure: impl Fn() -> Failure<Py<PyAny>>,
    ) {
        for entry in entries {
            self.ended(py, &entry.call, entry.call.outcome.fail(failure()));
        }
    }

    /// Notes that `call` just ended (`delivery` says whether it did).
    pub fn ended(&mut self, py: Python<'_>, call: &CallRef, delivery: Delivery) {
        if delivery != Delivery::Completed {
            return;
        }
        let Waiter::Future { event_loop, future } = &call.waiter else {
            self.threads.push(CallRef::clone(call));
            return;
        };
        let group = match self
            .groups
            .iter()
            .position(|group| group.event_loop.is(event_loop))
        {
            Some(index) => &mut self.groups[index],
            None => {
                self.groups.push(LoopGroup {
                    event_loop: event_loop.clone_ref(py),
                    futures: Vec::new(),
                    values: Vec::new(),
                    failed_futures: Vec::new(),
                    errors: Vec::new(),
                });
                self.groups.last_mut().expect("just pushed")
            }
        };
        match call.take_outcome(py) {
            Ok(value) => {
                group.futures.push(future.clone_ref(py));
                group.values.push(value);
            }
            Err(error) => {
                group.failed_futures.push(future.clone_ref(py));
                group.errors.push(error.into_value(py).into_any());
            }
        }
    }

    /// Resolves the futures of the loop running on this thread here and now, and hands every
    /// other loop its outcomes with one `call_soon_threadsafe`. Returns the blocked threads
    /// still to be woken.
    #[must_use = "the returned threads wait until woken"]
    pub fn flush(self, py: Python<'_>) -> Vec<CallRef> {
        let running = if self.groups.is_empty() {
            None
        } else {
            running_loop(py)
        };
        for group in self.groups {
            if running
                .as_ref()
                .is_some_and(|running| running.is(&group.event_loop))
            {
                group.settle_here(py);
                continue;
            }
            group.send(py);
        }
        self.threads
    }

    /// Like [`Settlement::flush`], waking the threads at once.
    pub fn flush_and_wake(self, py: Python<'_>) {
        for call in self.flush(py) {
            call.outcome.wake();
        }
    }
}

/// A loop group's outcomes on their way to their loop, which calls this once.
#[pyclass(frozen, module = "batched._core")]
struct LoopOutcomes(Mutex<Option<LoopGroup>>);

#[pymethods]
impl LoopOutcomes {
    fn __call__(&self, py: Python<'_>) {
        let group = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(group) = group {
            group.settle_here(py);
        }
    }
}

impl LoopGroup {
    /// Schedules the settling of these outcomes on their loop, from another thread.
    fn send(self, py: Python<'_>) {
        let event_loop = self.event_loop.clone_ref(py);
        let sent = Py::new(py, LoopOutcomes(Mutex::new(Some(self)))).and_then(|outcomes| {
            event_loop.call_method1(py, intern!(py, "call_soon_threadsafe"), (outcomes,))
        });
        match sent {
            // A closed loop refuses: its tasks are gone and nobody awaits these futures.
            Err(error) if error.is_instance_of::<PyRuntimeError>(py) => {}
            Err(error) => error.write_unraisable(py, None),
            Ok(_) => {}
        }
    }

    /// Resolves the futures on their own loop's thread, without a hop through the loop: the
    /// awaiting tasks are scheduled at once, as `set_result` always does.
    fn settle_here(self, py: Python<'_>) {
        let set_result = intern!(py, "set_result");
        let set_exception = intern!(py, "set_exception");
        let settled = self
            .futures
            .into_iter()
            .zip(self.values)
            .map(|(future, value)| (future, set_result, value))
            .chain(
                self.failed_futures
                    .into_iter()
                    .zip(self.errors)
                    .map(|(future, error)| (future, set_exception, error)),
            );
        for (future, method, value) in settled {
            if let Err(error) = future.call_method1(py, method, (value,)) {
                // A task cancelled since its batch left has a cancelled future: skip it quietly.
                let done = future
                    .call_method0(py, intern!(py, "done"))
                    .and_then(|done| done.is_truthy(py));
                if !matches!(done, Ok(true)) {
                    error.write_unraisable(py, None);
                }
            }
        }
    }
}

/// The event loop running on this thread, if any. `asyncio.events._get_running_loop` answers
/// `None` where the public `get_running_loop` would raise, which would cost an exception per
/// batch on a worker thread. It is asyncio's own low-level helper for event loops, in C since
/// 3.7; checked here on 3.11.
fn running_loop(py: Python<'_>) -> Option<Bound<'_, PyAny>> {
    static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let get = GET_RUNNING_LOOP
        .get_or_try_init(py, || {
            py.import("asyncio.events")?
                .getattr("_get_running_loop")
                .map(Bound::unbind)
        })
        .ok()?;
    get.call0(py)
        .ok()
        .map(|running| running.into_bound(py))
        .filter(|running| !running.is_none())
}

/// An event-loop task waiting for room in a bounded queue: its future resolves (to `None`) when
/// room may have freed up, and the task tries again.
pub(crate) struct RoomWaiter {
    pub event_loop: Py<PyAny>,
    pub future: Py<PyAny>,
}

/// Resolves the futures of `waiters` through the `deliver` hook, each on its own loop.
pub(crate) fn wake_room_waiters(py: Python<'_>, deliver: &Py<PyAny>, waiters: Vec<RoomWaiter>) {
    for waiter in waiters {
        let sent = (|| {
            deliver.call1(
                py,
                (
                    waiter.event_loop,
                    PyList::new(py, [waiter.future])?,
                    PyList::new(py, [py.None()])?,
                    PyList::empty(py),
                    PyList::empty(py),
                ),
            )
        })();
        if let Err(error) = sent {
            error.write_unraisable(py, None);
        }
    }
}
