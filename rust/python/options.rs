//! The options of a queue, checked once: the batch policy and the queue's bound.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::policy::BatchPolicy;

/// Checked batching options, made once per decorator (which is how bad options fail at
/// decoration time) and handed to every queue it creates.
#[pyclass(frozen, module = "batched._core")]
pub struct QueueOptions {
    pub(crate) policy: BatchPolicy,
    /// `max_queue_size`: the most items queued and not yet dispatched.
    pub(crate) max_queued: Option<usize>,
    /// `on_full="block"`: a call finding the queue full waits for room instead of failing.
    pub(crate) block_when_full: bool,
}

#[pymethods]
impl QueueOptions {
    /// Raises `ValueError` saying what is wrong with an option.
    #[new]
    #[pyo3(signature = (batch_size, timeout_ms, small_batch_threshold, max_batch_tokens = None, sort_by_length = false, max_queue_size = None, on_full = "raise", adaptive = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        batch_size: i64,
        timeout_ms: f64,
        small_batch_threshold: i64,
        max_batch_tokens: Option<i64>,
        sort_by_length: bool,
        max_queue_size: Option<i64>,
        on_full: &str,
        adaptive: bool,
    ) -> PyResult<Self> {
        let policy = policy_from(
            batch_size,
            timeout_ms,
            small_batch_threshold,
            max_batch_tokens,
            sort_by_length,
            adaptive,
        )?;
        let (max_queued, block_when_full) = queue_bound(max_queue_size, on_full)?;
        Ok(Self {
            policy,
            max_queued,
            block_when_full,
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "QueueOptions({:?}, max_queued={:?}, block_when_full={})",
            self.policy, self.max_queued, self.block_when_full
        )
    }
}

/// The queue's bound and whether a full queue blocks callers, from the Python options.
fn queue_bound(max_queue_size: Option<i64>, on_full: &str) -> PyResult<(Option<usize>, bool)> {
    let limit = match max_queue_size {
        None => None,
        Some(size) => Some(
            usize::try_from(size)
                .ok()
                .filter(|&size| size >= 1)
                .ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "max_queue_size must be an integer of at least 1 (or None for no bound), got {size}"
                    ))
                })?,
        ),
    };
    let block = match on_full {
        "raise" => false,
        "block" => true,
        other => {
            return Err(PyValueError::new_err(format!(
                "on_full must be \"raise\" or \"block\", got {other:?}"
            )))
        }
    };
    Ok((limit, block))
}

fn policy_from(
    batch_size: i64,
    timeout_ms: f64,
    small_batch_threshold: i64,
    max_batch_tokens: Option<i64>,
    sort_by_length: bool,
    adaptive: bool,
) -> PyResult<BatchPolicy> {
    let small = usize::try_from(small_batch_threshold).map_err(|_| {
        PyValueError::new_err(format!(
            "small_batch_threshold must be an integer of at least 0, got {small_batch_threshold}"
        ))
    })?;
    BatchPolicy::new(batch_size, timeout_ms, small)
        .and_then(|policy| policy.with_packing(max_batch_tokens, sort_by_length))
        .map(|policy| policy.with_adaptive(adaptive))
        .map_err(|error| PyValueError::new_err(error.to_string()))
}
