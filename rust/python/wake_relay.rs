//! The wake relay of blocked callers (see [`crate::relay`]): how a served thread hands on the
//! baton of its batch's wake-up chain, and the keeper that holds batons for a while.

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::in_flight::{CallRef, PyCall};
use crate::relay::{Keeper, Parked, Wake};

/// Hands on a leaving caller's baton, however it leaves.
pub(super) struct PassOnLeave<'a> {
    call: &'a PyCall,
    straight_back: bool,
}

impl<'a> PassOnLeave<'a> {
    pub(super) fn new(call: &'a PyCall, straight_back: bool) -> Self {
        Self {
            call,
            straight_back,
        }
    }
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
    pub(super) fn came_straight_back() -> bool {
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
    pub(super) fn hand_over_kept() {
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
