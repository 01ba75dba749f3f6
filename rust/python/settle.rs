//! Handing outcomes to asyncio futures: one `deliver` call per event loop per batch, which then
//! makes a single `call_soon_threadsafe` onto that loop.

use pyo3::prelude::*;
use pyo3::types::PyList;

use super::call::{CallRef, Waiter};
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

    /// Sends each loop its outcomes through the Python `deliver(loop, futures, values,
    /// failed_futures, errors)` hook, and returns the blocked threads still to be woken.
    #[must_use = "the returned threads wait until woken"]
    pub fn flush(self, py: Python<'_>, deliver: &Py<PyAny>) -> Vec<CallRef> {
        for group in self.groups {
            let sent = (|| {
                deliver.call1(
                    py,
                    (
                        group.event_loop,
                        PyList::new(py, group.futures)?,
                        PyList::new(py, group.values)?,
                        PyList::new(py, group.failed_futures)?,
                        PyList::new(py, group.errors)?,
                    ),
                )
            })();
            if let Err(error) = sent {
                // The hook itself broke; nothing better to do than report it like `__del__` does.
                error.write_unraisable(py, None);
            }
        }
        self.threads
    }

    /// Like [`Settlement::flush`], waking the threads at once.
    pub fn flush_and_wake(self, py: Python<'_>, deliver: &Py<PyAny>) {
        for call in self.flush(py, deliver) {
            call.outcome.wake();
        }
    }
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
