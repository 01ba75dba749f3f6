//! A dispatched batch as the Python worker sees it: the items to pass to the user function, and
//! the two ways to settle it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyFrozenSet, PyList, PyMapping, PySet, PyString, PyTuple};

use super::gil::release_gil;
use super::in_flight::CallRef;
use super::settle::Settlement;
use crate::call::Failure;
use crate::pending::Entry;
use crate::scheduler::Batch as CoreBatch;
use crate::stats::Unserved;

/// What a batch reports back to: the processor or event-loop queue it came from.
pub(crate) trait BatchOwner: Send + Sync {
    /// Counts a settled batch of `items` padded to `padded` positions (items times the longest
    /// length); only a `succeeded` one teaches the scheduler its cost.
    fn record_batch(
        &self,
        items: usize,
        padded: usize,
        elapsed: std::time::Duration,
        succeeded: bool,
    );
    fn record_padding(&self, real: u64, padded: u64);
    fn record_unserved(&self, why: Unserved, items: usize);
    /// Wakes blocked callers whose results are in, now or at a better moment.
    fn wake(&self, calls: Vec<CallRef>);
    /// Wakes the callers that [`BatchOwner::wake`] deferred, if any.
    fn wake_served(&self) {}
    /// Whether [`BatchOwner::wake`] deferred any callers.
    fn has_served(&self) -> bool {
        false
    }
}

#[pyclass(frozen, module = "batched._core")]
pub struct Batch {
    // `None` once settled; a batch is settled exactly once.
    entries: Mutex<Option<Vec<Entry<CallRef>>>>,
    len: usize,
    dispatched: std::time::Instant,
    owner: Arc<dyn BatchOwner>,
}

impl Batch {
    pub(crate) fn new(batch: CoreBatch<CallRef>, owner: Arc<dyn BatchOwner>) -> Self {
        Self {
            len: batch.entries.len(),
            entries: Mutex::new(Some(batch.entries)),
            dispatched: batch.dispatched,
            owner,
        }
    }

    fn take_entries(&self) -> Option<Vec<Entry<CallRef>>> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn finish(&self, py: Python<'_>, entries: &[Entry<CallRef>], outcome: Outcome) {
        let failed = matches!(outcome, Outcome::Failed(_));
        let longest = entries.iter().map(|entry| entry.length).max().unwrap_or(0);
        self.owner.record_batch(
            entries.len(),
            entries.len() * longest,
            self.dispatched.elapsed(),
            !failed,
        );
        if failed {
            self.owner.record_unserved(Unserved::Failed, entries.len());
        }
        let mut settlement = Settlement::default();
        let scattered = catch_unwind(AssertUnwindSafe(|| match outcome {
            Outcome::Rows(rows) => scatter(py, entries, rows, &mut settlement),
            Outcome::Spans(spans) => scatter_spans(py, entries, spans, &mut settlement),
            Outcome::Failed(error) => fail_all(py, entries, &error, &mut settlement),
        }));
        if scattered.is_err() {
            settlement.fail_all(py, entries, || {
                Failure::Internal("a panic while delivering results".into())
            });
        }
        let threads = settlement.flush(py);
        self.owner.wake(threads);
    }
}

enum Outcome {
    Rows(Vec<Py<PyAny>>),
    Spans(Vec<Py<PyAny>>),
    Failed(Py<PyAny>),
}

/// Runs of consecutive entries from one call, as `(start, end)` positions in the batch.
fn runs(entries: &[Entry<CallRef>]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        let call = &entries[start].call;
        let mut end = start + 1;
        while end < entries.len()
            && Arc::ptr_eq(&entries[end].call, call)
            && entries[end].index == entries[end - 1].index + 1
        {
            end += 1;
        }
        runs.push((start, end));
        start = end;
    }
    runs
}

/// Hands each caller its rows; consecutive entries of one call are delivered together.
fn scatter(
    py: Python<'_>,
    entries: &[Entry<CallRef>],
    rows: Vec<Py<PyAny>>,
    settlement: &mut Settlement,
) {
    let mut rows = rows.into_iter();
    for (start, end) in runs(entries) {
        let call = &entries[start].call;
        let mut run = rows.by_ref().take(end - start);
        let delivery = call.outcome.deliver(entries[start].index, &mut run);
        // A call that already ended ignores its rows: they must still be consumed so that the
        // next call gets its own.
        run.for_each(drop);
        settlement.ended(py, call, delivery);
    }
}

/// Hands each segment (see `Batch.segments`) its one value.
fn scatter_spans(
    py: Python<'_>,
    entries: &[Entry<CallRef>],
    spans: Vec<Py<PyAny>>,
    settlement: &mut Settlement,
) {
    for ((start, end), value) in runs(entries).into_iter().zip(spans) {
        let call = &entries[start].call;
        let delivery = call
            .outcome
            .deliver_span(entries[start].index, end - start, value);
        settlement.ended(py, call, delivery);
    }
}

/// Gives every call in the batch the same exception.
pub(crate) fn fail_all(
    py: Python<'_>,
    entries: &[Entry<CallRef>],
    error: &Py<PyAny>,
    settlement: &mut Settlement,
) {
    for entry in entries {
        let delivery = entry.call.outcome.fail(Failure::User(error.clone_ref(py)));
        settlement.ended(py, &entry.call, delivery);
    }
}

/// Splits the user function's output into one row per item, or says why it cannot. An output
/// that is not a sequence (a mapping, a set, a generator, a string...) is a `TypeError`; one of
/// the wrong length a `ValueError`. Whatever its own `__len__` or `__getitem__` raise reaches
/// the callers unchanged.
fn rows_of(output: &Bound<'_, PyAny>, expected: usize) -> PyResult<Vec<Py<PyAny>>> {
    let rows: Vec<Py<PyAny>> = if let Ok(list) = output.cast::<PyList>() {
        list.iter().map(Bound::unbind).collect()
    } else if let Ok(tuple) = output.cast::<PyTuple>() {
        tuple.iter().map(Bound::unbind).collect()
    } else {
        check_sequence(output, expected)?;
        let len = output.len()?;
        if len != expected {
            return Err(length_error(len, expected));
        }
        output
            .try_iter()?
            .map(|row| row.map(Bound::unbind))
            .collect::<PyResult<_>>()?
    };
    if rows.len() != expected {
        return Err(length_error(rows.len(), expected));
    }
    Ok(rows)
}

/// Refuses an output whose rows have no order or are not results: strings and bytes, mappings
/// (iterating one gives its keys), sets, and anything without both `__len__` and
/// `__getitem__` (generators, iterators, numbers, `None`).
fn check_sequence(output: &Bound<'_, PyAny>, expected: usize) -> PyResult<()> {
    let kind = output.get_type();
    let why = if output.is_instance_of::<PyString>()
        || output.is_instance_of::<PyBytes>()
        || output.is_instance_of::<PyByteArray>()
    {
        "a string of characters or bytes, not of results"
    } else if output.cast::<PyMapping>().is_ok() {
        "a mapping, whose iteration gives its keys"
    } else if output.is_instance_of::<PySet>() || output.is_instance_of::<PyFrozenSet>() {
        "a set, which has no order"
    } else if !kind.hasattr("__len__")? || !kind.hasattr("__getitem__")? {
        "not a sequence"
    } else {
        return Ok(());
    };
    Err(PyTypeError::new_err(format!(
        "the batch function returned a {} ({why}); it must return a list (or another sequence, or an array) of {expected} results, one per item, in order",
        kind.name()?
    )))
}

fn length_error(got: usize, expected: usize) -> PyErr {
    PyValueError::new_err(format!(
        "the batch function returned {got} results for a batch of {expected} items; it must return exactly one result per item, in order"
    ))
}

#[pymethods]
impl Batch {
    /// Wakes the callers of earlier batches whose results are in and who still sleep; call
    /// once this batch's arguments are ready, just before the user function runs.
    fn wake_served(&self, py: Python<'_>) {
        // Only for blocked callers: with none to wake (asyncio callers are woken through their
        // loop), letting the GIL go would hand it to the loop for a whole switch interval.
        if self.owner.has_served() {
            release_gil(py, || self.owner.wake_served());
        }
    }

    fn __len__(&self) -> usize {
        self.len
    }

    /// The items of this batch, in service order, as a new list.
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let guard = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entries = guard.as_deref().unwrap_or_default();
        let items = entries
            .iter()
            .map(|entry| entry.call.item(py, entry.index))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// Settles the batch with the user function's output: one row per item, in order. An
    /// output that is not a sequence fails every caller with a `TypeError`, one of the wrong
    /// length with a `ValueError`.
    fn complete(&self, py: Python<'_>, output: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(entries) = self.take_entries() else {
            return Ok(());
        };
        let outcome = match rows_of(output, entries.len()) {
            Ok(rows) => Outcome::Rows(rows),
            Err(error) => Outcome::Failed(error.into_value(py).into_any()),
        };
        self.finish(py, &entries, outcome);
        Ok(())
    }

    /// The batch as runs of consecutive items of one call: `(payload, start, stop)` tuples, where
    /// `payload` is the call's item, list or row payload and `start:stop` its rows here.
    fn segments<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let guard = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entries = guard.as_deref().unwrap_or_default();
        let segments = runs(entries)
            .into_iter()
            .map(|(start, end)| {
                let first = &entries[start];
                let stop = first.index + (end - start);
                (first.call.payload(py), first.index, stop)
            })
            .collect::<Vec<_>>();
        PyList::new(py, segments)
    }

    /// The length of each item, as given when it was submitted (1 when none was).
    fn lengths(&self) -> Vec<usize> {
        let guard = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        guard
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|entry| entry.length)
            .collect()
    }

    /// Settles the batch with one value per segment, in the order of `segments()`.
    fn complete_segments(&self, py: Python<'_>, values: Vec<Py<PyAny>>) -> PyResult<()> {
        let Some(entries) = self.take_entries() else {
            return Ok(());
        };
        let expected = runs(&entries).len();
        let outcome = if values.len() == expected {
            Outcome::Spans(values)
        } else {
            let error = PyValueError::new_err(format!(
                "got {} segment results for a batch of {expected} segments",
                values.len()
            ));
            Outcome::Failed(error.into_value(py).into_any())
        };
        self.finish(py, &entries, outcome);
        Ok(())
    }

    /// Splits the batch in two at position `at` (0 < `at` < len): the first `at` items and the
    /// rest, each to be settled on its own. Used to find the items a failing batch fails on.
    fn split(&self, at: usize) -> PyResult<(Batch, Batch)> {
        if at == 0 || at >= self.len {
            return Err(PyValueError::new_err(format!(
                "cannot split a batch of {} items at {at}; split strictly inside it",
                self.len
            )));
        }
        let Some(mut first) = self.take_entries() else {
            return Err(PyValueError::new_err("the batch has already been settled"));
        };
        let second = first.split_off(at);
        // Each half is timed from now: the failed attempt on the whole is not its cost.
        let dispatched = std::time::Instant::now();
        let part = |entries: Vec<Entry<CallRef>>| Batch {
            len: entries.len(),
            entries: Mutex::new(Some(entries)),
            dispatched,
            owner: Arc::clone(&self.owner),
        };
        Ok((part(first), part(second)))
    }

    /// Adds a padded batch to the statistics: `real` positions of data among `padded`.
    fn record_padding(&self, real: u64, padded: u64) {
        self.owner.record_padding(real, padded);
    }

    /// Settles the batch by giving every caller `error`.
    fn fail(&self, py: Python<'_>, error: &Bound<'_, PyAny>) {
        if let Some(entries) = self.take_entries() {
            self.finish(py, &entries, Outcome::Failed(error.clone().unbind()));
        }
    }
}

impl Drop for Batch {
    // A batch dropped unsettled (its worker died) must not leave its callers waiting forever.
    fn drop(&mut self) {
        let Some(entries) = self.take_entries() else {
            return;
        };
        self.owner.record_unserved(Unserved::Failed, entries.len());
        Python::attach(|py| {
            let mut settlement = Settlement::default();
            settlement.fail_all(py, &entries, || {
                Failure::Internal("a batch was discarded before it completed".into())
            });
            settlement.flush_and_wake(py);
        });
    }
}
