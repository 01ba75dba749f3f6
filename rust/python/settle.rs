//! Handing outcomes to asyncio futures: one `deliver` call per event loop per batch, which then
//! makes a single `call_soon_threadsafe` onto that loop.

use pyo3::prelude::*;
use pyo3::types::PyList;

use super::call::{PyCall, Waiter};
use crate::call::Delivery;

struct LoopGroup {
    event_loop: Py<PyAny>,
    futures: Vec<Py<PyAny>>,
    values: Vec<Py<PyAny>>,
    failed_futures: Vec<Py<PyAny>>,
    errors: Vec<Py<PyAny>>,
}

/// Outcomes of calls that ended in one batch, grouped by the event loop waiting for them.
#[derive(Default)]
pub(crate) struct Settlement {
    groups: Vec<LoopGroup>,
}

impl Settlement {
    /// Notes that `call` just ended (`delivery` says whether it did). Thread waiters were already
    /// woken by the outcome itself; futures are collected for [`Settlement::flush`].
    pub fn ended(&mut self, py: Python<'_>, call: &PyCall, delivery: Delivery) {
        if delivery != Delivery::Completed {
            return;
        }
        let Waiter::Future { event_loop, future } = &call.waiter else {
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
    /// failed_futures, errors)` hook.
    pub fn flush(self, py: Python<'_>, deliver: &Py<PyAny>) {
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
    }
}
