//! The options every decorator takes, checked here and nowhere else: their types, their
//! ranges and their defaults.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString};

use super::stats::{BatchSettings, Wait};
use crate::policy::{BatchPolicy, PolicyError};

const DEFAULT_BATCH_SIZE: i64 = 32;
const DEFAULT_TIMEOUT_MS: f64 = 5.0;
/// The longest any item waits under `timeout_ms="auto"` unless `max_timeout_ms` says otherwise.
const DEFAULT_MAX_TIMEOUT_MS: f64 = 10.0;
const DEFAULT_SMALL_BATCH_THRESHOLD: i64 = 8;

/// Every option this class checks; a decorator takes those of them its flavour has.
const NAMES: [&str; 11] = [
    "batch_size",
    "timeout_ms",
    "max_timeout_ms",
    "small_batch_threshold",
    "sort_by_length",
    "max_batch_tokens",
    "max_queue_size",
    "on_full",
    "on_error",
    "length_fn",
    "max_concurrent_batches",
];

/// Checked options of one processor, made once per decorator (which is how bad options fail at
/// decoration time) and handed to every queue it creates.
#[pyclass(frozen, module = "batched._core")]
pub struct Options {
    pub(crate) policy: BatchPolicy,
    /// `max_queue_size`: the most items queued and not yet dispatched.
    pub(crate) max_queued: Option<usize>,
    /// `on_full="block"`: a call finding the queue full waits for room instead of failing.
    pub(crate) block_when_full: bool,
    /// `on_error="isolate"`: a failed batch is retried in halves.
    isolate: bool,
    length_fn: Option<Py<PyAny>>,
    max_concurrent_batches: usize,
    /// The options as given, which `replace` starts from.
    given: Py<PyDict>,
}

#[pymethods]
impl Options {
    /// Raises `TypeError` for an unknown option or a value of the wrong type, `ValueError` for
    /// a value out of range.
    #[new]
    #[pyo3(signature = (**options))]
    fn new(py: Python<'_>, options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let given = match options {
            Some(options) => options.copy()?,
            None => PyDict::new(py),
        };
        Self::check(&given)
    }

    /// These options with `changes` applied, checked as at decoration time. A fixed
    /// `timeout_ms` given without `max_timeout_ms` drops the bound that went with `"auto"`.
    #[pyo3(signature = (**changes))]
    fn replace(&self, py: Python<'_>, changes: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let merged = self.given.bind(py).copy()?;
        if let Some(changes) = changes {
            let fixed_wait = match changes.get_item("timeout_ms")? {
                Some(timeout) => !is_auto(&timeout),
                None => false,
            };
            let dropped_bound = fixed_wait
                && !changes.contains("max_timeout_ms")?
                && merged.contains("max_timeout_ms")?;
            if dropped_bound {
                merged.del_item("max_timeout_ms")?;
            }
            merged.update(changes.as_mapping())?;
        }
        Self::check(&merged)
    }

    /// The options `reconfigure` can change, as they stand.
    #[getter]
    fn settings(&self) -> BatchSettings {
        self.batch_settings()
    }

    #[getter]
    fn isolate(&self) -> bool {
        self.isolate
    }

    #[getter]
    fn block_when_full(&self) -> bool {
        self.block_when_full
    }

    #[getter]
    fn max_concurrent_batches(&self) -> usize {
        self.max_concurrent_batches
    }

    /// How to measure an item: `length_fn`, else `len` when an option looks at lengths, else
    /// `None` (no lengths computed at all).
    #[getter]
    fn length_fn(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if let Some(length_fn) = &self.length_fn {
            return Ok(Some(length_fn.clone_ref(py)));
        }
        if !self.policy.packing.is_length_aware() {
            return Ok(None);
        }
        let len = py.import("builtins")?.getattr(intern!(py, "len"))?;
        Ok(Some(len.unbind()))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("Options({})", self.given.bind(py).repr()?))
    }
}

impl Options {
    fn check(given: &Bound<'_, PyDict>) -> PyResult<Self> {
        for name in given.keys() {
            let name: String = name.extract()?;
            if !NAMES.contains(&name.as_str()) {
                return Err(PyTypeError::new_err(format!(
                    "unexpected option '{name}'; the options are {}",
                    NAMES.join(", ")
                )));
            }
        }
        let option = |name: &str| given.get_item(name);
        let timeout = option("timeout_ms")?;
        let adaptive = timeout.as_ref().is_some_and(is_auto);
        let max_timeout = option("max_timeout_ms")?;
        let wait_ms = match (adaptive, timeout, max_timeout) {
            (true, _, Some(bound)) => milliseconds("max_timeout_ms", &bound)?,
            (true, _, None) => DEFAULT_MAX_TIMEOUT_MS,
            (false, _, Some(_)) => return Err(PyValueError::new_err(
                "max_timeout_ms bounds timeout_ms=\"auto\"; with a fixed timeout_ms, leave it out",
            )),
            (false, Some(timeout), None) if timeout.is_instance_of::<PyString>() => {
                return Err(PyTypeError::new_err(format!(
                    "timeout_ms must be a number of milliseconds or \"auto\", got {}",
                    timeout.repr()?
                )))
            }
            (false, Some(timeout), None) => milliseconds("timeout_ms", &timeout)?,
            (false, None, None) => DEFAULT_TIMEOUT_MS,
        };
        let batch_size = match option("batch_size")? {
            Some(value) => int("batch_size", &value)?,
            None => DEFAULT_BATCH_SIZE,
        };
        let small_batch_threshold = match option("small_batch_threshold")? {
            Some(value) => int("small_batch_threshold", &value)?,
            None => DEFAULT_SMALL_BATCH_THRESHOLD,
        };
        let small = usize::try_from(small_batch_threshold).map_err(|_| {
            PyValueError::new_err(format!(
                "small_batch_threshold must be an integer of at least 0, got {small_batch_threshold}"
            ))
        })?;
        let sort_by_length = match option("sort_by_length")? {
            Some(value) => flag("sort_by_length", &value)?,
            None => false,
        };
        let max_batch_tokens = optional_int("max_batch_tokens", option("max_batch_tokens")?)?;
        let policy = BatchPolicy::new(batch_size, wait_ms, small)
            .and_then(|policy| policy.with_packing(max_batch_tokens, sort_by_length))
            .map(|policy| policy.with_adaptive(adaptive))
            .map_err(|error| match error {
                PolicyError::Timeout(ms) if adaptive => PyValueError::new_err(format!(
                    "max_timeout_ms must be a finite number of milliseconds of at least 0, got {ms}"
                )),
                error => PyValueError::new_err(error.to_string()),
            })?;
        let max_queued = match optional_int("max_queue_size", option("max_queue_size")?)? {
            None => None,
            Some(size) => Some(usize::try_from(size).ok().filter(|&size| size >= 1).ok_or_else(
                || {
                    PyValueError::new_err(format!(
                        "max_queue_size must be an integer of at least 1 (or None for no bound), got {size}"
                    ))
                },
            )?),
        };
        let block_when_full = choice("on_full", option("on_full")?, ["raise", "block"])? == 1;
        let isolate = choice("on_error", option("on_error")?, ["fail", "isolate"])? == 1;
        let length_fn = match option("length_fn")? {
            Some(value) if value.is_none() => None,
            Some(value) if value.is_callable() => Some(value.unbind()),
            Some(value) => {
                return Err(PyTypeError::new_err(format!(
                    "length_fn must be callable, got {}",
                    value.repr()?
                )))
            }
            None => None,
        };
        let max_concurrent_batches = match option("max_concurrent_batches")? {
            Some(value) => int("max_concurrent_batches", &value)?,
            None => 1,
        };
        let max_concurrent_batches = usize::try_from(max_concurrent_batches)
            .ok()
            .filter(|&count| count >= 1)
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "max_concurrent_batches must be at least 1, got {max_concurrent_batches}"
                ))
            })?;
        Ok(Self {
            policy,
            max_queued,
            block_when_full,
            isolate,
            length_fn,
            max_concurrent_batches,
            given: given.clone().unbind(),
        })
    }

    pub(crate) fn batch_settings(&self) -> BatchSettings {
        let wait_ms = self.policy.max_wait.as_secs_f64() * 1000.0;
        BatchSettings {
            batch_size: self.policy.batch_size,
            wait: if self.policy.adaptive {
                Wait::Auto { max_ms: wait_ms }
            } else {
                Wait::Fixed { ms: wait_ms }
            },
            max_batch_tokens: self.policy.packing.max_batch_tokens,
            max_concurrent_batches: self.max_concurrent_batches,
        }
    }
}

fn is_auto(value: &Bound<'_, PyAny>) -> bool {
    value
        .cast::<PyString>()
        .is_ok_and(|text| text.to_str().is_ok_and(|text| text == "auto"))
}

/// An `int` (not a `bool`), as an `i64`.
fn int(name: &str, value: &Bound<'_, PyAny>) -> PyResult<i64> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an int, got {}",
            value.repr()?
        )));
    }
    value.extract().map_err(|_| {
        PyValueError::new_err(format!("{name} must be at most {}, got {value}", i64::MAX))
    })
}

fn optional_int(name: &str, value: Option<Bound<'_, PyAny>>) -> PyResult<Option<i64>> {
    match value {
        Some(value) if !value.is_none() => int(name, &value).map(Some),
        _ => Ok(None),
    }
}

/// An `int` or a `float` (not a `bool`), as milliseconds; the range is the policy's to check.
fn milliseconds(name: &str, value: &Bound<'_, PyAny>) -> PyResult<f64> {
    let number = !value.is_instance_of::<PyBool>()
        && (value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>());
    if !number {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a number of milliseconds, got {}",
            value.repr()?
        )));
    }
    // An int too large for a float is out of range all the same.
    Ok(value.extract().unwrap_or(f64::INFINITY))
}

fn flag(name: &str, value: &Bound<'_, PyAny>) -> PyResult<bool> {
    value
        .cast::<PyBool>()
        .map(|flag| flag.is_true())
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "{name} must be True or False, got {}",
                value
                    .repr()
                    .map_or_else(|_| "?".into(), |text| text.to_string())
            ))
        })
}

/// The index in `allowed` of the option's value (0, the default, when it is not given).
fn choice<const N: usize>(
    name: &str,
    value: Option<Bound<'_, PyAny>>,
    allowed: [&str; N],
) -> PyResult<usize> {
    let Some(value) = value else { return Ok(0) };
    let text = value
        .cast::<PyString>()
        .ok()
        .and_then(|text| text.to_str().ok().map(str::to_owned));
    if let Some(index) = text.and_then(|text| allowed.iter().position(|&choice| choice == text)) {
        return Ok(index);
    }
    let choices: Vec<String> = allowed.iter().map(|choice| format!("'{choice}'")).collect();
    Err(PyValueError::new_err(format!(
        "{name} must be {}, got {}",
        choices.join(" or "),
        value.repr()?
    )))
}
