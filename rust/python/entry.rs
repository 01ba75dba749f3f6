//! The callable face of a thread-flavour processor: `f(item)` enters the core straight from
//! the interpreter's call slot, with no Python frame of ours on the way. Every blocked caller
//! holds the GIL on the critical path between its wake-up and its next call, so a frame there
//! costs every caller behind it too.

use std::sync::{Mutex, PoisonError, RwLock};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use super::errors::closed_error;
use super::processor::Processor;

/// Base class of every processor: for a method's processor, the instance it was last fetched
/// from, kept alive until a call takes it (see `_pin`).
#[pyclass(subclass, frozen, module = "batched._core")]
pub struct Pinned {
    pinned: Mutex<Option<Py<PyAny>>>,
}

/// Base class of `batched.BatchProcessor`: its `__call__`. The Python subclass binds the queue
/// (again after a fork) with `_bind_core`.
#[pyclass(subclass, frozen, extends = Pinned, module = "batched._core")]
pub struct CallEntry {
    binding: RwLock<Option<Binding>>,
}

struct Binding {
    core: Py<Processor>,
    /// Each item's lengths for length-aware packing, when an option needs them.
    lengths_of: Option<Py<PyAny>>,
}

#[pymethods]
impl Pinned {
    /// Takes (and ignores) the subclass's constructor arguments.
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        Self {
            pinned: Mutex::new(None),
        }
    }

    /// Keeps `owner` alive until the next call takes it (`_take_pin`): a method fetched from a
    /// temporary instance, as in `Model().embed(x)`, must not lose its instance before the
    /// call reaches the worker, which sees the instance only through a weak reference.
    fn _pin(&self, owner: Py<PyAny>) {
        *self.pinned.lock().unwrap_or_else(PoisonError::into_inner) = Some(owner);
    }

    // The pinned instance usually holds this processor (in its `__dict__`): the collector must
    // see that cycle to free it when the instance is fetched from and then dropped uncalled.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(pinned) = self.pinned.try_lock() {
            if let Some(owner) = pinned.as_ref() {
                visit.call(owner)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        self._take_pin();
    }

    /// The instance last pinned, if no call took it yet; the caller keeps it for its call.
    fn _take_pin(&self) -> Option<Py<PyAny>> {
        self.pinned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

#[pymethods]
impl CallEntry {
    /// Takes (and ignores) the subclass's constructor arguments.
    #[new]
    #[pyo3(signature = (*args, **kwargs))]
    fn new(
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyClassInitializer<Self> {
        PyClassInitializer::from(Pinned::new(args, kwargs)).add_subclass(Self {
            binding: RwLock::new(None),
        })
    }

    /// Sends later calls to `core`; `lengths_of(item)` gives the lengths of the call's items
    /// (a list of ints) when length-aware packing needs them.
    fn _bind_core(&self, core: Py<Processor>, lengths_of: Option<Py<PyAny>>) {
        *self.binding.write().unwrap_or_else(PoisonError::into_inner) =
            Some(Binding { core, lengths_of });
    }

    /// Processes one item (or a list of items) and returns its result (or their list).
    #[pyo3(signature = (item, /, *, timeout = None, priority = 0))]
    fn __call__(
        slf: &Bound<'_, Self>,
        item: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        priority: i32,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        // Dropped when the call returns, with the instance's last reference if it was the last.
        let _owner = slf.as_super().get()._take_pin();
        // Held only with the GIL, for two increfs, never across the wait: a fork (made with the
        // GIL) cannot find it locked, and `_bind_core` never waits on a blocked caller.
        let (core, lengths_of) = {
            let binding = this.binding.read().unwrap_or_else(PoisonError::into_inner);
            let Some(binding) = binding.as_ref() else {
                return Err(closed_error());
            };
            let lengths_of = binding.lengths_of.as_ref().map(|f| f.clone_ref(py));
            (binding.core.clone_ref(py), lengths_of)
        };
        let lengths = match lengths_of {
            Some(lengths_of) => Some(lengths_of.call1(py, (item,))?.extract(py)?),
            None => None,
        };
        core.get().call(py, item, priority, timeout, None, lengths)
    }
}
