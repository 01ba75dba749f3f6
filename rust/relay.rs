//! Waking a batch's blocked callers one after another rather than all at once.
//!
//! Every blocked Python caller needs the GIL to return. Woken together, the callers of a
//! batch all become runnable at once, queue on the GIL's mutex and condition variable, and
//! the kernel switches between them several times per call. Woken in turn (each caller, once
//! served, wakes the next), at most a couple of them are runnable at a time and most find the
//! GIL free when they reach it.
//!
//! The waker links the callers into a chain before waking the first one. A caller may be
//! served before its link is made (it found its outcome ready without sleeping); the link then
//! fails and the waker wakes the next caller itself, so no caller is ever left waiting on a
//! link that nobody will pass.
//!
//! A served caller that holds the GIL and wakes the next one at once makes it find the GIL
//! taken: it sleeps a second time. A caller that calls again straight away (a tight loop) can
//! instead [`Keeper::park`] the baton and hand it over just before it next releases the GIL. A
//! caller that does not come back would strand the chain, so the [`Keeper`]'s thread hands
//! over every parked baton that is still held after a short delay.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex, PoisonError};

#[derive(Debug)]
enum Baton<T> {
    /// The holder has not been served yet, and nobody is linked behind it.
    Unlinked,
    /// The holder wakes this one once served.
    Linked(T),
    /// The holder was served and has passed on whatever it held.
    Passed,
}

/// One caller's place in a wake-up chain.
#[derive(Debug)]
pub struct Relay<T> {
    baton: Mutex<Baton<T>>,
}

impl<T> Default for Relay<T> {
    fn default() -> Self {
        Self {
            baton: Mutex::new(Baton::Unlinked),
        }
    }
}

impl<T> Relay<T> {
    /// Asks this relay's holder to wake `next` once served. Gives `next` back when the holder
    /// was already served: the caller must then wake `next` itself.
    pub fn link(&self, next: T) -> Result<(), T> {
        let mut baton = self.baton.lock().unwrap_or_else(PoisonError::into_inner);
        match *baton {
            Baton::Unlinked => {
                *baton = Baton::Linked(next);
                Ok(())
            }
            Baton::Linked(_) | Baton::Passed => Err(next),
        }
    }

    /// Called by the holder once served: whom it must wake now, if anyone. Later links fail.
    pub fn pass(&self) -> Option<T> {
        let mut baton = self.baton.lock().unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *baton, Baton::Passed) {
            Baton::Linked(next) => Some(next),
            Baton::Unlinked | Baton::Passed => None,
        }
    }
}

/// Links `holders` into a chain in order, each relay reached through `relay_of`. Returns the
/// holders the waker must wake itself: the first, and any whose predecessor was already served.
pub fn chain<T: Clone>(holders: &[T], relay_of: impl Fn(&T) -> &Relay<T>) -> Vec<T> {
    let mut wake_now = Vec::new();
    let mut previous: Option<&T> = None;
    for holder in holders {
        let linked =
            previous.is_some_and(|previous| relay_of(previous).link(holder.clone()).is_ok());
        if !linked {
            wake_now.push(holder.clone());
        }
        previous = Some(holder);
    }
    wake_now
}

/// What a baton wakes.
pub trait Wake {
    fn wake(&self);

    /// Wakes a target whose baton its holder kept too long. The holder did not come back, so
    /// neither may the next ones in the chain: the target should hand on at once when served.
    fn wake_late(&self) {
        self.wake();
    }
}

/// A baton set aside by its holder, to be handed over by the holder or by the [`Keeper`],
/// whichever comes first. Both sides only ever `try_lock` it: a side that finds it locked
/// knows the other is handing it over, and nobody blocks on it (not even a forked child whose
/// keeper thread vanished while holding it).
pub struct Parked<T> {
    baton: std::sync::Mutex<Option<T>>,
}

impl<T: Wake> Parked<T> {
    /// Wakes the baton's target unless it was already woken.
    pub fn hand_over(&self) {
        if let Some(target) = self.take() {
            target.wake();
        }
    }

    fn hand_over_late(&self) {
        if let Some(target) = self.take() {
            target.wake_late();
        }
    }

    fn take(&self) -> Option<T> {
        match self.baton.try_lock() {
            Ok(mut baton) => baton.take(),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner().take(),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

struct Shelf<T> {
    /// Parked batons in order of their deadlines (every one gets the same delay).
    parked: VecDeque<(Instant, Arc<Parked<T>>)>,
}

/// Hands over the parked batons their holders kept too long, from a thread of its own.
pub struct Keeper<T> {
    shelf: Mutex<Shelf<T>>,
    /// Signalled when the first baton is parked on an empty shelf.
    restocked: Condvar,
    delay: Duration,
}

impl<T: Wake> Keeper<T> {
    /// A keeper that hands over batons held for longer than `delay`; start [`Keeper::run`] on
    /// a thread of its own.
    pub fn new(delay: Duration) -> Self {
        Self {
            shelf: Mutex::new(Shelf {
                parked: VecDeque::new(),
            }),
            restocked: Condvar::new(),
            delay,
        }
    }

    /// Sets `baton` aside for its holder to hand over (see [`Parked::hand_over`]).
    pub fn park(&self, baton: T) -> Arc<Parked<T>> {
        let parked = Arc::new(Parked {
            baton: std::sync::Mutex::new(Some(baton)),
        });
        let mut shelf = self.shelf.lock().unwrap_or_else(PoisonError::into_inner);
        let was_empty = shelf.parked.is_empty();
        shelf
            .parked
            .push_back((Instant::now() + self.delay, Arc::clone(&parked)));
        drop(shelf);
        if was_empty {
            self.restocked.notify_one();
        }
        parked
    }

    /// Hands over overdue batons, forever. Sleeps without a timeout while nothing is parked,
    /// and at least `delay` between rounds otherwise, so that a busy chain costs it one wake-up
    /// per `delay` at most.
    pub fn run(&self) -> ! {
        let mut shelf = self.shelf.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let now = Instant::now();
            let mut overdue = Vec::new();
            while let Some((deadline, _)) = shelf.parked.front() {
                if *deadline > now {
                    break;
                }
                overdue.extend(shelf.parked.pop_front().map(|(_, parked)| parked));
            }
            drop(shelf);
            for parked in overdue {
                parked.hand_over_late();
            }
            shelf = self.shelf.lock().unwrap_or_else(PoisonError::into_inner);
            shelf = match shelf.parked.front() {
                None => self
                    .restocked
                    .wait(shelf)
                    .unwrap_or_else(PoisonError::into_inner),
                Some((deadline, _)) => {
                    let sleep = deadline.saturating_duration_since(now).max(self.delay);
                    self.restocked
                        .wait_timeout(shelf, sleep)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Holder {
        id: usize,
        relay: Relay<Arc<Holder>>,
    }

    fn holders(n: usize) -> Vec<Arc<Holder>> {
        (0..n)
            .map(|id| {
                Arc::new(Holder {
                    id,
                    relay: Relay::default(),
                })
            })
            .collect()
    }

    fn ids(holders: &[Arc<Holder>]) -> Vec<usize> {
        holders.iter().map(|holder| holder.id).collect()
    }

    /// Wakes the chain's heads, then lets every woken holder pass on: the order of wake-ups.
    fn run_chain(holders: &[Arc<Holder>]) -> Vec<usize> {
        serve(chain(holders, |holder| &holder.relay))
    }

    /// Lets every woken holder pass on, starting from `woken`: the order of wake-ups.
    fn serve(mut woken: Vec<Arc<Holder>>) -> Vec<usize> {
        let mut order = Vec::new();
        while let Some(holder) = woken.pop() {
            order.push(holder.id);
            woken.extend(holder.relay.pass());
        }
        order
    }

    #[test]
    fn only_the_first_is_woken_by_the_waker_and_each_wakes_the_next() {
        let all = holders(4);
        let heads = chain(&all, |holder| &holder.relay);
        assert_eq!(ids(&heads), vec![0]);
    }

    #[test]
    fn every_holder_is_woken_exactly_once_in_order() {
        assert_eq!(run_chain(&holders(5)), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_holder_served_before_linking_leaves_its_successor_to_the_waker() {
        let all = holders(4);
        // Holder 1 found its outcome ready and left before the chain was made.
        assert_eq!(all[1].relay.pass().map(|h| h.id), None);
        let heads = chain(&all, |holder| &holder.relay);
        assert_eq!(ids(&heads), vec![0, 2]);
        // 0 wakes 1 (who already left: waking it again is harmless), 2 wakes 3.
        assert_eq!(all[0].relay.pass().map(|h| h.id), Some(1));
        assert_eq!(all[2].relay.pass().map(|h| h.id), Some(3));
        assert_eq!(all[3].relay.pass().map(|h| h.id), None);
    }

    #[test]
    fn a_relay_links_once_and_passes_once() {
        let all = holders(3);
        assert!(all[0].relay.link(Arc::clone(&all[1])).is_ok());
        assert_eq!(
            all[0].relay.link(Arc::clone(&all[2])).map_err(|h| h.id),
            Err(2)
        );
        assert_eq!(all[0].relay.pass().map(|h| h.id), Some(1));
        assert_eq!(all[0].relay.pass().map(|h| h.id), None);
        assert_eq!(
            all[0].relay.link(Arc::clone(&all[2])).map_err(|h| h.id),
            Err(2)
        );
    }

    #[test]
    fn an_empty_batch_wakes_nobody() {
        assert!(chain(&holders(0), |holder| &holder.relay).is_empty());
    }

    /// Counts its wake-ups and tells a waiting test about them.
    #[derive(Clone, Default)]
    struct Target(Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>);

    impl Wake for Target {
        fn wake(&self) {
            *self.0 .0.lock().unwrap() += 1;
            self.0 .1.notify_all();
        }

        fn wake_late(&self) {
            *self.0 .0.lock().unwrap() += 1000;
            self.0 .1.notify_all();
        }
    }

    impl Target {
        fn wakes(&self) -> usize {
            *self.0 .0.lock().unwrap()
        }

        fn wait_for_wake(&self, limit: Duration) -> bool {
            let guard = self.0 .0.lock().unwrap();
            let (guard, _) = self
                .0
                 .1
                .wait_timeout_while(guard, limit, |n| *n == 0)
                .unwrap();
            *guard > 0
        }
    }

    fn start_keeper(delay: Duration) -> Arc<Keeper<Target>> {
        let keeper = Arc::new(Keeper::new(delay));
        let running = Arc::clone(&keeper);
        std::thread::spawn(move || running.run());
        keeper
    }

    #[test]
    fn a_baton_handed_over_by_its_holder_wakes_once() {
        let keeper = start_keeper(Duration::from_millis(20));
        let target = Target::default();
        let parked = keeper.park(target.clone());
        parked.hand_over();
        assert_eq!(target.wakes(), 1);
        parked.hand_over();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(target.wakes(), 1, "the keeper must not wake it again");
    }

    #[test]
    fn the_keeper_hands_over_a_baton_its_holder_kept() {
        let keeper = start_keeper(Duration::from_millis(5));
        let target = Target::default();
        let parked_at = Instant::now();
        let _parked = keeper.park(target.clone());
        assert!(target.wait_for_wake(Duration::from_secs(10)));
        assert!(parked_at.elapsed() >= Duration::from_millis(5));
        assert_eq!(target.wakes(), 1000, "one late wake-up");
    }

    #[test]
    fn the_keeper_serves_batons_parked_after_it_went_idle() {
        let keeper = start_keeper(Duration::from_millis(1));
        for _ in 0..3 {
            let target = Target::default();
            let _parked = keeper.park(target.clone());
            assert!(target.wait_for_wake(Duration::from_secs(10)));
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
