//! Waits that Ctrl-C can interrupt, and the deadlines and timeouts they end at. Only the
//! interpreter's main thread receives signals, so it is detected once, at import.

use std::sync::OnceLock;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyTimeoutError;
use pyo3::prelude::*;

/// When a wait should stop early.
pub(crate) enum Stop {
    /// A signal handler raised (Ctrl-C on the main thread).
    Interrupted(PyErr),
    DeadlinePassed,
}

/// A wait with the GIL released, cut into slices: on the main thread it wakes every
/// `SIGNAL_CHECK` to let Ctrl-C through; elsewhere it sleeps until woken or its deadline.
pub(crate) struct Interruptible {
    deadline: Option<Instant>,
    on_main_thread: bool,
}

impl Interruptible {
    pub fn new(deadline: Option<Instant>) -> Self {
        Self {
            deadline,
            on_main_thread: MAIN_THREAD.get() == Some(&std::thread::current().id()),
        }
    }

    /// When the next slice of the wait ends.
    pub fn slice_end(&self) -> Option<Instant> {
        match (self.on_main_thread, self.deadline) {
            (false, deadline) => deadline,
            (true, None) => Some(Instant::now() + SIGNAL_CHECK),
            (true, Some(deadline)) => Some(deadline.min(Instant::now() + SIGNAL_CHECK)),
        }
    }

    /// After a slice ended without the awaited event: whether to go on waiting.
    pub fn check(&mut self, py: Python<'_>) -> Result<(), Stop> {
        py.check_signals().map_err(Stop::Interrupted)?;
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return Err(Stop::DeadlinePassed);
        }
        Ok(())
    }
}

/// The instant `timeout` seconds from now; `None` for no timeout or one too large to represent.
pub(crate) fn deadline_after(timeout: Option<f64>) -> Option<Instant> {
    timeout
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .and_then(|limit| Instant::now().checked_add(limit))
}

pub(crate) fn timeout_error(seconds: f64) -> PyErr {
    PyTimeoutError::new_err(format!(
        "the call did not complete within its timeout of {seconds} s"
    ))
}

const SIGNAL_CHECK: Duration = Duration::from_millis(100);

static MAIN_THREAD: OnceLock<ThreadId> = OnceLock::new();

/// Records the interpreter's main thread, the only one that receives signals, if the module is
/// being imported there (the usual case; elsewhere waits simply never check for Ctrl-C).
pub(crate) fn remember_main_thread(py: Python<'_>) -> PyResult<()> {
    let threading = py.import("threading")?;
    let current = threading.call_method0("current_thread")?;
    let main = threading.call_method0("main_thread")?;
    if current.is(&main) {
        let _ = MAIN_THREAD.set(std::thread::current().id());
    }
    Ok(())
}
