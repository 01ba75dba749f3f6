//! What a processor reports: `BatchStats` snapshots, the `BatchSettings` in force, and the
//! histograms behind them.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyString, PyTuple};

use crate::rules::DispatchReason;
use crate::stats::{LatencyHistogram, Stats};

/// How long a batch waits for companions: a fixed window, or `"auto"` with its bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Wait {
    Fixed { ms: f64 },
    Auto { max_ms: f64 },
}

/// The options `reconfigure` can change, as they stood when a snapshot was taken.
/// `max_timeout_ms` is None unless `timeout_ms` is `"auto"`.
#[pyclass(frozen, eq, module = "batched")]
#[derive(Clone, Debug, PartialEq)]
pub struct BatchSettings {
    #[pyo3(get)]
    pub(crate) batch_size: usize,
    pub(crate) wait: Wait,
    #[pyo3(get)]
    pub(crate) max_batch_tokens: Option<usize>,
    #[pyo3(get)]
    pub(crate) max_concurrent_batches: usize,
}

#[pymethods]
impl BatchSettings {
    #[new]
    #[pyo3(signature = (*, batch_size = 32, timeout_ms = None, max_timeout_ms = None, max_batch_tokens = None, max_concurrent_batches = 1))]
    fn new(
        batch_size: usize,
        timeout_ms: Option<&Bound<'_, PyAny>>,
        max_timeout_ms: Option<f64>,
        max_batch_tokens: Option<usize>,
        max_concurrent_batches: usize,
    ) -> PyResult<Self> {
        let auto = timeout_ms.is_some_and(|timeout| timeout.eq("auto").unwrap_or(false));
        let wait = match (auto, timeout_ms, max_timeout_ms) {
            (true, _, Some(max_ms)) => Wait::Auto { max_ms },
            (false, Some(timeout), None) => Wait::Fixed {
                ms: timeout.extract()?,
            },
            (false, None, None) => Wait::Fixed { ms: 5.0 },
            _ => {
                return Err(PyValueError::new_err(
                    "max_timeout_ms is given exactly when timeout_ms is \"auto\"",
                ))
            }
        };
        Ok(Self {
            batch_size,
            wait,
            max_batch_tokens,
            max_concurrent_batches,
        })
    }

    /// A number of milliseconds, or `"auto"`.
    #[getter]
    fn timeout_ms<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match self.wait {
            Wait::Fixed { ms } => PyFloat::new(py, ms).into_any(),
            Wait::Auto { .. } => PyString::new(py, "auto").into_any(),
        }
    }

    #[getter]
    fn max_timeout_ms(&self) -> Option<f64> {
        match self.wait {
            Wait::Fixed { .. } => None,
            Wait::Auto { max_ms } => Some(max_ms),
        }
    }

    /// The settings as a dict of plain values, for JSON.
    fn as_dict<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        fields_dict(slf.py(), &Self::fields(slf)?)
    }

    /// Pickles as the keyword arguments that rebuild it.
    fn __getnewargs_ex__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyDict>)> {
        Ok((PyTuple::empty(slf.py()), Self::as_dict(slf)?))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        described("BatchSettings", &Self::fields(slf)?)
    }
}

impl BatchSettings {
    fn fields<'py>(slf: &Bound<'py, Self>) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
        let py = slf.py();
        let this = slf.get();
        Ok(vec![
            (
                "batch_size".into(),
                this.batch_size.into_pyobject(py)?.into_any(),
            ),
            ("timeout_ms".into(), this.timeout_ms(py)),
            (
                "max_timeout_ms".into(),
                this.max_timeout_ms().into_pyobject(py)?,
            ),
            (
                "max_batch_tokens".into(),
                this.max_batch_tokens.into_pyobject(py)?,
            ),
            (
                "max_concurrent_batches".into(),
                this.max_concurrent_batches.into_pyobject(py)?.into_any(),
            ),
        ])
    }
}

/// A snapshot of a processor's work so far. Times are in seconds.
#[pyclass(frozen, eq, module = "batched")]
#[derive(Clone, Debug, PartialEq)]
pub struct BatchStats {
    #[pyo3(get)]
    queue_size: usize,
    #[pyo3(get)]
    total_processed: u64,
    #[pyo3(get)]
    total_batches: u64,
    #[pyo3(get)]
    avg_batch_size: f64,
    #[pyo3(get)]
    avg_processing_time: f64,
    #[pyo3(get)]
    queue_wait_p50: f64,
    #[pyo3(get)]
    queue_wait_p99: f64,
    #[pyo3(get)]
    batch_time_p50: f64,
    #[pyo3(get)]
    batch_time_p99: f64,
    /// Batches by why they left, in the order of `DispatchReason::ALL`.
    dispatched: [u64; 5],
    #[pyo3(get)]
    padded_fraction: f64,
    #[pyo3(get)]
    items_failed: u64,
    #[pyo3(get)]
    items_timed_out: u64,
    #[pyo3(get)]
    items_cancelled: u64,
    #[pyo3(get)]
    items_rejected: u64,
    #[pyo3(get)]
    settings: BatchSettings,
}

#[pymethods]
impl BatchStats {
    #[new]
    #[pyo3(signature = (*, queue_size = 0, total_processed = 0, total_batches = 0, avg_batch_size = 0.0, avg_processing_time = 0.0, queue_wait_p50 = 0.0, queue_wait_p99 = 0.0, batch_time_p50 = 0.0, batch_time_p99 = 0.0, full_batches = 0, deadline_batches = 0, drain_batches = 0, idle_batches = 0, adaptive_batches = 0, padded_fraction = 0.0, items_failed = 0, items_timed_out = 0, items_cancelled = 0, items_rejected = 0, settings = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        queue_size: usize,
        total_processed: u64,
        total_batches: u64,
        avg_batch_size: f64,
        avg_processing_time: f64,
        queue_wait_p50: f64,
        queue_wait_p99: f64,
        batch_time_p50: f64,
        batch_time_p99: f64,
        full_batches: u64,
        deadline_batches: u64,
        drain_batches: u64,
        idle_batches: u64,
        adaptive_batches: u64,
        padded_fraction: f64,
        items_failed: u64,
        items_timed_out: u64,
        items_cancelled: u64,
        items_rejected: u64,
        settings: Option<&Bound<'_, BatchSettings>>,
    ) -> PyResult<Self> {
        let settings = match settings {
            Some(settings) => settings.get().clone(),
            None => BatchSettings::new(32, None, None, None, 1)?,
        };
        Ok(Self {
            queue_size,
            total_processed,
            total_batches,
            avg_batch_size,
            avg_processing_time,
            queue_wait_p50,
            queue_wait_p99,
            batch_time_p50,
            batch_time_p99,
            dispatched: [
                full_batches,
                deadline_batches,
                drain_batches,
                idle_batches,
                adaptive_batches,
            ],
            padded_fraction,
            items_failed,
            items_timed_out,
            items_cancelled,
            items_rejected,
            settings,
        })
    }

    /// Batches that left because `batch_size` items (or `max_batch_tokens`) were waiting.
    #[getter]
    fn full_batches(&self) -> u64 {
        self.dispatched[0]
    }

    /// Batches that left because the oldest item had waited `timeout_ms`.
    #[getter]
    fn deadline_batches(&self) -> u64 {
        self.dispatched[1]
    }

    /// Batches that left during a draining shutdown.
    #[getter]
    fn drain_batches(&self) -> u64 {
        self.dispatched[2]
    }

    /// Under `timeout_ms="auto"`: batches that left at once, traffic being too sparse for
    /// waiting to pay.
    #[getter]
    fn idle_batches(&self) -> u64 {
        self.dispatched[3]
    }

    /// Under `timeout_ms="auto"`: batches that left once waiting for more stopped paying.
    #[getter]
    fn adaptive_batches(&self) -> u64 {
        self.dispatched[4]
    }

    /// The batch counts by why they left: every reason, zeros included.
    #[getter]
    fn batches_by_reason<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (reason, count) in DispatchReason::ALL.iter().zip(self.dispatched) {
            dict.set_item(reason.name(), count)?;
        }
        Ok(dict)
    }

    /// Every field as a dict of plain values (`settings` as a dict too), for JSON.
    fn as_dict<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let dict = fields_dict(slf.py(), &Self::fields(slf)?)?;
        let settings = Bound::new(slf.py(), slf.get().settings.clone())?;
        dict.set_item("settings", BatchSettings::as_dict(&settings)?)?;
        Ok(dict)
    }

    /// Pickles as the keyword arguments that rebuild it.
    fn __getnewargs_ex__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyDict>)> {
        let py = slf.py();
        Ok((PyTuple::empty(py), fields_dict(py, &Self::fields(slf)?)?))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        described("BatchStats", &Self::fields(slf)?)
    }

    /// Every field, durations in milliseconds with their unit (the attributes are seconds).
    fn __str__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let fields = Self::fields(slf)?;
        let mut parts = Vec::with_capacity(fields.len());
        for (name, value) in &fields {
            let text = match value.extract::<f64>() {
                Ok(seconds) if SECONDS.contains(&name.as_str()) => {
                    format!("{:.3} ms", seconds * 1e3)
                }
                Ok(number) if value.is_exact_instance_of::<PyFloat>() => format!("{number:.3}"),
                _ => value.repr()?.to_string(),
            };
            parts.push(format!("{name}={text}"));
        }
        Ok(format!("BatchStats({})", parts.join(", ")))
    }
}

/// The fields that hold durations in seconds, which `str()` prints in milliseconds.
const SECONDS: [&str; 5] = [
    "avg_processing_time",
    "queue_wait_p50",
    "queue_wait_p99",
    "batch_time_p50",
    "batch_time_p99",
];

impl BatchStats {
    /// A snapshot of `stats`, with `queued` items waiting, under `settings`.
    pub(crate) fn snapshot(stats: &Stats, queued: usize, settings: BatchSettings) -> Self {
        let seconds = |duration: Duration| duration.as_secs_f64();
        Self {
            queue_size: queued,
            total_processed: stats.total_items,
            total_batches: stats.total_batches,
            avg_batch_size: stats.mean_batch_size(),
            avg_processing_time: seconds(stats.mean_batch_time()),
            queue_wait_p50: seconds(stats.queue_wait.quantile(0.5)),
            queue_wait_p99: seconds(stats.queue_wait.quantile(0.99)),
            batch_time_p50: seconds(stats.batch_time.quantile(0.5)),
            batch_time_p99: seconds(stats.batch_time.quantile(0.99)),
            dispatched: DispatchReason::ALL.map(|reason| stats.dispatched(reason)),
            padded_fraction: stats.padded_fraction(),
            items_failed: stats.items_failed,
            items_timed_out: stats.items_timed_out,
            items_cancelled: stats.items_cancelled,
            items_rejected: stats.items_rejected,
            settings,
        }
    }

    /// Every field in its documented order, `settings` last (as a `BatchSettings`).
    fn fields<'py>(slf: &Bound<'py, Self>) -> PyResult<Vec<(String, Bound<'py, PyAny>)>> {
        let py = slf.py();
        let this = slf.get();
        let int =
            |value: u64| -> PyResult<Bound<'py, PyAny>> { Ok(value.into_pyobject(py)?.into_any()) };
        let float = |value: f64| PyFloat::new(py, value).into_any();
        let mut fields = vec![
            ("queue_size".into(), int(this.queue_size as u64)?),
            ("total_processed".into(), int(this.total_processed)?),
            ("total_batches".into(), int(this.total_batches)?),
            ("avg_batch_size".into(), float(this.avg_batch_size)),
            (
                "avg_processing_time".into(),
                float(this.avg_processing_time),
            ),
            ("queue_wait_p50".into(), float(this.queue_wait_p50)),
            ("queue_wait_p99".into(), float(this.queue_wait_p99)),
            ("batch_time_p50".into(), float(this.batch_time_p50)),
            ("batch_time_p99".into(), float(this.batch_time_p99)),
        ];
        for (reason, count) in DispatchReason::ALL.iter().zip(this.dispatched) {
            fields.push((format!("{}_batches", reason.name()), int(count)?));
        }
        fields.extend([
            ("padded_fraction".into(), float(this.padded_fraction)),
            ("items_failed".into(), int(this.items_failed)?),
            ("items_timed_out".into(), int(this.items_timed_out)?),
            ("items_cancelled".into(), int(this.items_cancelled)?),
            ("items_rejected".into(), int(this.items_rejected)?),
            (
                "settings".into(),
                Bound::new(py, this.settings.clone())?.into_any(),
            ),
        ]);
        Ok(fields)
    }
}

fn fields_dict<'py>(
    py: Python<'py>,
    fields: &[(String, Bound<'py, PyAny>)],
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, value) in fields {
        dict.set_item(name, value)?;
    }
    Ok(dict)
}

/// `Name(field=value, ...)`, each value by its `repr`.
fn described(class: &str, fields: &[(String, Bound<'_, PyAny>)]) -> PyResult<String> {
    let parts = fields
        .iter()
        .map(|(name, value)| Ok(format!("{name}={}", value.repr()?)))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(format!("{class}({})", parts.join(", ")))
}

/// One histogram as a metrics system wants it: `(cumulative counts at each bound, sum, count)`.
type Cumulative = (Vec<u64>, f64, u64);

/// The queue-wait, batch-time and batch-size histograms, cumulated at the given bounds
/// (seconds for the times, items for the sizes, both ascending).
pub(crate) fn histograms_dict<'py>(
    py: Python<'py>,
    stats: &Stats,
    time_bounds: Vec<f64>,
    size_bounds: Vec<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let durations = time_bounds
        .iter()
        .map(|&seconds| {
            Duration::try_from_secs_f64(seconds).map_err(|_| {
                PyValueError::new_err(format!(
                    "histogram bounds must be seconds of at least 0, got {seconds}"
                ))
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let times = |histogram: &LatencyHistogram| -> Cumulative {
        (
            histogram.cumulative_counts(&durations),
            histogram.sum().as_secs_f64(),
            histogram.count(),
        )
    };
    let mut below = 0;
    let mut size = 0;
    let size_counts = size_bounds
        .iter()
        .map(|&bound| {
            while size < stats.batch_sizes.len() && size as u64 <= bound {
                below += stats.batch_sizes[size];
                size += 1;
            }
            below
        })
        .collect();
    let dict = PyDict::new(py);
    dict.set_item("queue_wait_seconds", times(&stats.queue_wait))?;
    dict.set_item("batch_time_seconds", times(&stats.batch_time))?;
    let sizes: Cumulative = (size_counts, stats.total_items as f64, stats.total_batches);
    dict.set_item("batch_size", sizes)?;
    Ok(dict)
}
