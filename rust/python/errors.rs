//! The exceptions the package raises, and how a core failure becomes one.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use crate::call::Failure;

create_exception!(
    batched,
    BatchedError,
    PyException,
    "Base class of the errors raised by batched itself."
);
create_exception!(
    batched,
    ProcessorClosedError,
    BatchedError,
    "The processor was shut down before this call could run."
);

pub(crate) const CLOSED_MESSAGE: &str =
    "the batch processor has been shut down; create a new one (or stop calling it after shutdown())";

pub(crate) fn closed_error() -> PyErr {
    ProcessorClosedError::new_err(CLOSED_MESSAGE)
}

/// The exception a caller receives for a failure recorded by the core.
pub(crate) fn failure_to_err(py: Python<'_>, failure: Failure<Py<PyAny>>) -> PyErr {
    match failure {
        Failure::User(exception) => PyErr::from_value(exception.into_bound(py)),
        Failure::Closed => closed_error(),
        Failure::Abandoned => BatchedError::new_err("the call was cancelled before it completed"),
        Failure::Internal(message) => BatchedError::new_err(format!(
            "internal error in batched ({message}); please report it"
        )),
    }
}
