//! One Python call in flight: its inputs, its outcome and how its caller is woken.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::errors::failure_to_err;
use crate::call::{Call, Delivery, Failure};
use crate::pending::{Cancellable, Submission};
use crate::relay::{self, Keeper, Parked, Relay, Wake};
use crate::stats::Unserved;

pub(crate) enum Inputs {
    One(Py<PyAny>),
    Many(Py<PyList>),
    /// An opaque payload holding several rows (a dict of batched features, say): batches see it
    /// as segments, and each batch hands back one value per segment.
    Rows(Py<PyAny>),
}

/// How the caller learns that its call ended.
pub(crate) enum Waiter {
    /// A thread blocked in [`PyCall::wait`], woken by the outcome's condition variable.
    Thread,
    /// An asyncio future, resolved on its own event loop.
    Future {
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
    },
}

pub(crate) struct PyCall {
    pub inputs: Inputs,
    /// How many items the call holds.
    pub len: usize,
    pub outcome: Call<Py<PyAny>, Py<PyAny>>,
    pub waiter: Waiter,
    /// For a blocked thread: the caller it wakes once served (see [`crate::relay`]).
    relay: Relay<CallRef>,
    /// Woken by the keeper: its chain stalled, so it hands on at once when served.
    woken_late: AtomicBool,
}

pub(crate) type CallRef = Arc<PyCall>;

/// The call `arg` makes and what the core queues for it (all its items, arriving now); `None`
/// for an empty list, which has nothing to wait for.
///
/// A list means many items; anything else is one item; with `rows`, `arg` is an opaque payload
/// of that many rows. A list is copied so that a caller mutating it later cannot change what
/// the batch sees.
pub(crate) fn new_call(
    arg: &Bound<'_, PyAny>,
    rows: Option<usize>,
    lengths: Option<Vec<usize>>,
    priority: i32,
    waiter: Waiter,
) -> PyResult<Option<(CallRef, Submission<CallRef>)>> {
    let (inputs, len) = match (rows, arg.cast::<PyList>()) {
        (Some(rows), _) => (Inputs::Rows(arg.clone().unbind()), rows),
        (None, Ok(list)) => {
            let copy = list.get_slice(0, list.len());
            let len = copy.len();
            (Inputs::Many(copy.unbind()), len)
        }
        (None, Err(_)) => (Inputs::One(arg.clone().unbind()), 1),
    };
    if let Some(given) = lengths.as_ref().map(Vec::len).filter(|&given| given != len) {
        return Err(PyValueError::new_err(format!(
            "got {given} lengths for a call of {len} items; give one length per item"
        )));
    }
    if len == 0 {
        return Ok(None);
    }
    let call = PyCall::new(inputs, len, waiter);
    let submission = Submission {
        call: Arc::clone(&call),
        count: len,
        priority,
        arrival: Instant::now(),
        lengths,
    };
    Ok(Some((call, submission)))
}

impl Cancellable for CallRef {
    fn is_cancelled(&self) -> bool {
        self.outcome.is_abandoned()
    }
}

impl PyCall {
    pub fn new(inputs: Inputs, len: usize, waiter: Waiter) -> CallRef {
        Arc::new(Self {
            inputs,
            len,
            outcome: Call::new(len),
            waiter,
            relay: Relay::default(),
            woken_late: AtomicBool::new(false),
        })
    }

    /// Wakes blocked callers whose outcomes are in: the first now, each of the others once its
    /// predecessor has been served.
    pub fn wake_in_turn(calls: &[CallRef]) {
        for call in relay::chain(calls, |call| &call.relay) {
            call.wake();
        }
    }

    pub fn item<'py>(&self, py: Python<'py>, index: usize) -> PyResult<Bound<'py, PyAny>> {
        match &self.inputs {
            Inputs::One(item) => Ok(item.bind(py).clone()),
            Inputs::Many(items) => items.bind(py).get_item(index),
            Inputs::Rows(_) => Err(PyTypeError::new_err(
                "a batch of row payloads has no single items; use Batch.segments()",
            )),
        }
    }

    /// The object a batch slices for this call: the item, the list, or the row payload.
    pub fn payload<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match &self.inputs {
            Inputs::One(item) | Inputs::Rows(item) => item.bind(py).clone(),
            Inputs::Many(items) => items.bind(py).clone().into_any(),
        }
    }

    /// The value a caller receives: the lone result, the list for a list call, or the list of
    /// per-segment values for a row payload.
    pub fn result_value(&self, py: Python<'_>, mut results: Vec<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        match self.inputs {
            Inputs::One(_) => Ok(results.pop().expect("a single call has one result")),
            Inputs::Many(_) | Inputs::Rows(_) => Ok(PyList::new(py, results)?.into_any().unbind()),
        }
    }

    /// Takes the outcome of an ended call as a Python value or exception.
    pub fn take_outcome(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.outcome.take() {
            Some(Ok(results)) => self.result_value(py, results),
            Some(Err(failure)) => Err(failure_to_err(py, failure)),
            None => Err(failure_to_err(
                py,
                Failure::Internal("outcome taken twice".into()),
            )),
        }
    }

    /// Blocks with the GIL released until the call ends or `deadline` passes (raising
    /// `TimeoutError` for a `timeout` of that many seconds). A caller that gives up withdraws
    /// the call and tells `unserved` why.
    pub fn wait(
        &self,
        py: Python<'_>,
        deadline: Option<Instant>,
        timeout: Option<f64>,
        unserved: &dyn Fn(Unserved, usize),
    ) -> PyResult<Py<PyAny>> {
        // Served or not (a panic included), this caller leaves: the next one in its chain must
        // not wait on it.
        let _leaving = PassOnLeave {
            call: self,
            straight_back: Rhythm::came_straight_back(),
        };
        self.wait_unrelayed(py, deadline, timeout, unserved)
    }

    fn wait_unrelayed(
        &self,
        py: Python<'_>,
        deadline: Option<Instant>,
        timeout: Option<f64>,
        unserved: &dyn Fn(Unserved, usize),
    ) -> PyResult<Py<PyAny>> {
        let mut wait = Interruptible::new(deadline);
        loop {
            if release_gil(py, || self.outcome.wait(wait.slice_end())) {
                return self.take_outcome(py);
            }
            match wait.check(py) {
                Ok(()) => continue,
                Err(Stop::Interrupted(interrupt)) => {
                    if self.outcome.fail(Failure::Abandoned) == Delivery::Completed {
                        unserved(Unserved::Cancelled, self.len);
                    }
                    return Err(interrupt);
                }
                Err(Stop::DeadlinePassed) => {
                    return match self.outcome.fail(Failure::Abandoned) {
                        // It ended just now, between the wait and the check: hand out its outcome.
                        Delivery::Ignored => self.take_outcome(py),
                        _ => {
                            unserved(Unserved::TimedOut, self.len);
                            Err(timeout_error(timeout.unwrap_or_default()))
                        }
                    };
                }
            }
        }
    }
}

/// Hands on a leaving caller's baton, however it leaves.
struct PassOnLeave<'a> {
    call: &'a PyCall,
    straight_back: bool,
}

impl Drop for PassOnLeave<'_> {
    fn drop(&mut self) {
        if let Some(next) = self.call.relay.pass() {
            if self.straight_back && !self.call.woken_late.load(Ordering::Acquire) {
                Rhythm::keep_until_release(next);
            } else {
                next.wake();
            }
        }
        Rhythm::returning();
    }
}

impl Wake for CallRef {
    fn wake(&self) {
        self.outcome.wake();
    }

    fn wake_late(&self) {
        self.woken_late.store(true, Ordering::Release);
        self.outcome.wake();
    }
}

/// How this thread hands on the baton of a batch's wake-up chain (see [`crate::relay`]): a
/// thread that calls again straight after being served keeps the baton until it next releases
/// the GIL, so the next caller wakes to a free GIL; any other hands it on at once.
pub(crate) struct Rhythm;

/// A gap between a thread's return and its next call short enough to call a tight loop.
const STRAIGHT_BACK: Duration = Duration::from_micros(50);
/// The longest a kept baton waits for its holder to come back before the keeper hands it on.
const KEEP_AT_MOST: Duration = Duration::from_millis(1);

/// The baton this thread keeps; handed over at the latest when the thread ends.
struct Kept(Option<Arc<Parked<CallRef>>>);

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(parked) = self.0.take() {
            parked.hand_over();
        }
    }
}

thread_local! {
    static KEPT: RefCell<Kept> = const { RefCell::new(Kept(None)) };
    static LAST_RETURN: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The keeper of this process's kept batons, started on first use. Locked only with the GIL
/// held, so a fork (which Python makes with the GIL) never finds it locked.
static KEEPER: Mutex<Option<Arc<Keeper<CallRef>>>> = Mutex::new(None);

impl Rhythm {
    fn came_straight_back() -> bool {
        LAST_RETURN
            .get()
            .is_some_and(|at| at.elapsed() < STRAIGHT_BACK)
    }

    fn returning() {
        LAST_RETURN.set(Some(Instant::now()));
    }

    /// Keeps `next` until this thread next releases the GIL in a call, or the keeper's delay.
    fn keep_until_release(next: CallRef) {
        let Some(keeper) = Self::keeper() else {
            return next.wake();
        };
        let parked = keeper.park(next);
        // A thread already tearing down its locals hands the baton over at once instead.
        let earlier = KEPT
            .try_with(|kept| kept.borrow_mut().0.replace(Arc::clone(&parked)))
            .unwrap_or(Some(parked));
        if let Some(earlier) = earlier {
            earlier.hand_over();
        }
    }

    /// Hands over the baton this thread keeps, if any: call just after releasing the GIL.
    fn hand_over_kept() {
        if let Some(parked) = KEPT
            .try_with(|kept| kept.borrow_mut().0.take())
            .ok()
            .flatten()
        {
            parked.hand_over();
        }
    }

    fn keeper() -> Option<Arc<Keeper<CallRef>>> {
        let mut keeper = KEEPER.lock().unwrap_or_else(PoisonError::into_inner);
        if keeper.is_none() {
            let started = Arc::new(Keeper::new(KEEP_AT_MOST));
            let running = Arc::clone(&started);
            std::thread::Builder::new()
                .name("batched-relay".into())
                .spawn(move || running.run())
                .ok()?;
            *keeper = Some(started);
        }
        keeper.clone()
    }

    /// In a forked child: the keeper's thread did not survive the fork, and its lock may be held
    /// for ever, so the next kept baton starts a new keeper; the old one is never touched.
    pub(crate) fn forget_keeper_after_fork() {
        std::mem::forget(KEEPER.lock().unwrap_or_else(PoisonError::into_inner).take());
        KEPT.with(|kept| std::mem::forget(kept.borrow_mut().0.take()));
    }
}

/// Runs `f` with the GIL released. Every wait of the bindings goes through here, so a thread
/// that keeps a baton hands it over whenever it lets the GIL go, whatever it waits for.
pub(crate) fn release_gil<T: Send>(py: Python<'_>, f: impl Send + FnOnce() -> T) -> T {
    py.detach(|| {
        Rhythm::hand_over_kept();
        f()
    })
}

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
