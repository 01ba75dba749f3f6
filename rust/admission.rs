//! Admission to the queue: counts the items accepted and not yet dispatched, and, when the queue
//! is bounded, refuses a call that would go over the bound or makes it wait for room.
//!
//! Room frees up whenever the scheduler removes items (a batch leaves, cancelled items are
//! discarded, the queue is failed at shutdown). Blocked threads wait on a condition variable;
//! waiters that cannot block (an event loop's task) register a token `W` that [`Admission::release`]
//! hands back, so the owner can wake them in its own way.

use crate::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use crate::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Why a call was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Admitting the call would put more than `limit` items in the queue.
    Full {
        queued: usize,
        count: usize,
        limit: usize,
    },
    /// The call alone holds more items than the queue ever may, so waiting cannot help.
    TooLarge { count: usize, limit: usize },
    /// The queue was closed while the call waited for room.
    Closed,
}

#[derive(Debug)]
pub struct Admission<W> {
    limit: Option<usize>,
    queued: AtomicUsize,
    // Blocked threads plus registered waiters: lets `release` skip the lock when nobody waits.
    waiting: AtomicUsize,
    closed: AtomicBool,
    registered: Mutex<Vec<W>>,
    room: Condvar,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<W> Admission<W> {
    /// `limit` is the most items the queue may hold; `None` leaves it unbounded.
    pub fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            queued: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            registered: Mutex::new(Vec::new()),
            room: Condvar::new(),
        }
    }

    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Items admitted and not yet released.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Admits `count` items if they fit, all or none; returns how many were queued before.
    pub fn try_admit(&self, count: usize) -> Result<usize, Refusal> {
        let Some(limit) = self.limit else {
            return Ok(self.queued.fetch_add(count, Ordering::SeqCst));
        };
        if count > limit {
            return Err(Refusal::TooLarge { count, limit });
        }
        self.queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |queued| {
                (queued + count <= limit).then_some(queued + count)
            })
            .map_err(|queued| Refusal::Full {
                queued,
                count,
                limit,
            })
    }

    /// Admits `count` items, waiting for room until `until` (forever with `None`). Returns how
    /// many were queued before, or `Ok(None)` if `until` passed first.
    pub fn admit_blocking(
        &self,
        count: usize,
        until: Option<Instant>,
    ) -> Result<Option<usize>, Refusal> {
        match self.try_admit(count) {
            Err(Refusal::Full { .. }) => {}
            other => return other.map(Some),
        }
        // Announce the wait before looking again, so a release either sees us or we see its room.
        self.waiting.fetch_add(1, Ordering::SeqCst);
        crate::sync::seqcst_fence_for_loom();
        let mut guard = lock(&self.registered);
        let admitted = loop {
            if self.closed.load(Ordering::SeqCst) {
                break Err(Refusal::Closed);
            }
            match self.try_admit(count) {
                Err(Refusal::Full { .. }) => {}
                other => break other.map(Some),
            }
            guard = match until {
                None => self
                    .room
                    .wait(guard)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break Ok(None);
                    }
                    self.room
                        .wait_timeout(guard, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        };
        drop(guard);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        admitted
    }

    /// Registers `waiter` to be handed back by the next release, unless `count` items would fit
    /// now (or the queue is closed): then `waiter` comes straight back and the caller retries.
    pub fn register(&self, count: usize, waiter: W) -> Option<W> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        crate::sync::seqcst_fence_for_loom();
        let mut registered = lock(&self.registered);
        let fits = self
            .limit
            .is_none_or(|limit| self.queued.load(Ordering::SeqCst) + count <= limit);
        if fits || self.closed.load(Ordering::SeqCst) {
            drop(registered);
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Some(waiter);
        }
        registered.push(waiter);
        None
    }

    /// Gives back the room of `count` items; returns the registered waiters, to be woken.
    pub fn release(&self, count: usize) -> Vec<W> {
        if count == 0 {
            return Vec::new();
        }
        self.queued.fetch_sub(count, Ordering::SeqCst);
        self.wake_all()
    }

    /// Refuses every later blocking admission and wakes all waiters, so none waits forever.
    pub fn close(&self) -> Vec<W> {
        self.closed.store(true, Ordering::SeqCst);
        self.wake_all()
    }

    fn wake_all(&self) -> Vec<W> {
        crate::sync::seqcst_fence_for_loom();
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return Vec::new();
        }
        let mut registered = lock(&self.registered);
        self.room.notify_all();
        let woken = std::mem::take(&mut *registered);
        self.waiting.fetch_sub(woken.len(), Ordering::SeqCst);
        woken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn unbounded_admits_everything() {
        let admission: Admission<()> = Admission::new(None);
        admission.try_admit(1_000_000).unwrap();
        assert_eq!(admission.queued(), 1_000_000);
        assert!(admission.release(1_000_000).is_empty());
        assert_eq!(admission.queued(), 0);
    }

    #[test]
    fn a_call_is_admitted_whole_or_not_at_all() {
        let admission: Admission<()> = Admission::new(Some(10));
        assert_eq!(admission.try_admit(8), Ok(0));
        assert_eq!(
            admission.try_admit(3),
            Err(Refusal::Full {
                queued: 8,
                count: 3,
                limit: 10
            })
        );
        assert_eq!(admission.queued(), 8);
        assert_eq!(admission.try_admit(2), Ok(8));
        assert_eq!(
            admission.try_admit(11),
            Err(Refusal::TooLarge {
                count: 11,
                limit: 10
            })
        );
    }

    #[test]
    fn a_blocked_thread_gets_in_when_room_frees() {
        let admission: Arc<Admission<()>> = Arc::new(Admission::new(Some(4)));
        admission.try_admit(4).unwrap();
        let blocked = {
            let admission = Arc::clone(&admission);
            thread::spawn(move || admission.admit_blocking(3, None))
        };
        thread::sleep(Duration::from_millis(20));
        admission.release(2);
        assert_eq!(admission.queued(), 2);
        admission.release(1);
        assert_eq!(blocked.join().unwrap(), Ok(Some(1)));
        assert_eq!(admission.queued(), 4);
    }

    #[test]
    fn a_blocked_thread_gives_up_at_its_deadline_and_on_close() {
        let admission: Arc<Admission<()>> = Arc::new(Admission::new(Some(1)));
        admission.try_admit(1).unwrap();
        let until = Instant::now() + Duration::from_millis(20);
        assert_eq!(admission.admit_blocking(1, Some(until)), Ok(None));
        assert!(Instant::now() >= until);
        let blocked = {
            let admission = Arc::clone(&admission);
            thread::spawn(move || admission.admit_blocking(1, None))
        };
        thread::sleep(Duration::from_millis(20));
        admission.close();
        assert_eq!(blocked.join().unwrap(), Err(Refusal::Closed));
        assert_eq!(admission.queued(), 1);
    }

    #[test]
    fn registered_waiters_come_back_on_release_or_at_once_if_room() {
        let admission: Admission<&str> = Admission::new(Some(2));
        assert_eq!(admission.register(2, "fits"), Some("fits"));
        admission.try_admit(2).unwrap();
        assert_eq!(admission.register(1, "a"), None);
        assert_eq!(admission.register(2, "b"), None);
        assert_eq!(admission.release(1), vec!["a", "b"]);
        assert!(admission.release(1).is_empty());
        admission.try_admit(2).unwrap();
        assert_eq!(admission.register(1, "c"), None);
        assert_eq!(admission.close(), vec!["c"]);
        assert_eq!(admission.register(1, "late"), Some("late"));
    }

    #[test]
    fn contended_admission_never_exceeds_the_limit() {
        let admission: Arc<Admission<()>> = Arc::new(Admission::new(Some(5)));
        let peak = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (admission, peak) = (Arc::clone(&admission), Arc::clone(&peak));
                thread::spawn(move || {
                    for i in 0..2_000 {
                        let count = 1 + i % 3;
                        assert!(matches!(admission.admit_blocking(count, None), Ok(Some(_))));
                        peak.fetch_max(admission.queued(), Ordering::SeqCst);
                        admission.release(count);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 5);
        assert_eq!(admission.queued(), 0);
    }
}
