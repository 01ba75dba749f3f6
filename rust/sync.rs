//! The synchronisation primitives the concurrent core is built on: the standard library's, or,
//! when compiled with `RUSTFLAGS="--cfg loom"`, loom's instrumented copies of them, so that the
//! loom models in `loom_tests` can explore every interleaving of the real code (see
//! `scripts/loom.sh`).
//!
//! Only the types that exist with the same API in both are re-exported here. Loom's
//! `Condvar::wait_timeout` never times out (it waits for a notification), so the models only
//! use the untimed waits.

#[cfg(loom)]
pub use loom::sync::{atomic, Condvar, Mutex, MutexGuard, RwLock};

#[cfg(not(loom))]
pub use std::sync::{atomic, Condvar, Mutex, MutexGuard, RwLock};

// Poisoning is the standard library's in both cases: loom's locks return std's `LockResult`.
pub use std::sync::{PoisonError, TryLockError};

// The scheduler's channel and parker: crossbeam's, or under loom a locked queue and a token
// under a lock with the same API, which loom can see into.
#[cfg(loom)]
pub use self::model::{
    channel, now, reset_clock, Parker, Receiver, Sender, TryRecvError, Unparker,
};
#[cfg(not(loom))]
pub use crossbeam_channel::{unbounded as channel, Receiver, Sender, TryRecvError};
#[cfg(not(loom))]
pub use crossbeam_utils::sync::{Parker, Unparker};

/// The clock the scheduler decides by. Under loom it is a virtual clock that only a timed
/// wait that ran out moves forward, to its deadline, so that every interleaving is
/// reproducible.
#[cfg(not(loom))]
#[inline(always)]
pub fn now() -> std::time::Instant {
    std::time::Instant::now()
}

/// Marks where a `SeqCst` protocol needs the single total order of `SeqCst` operations: a
/// thread writes one atomic and then reads another, and relies on a thread doing the converse
/// seeing its write if it did not see the other's (the `waiting` count of [`crate::admission`]).
///
/// Outside loom this is nothing: the `SeqCst` accesses on either side already are in that
/// order. Loom treats `SeqCst` accesses as `AcqRel` (a documented limitation) and would report
/// such a protocol's impossible interleavings as lost wake-ups; it does model `SeqCst` fences,
/// so under loom this is one.
#[inline(always)]
pub fn seqcst_fence_for_loom() {
    #[cfg(loom)]
    atomic::fence(atomic::Ordering::SeqCst);
}

#[cfg(loom)]
mod model {
    use std::cell::Cell;
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    use loom::sync::{Arc, Condvar, Mutex};

    thread_local! {
        // Loom runs a model's threads on the test's own thread: one clock per model.
        static CLOCK: Cell<Option<(Instant, Duration)>> = const { Cell::new(None) };
    }

    /// The virtual clock: a fixed start, and how far timed-out waits moved it.
    fn clock() -> (Instant, Duration) {
        CLOCK.get().unwrap_or_else(|| {
            let fresh = (Instant::now(), Duration::ZERO);
            CLOCK.set(Some(fresh));
            fresh
        })
    }

    pub fn now() -> Instant {
        let (start, elapsed) = clock();
        start + elapsed
    }

    /// Starts the clock afresh: call at the start of each explored interleaving.
    pub fn reset_clock() {
        CLOCK.set(None);
    }

    fn advance_to(deadline: Instant) {
        let (start, elapsed) = clock();
        CLOCK.set(Some((
            start,
            elapsed.max(deadline.saturating_duration_since(start)),
        )));
    }

    /// One unbounded queue; a send, a receive and the sender's drop are each atomic.
    struct Channel<T> {
        items: VecDeque<T>,
        connected: bool,
    }

    pub struct Sender<T>(Arc<Mutex<Channel<T>>>);
    pub struct Receiver<T>(Arc<Mutex<Channel<T>>>);

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum TryRecvError {
        Empty,
        Disconnected,
    }

    /// What a send to a disconnected channel hands back.
    #[derive(Debug)]
    pub struct SendError<T>(T);

    impl<T> SendError<T> {
        pub fn into_inner(self) -> T {
            self.0
        }
    }

    pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
        let channel = Arc::new(Mutex::new(Channel {
            items: VecDeque::new(),
            connected: true,
        }));
        (Sender(Arc::clone(&channel)), Receiver(channel))
    }

    impl<T> Sender<T> {
        pub fn send(&self, item: T) -> Result<(), SendError<T>> {
            self.0.lock().unwrap().items.push_back(item);
            Ok(())
        }
    }

    impl<T> Drop for Sender<T> {
        // The scheduler holds the only sender: dropping it disconnects the channel.
        fn drop(&mut self) {
            self.0.lock().unwrap().connected = false;
        }
    }

    impl<T> Receiver<T> {
        pub fn try_recv(&self) -> Result<T, TryRecvError> {
            let mut channel = self.0.lock().unwrap();
            match channel.items.pop_front() {
                Some(item) => Ok(item),
                None if channel.connected => Err(TryRecvError::Empty),
                None => Err(TryRecvError::Disconnected),
            }
        }

        pub fn is_empty(&self) -> bool {
            self.0.lock().unwrap().items.is_empty()
        }
    }

    impl<T> std::fmt::Debug for Sender<T> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Sender")
        }
    }

    impl<T> std::fmt::Debug for Receiver<T> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Receiver")
        }
    }

    struct Token {
        unparked: Mutex<bool>,
        woken: Condvar,
    }

    /// A parker: one pending wake-up token, as crossbeam's.
    pub struct Parker {
        unparker: Unparker,
    }

    #[derive(Clone)]
    pub struct Unparker(Arc<Token>);

    impl Parker {
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            Self {
                unparker: Unparker(Arc::new(Token {
                    unparked: Mutex::new(false),
                    woken: Condvar::new(),
                })),
            }
        }

        pub fn unparker(&self) -> &Unparker {
            &self.unparker
        }

        pub fn park(&self) {
            let token = &self.unparker.0;
            let mut unparked = token.unparked.lock().unwrap();
            while !*unparked {
                unparked = token.woken.wait(unparked).unwrap();
            }
            *unparked = false;
        }

        /// Takes a pending wake-up if there is one; else the deadline passes at once.
        pub fn park_deadline(&self, deadline: Instant) {
            let mut unparked = self.unparker.0.unparked.lock().unwrap();
            if !std::mem::take(&mut *unparked) {
                advance_to(deadline);
            }
        }
    }

    impl Unparker {
        pub fn unpark(&self) {
            *self.0.unparked.lock().unwrap() = true;
            self.0.woken.notify_one();
        }
    }

    impl std::fmt::Debug for Parker {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Parker")
        }
    }

    impl std::fmt::Debug for Unparker {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Unparker")
        }
    }
}
