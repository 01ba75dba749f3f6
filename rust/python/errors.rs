//! The exceptions the package raises, and how a core failure becomes one.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use crate::admission::Refusal;
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

create_exception!(
    batched,
    QueueFullError,
    BatchedError,
    "The processor's queue had no room for this call (see max_queue_size)."
);

const CLOSED_MESSAGE: &str =
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

/// The exception for a call the bounded queue did not admit.
pub(crate) fn refusal_error(refusal: Refusal) -> PyErr {
    match refusal {
        Refusal::Full {
            queued,
            count,
            limit,
        } => QueueFullError::new_err(format!(
            "the queue holds {queued} of max_queue_size={limit} items and has no room for \
             {count} more; retry later, shed load, raise max_queue_size or use on_full=\"block\""
        )),
        Refusal::TooLarge { count, limit } => QueueFullError::new_err(format!(
            "a call of {count} items can never fit a queue of max_queue_size={limit}; \
             split the call or raise max_queue_size"
        )),
        Refusal::Closed => closed_error(),
    }
}

/// The exception for a call made from inside the processor's own batch function.
pub(crate) fn self_call_error() -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err(
        "a batched function was called from inside its own batch function: the call would wait for \
     a batch that cannot start before the running one returns, which is waiting for it (a \
     deadlock). Call the undecorated function directly, or give the inner call another \
     processor",
    )
}
