//! Keeping deadlines on a machine whose timers fire late.
//!
//! A batch deadline is a latency promise, but a timed sleep ends when the kernel's timer fires,
//! which on a virtual machine can be well over 100 µs after the time asked for. The worker
//! therefore asks to wake a little early, by as much as its timed sleeps have lately been late,
//! and spins the rest of the way. The lateness is learnt from the worker's own sleeps, so on a
//! machine with prompt timers it asks for (almost) the deadline itself and hardly spins.

use std::time::{Duration, Instant};

/// The most a sleep is shortened: bounds the spin (and its CPU) whatever the machine does.
const MAX_EARLY: Duration = Duration::from_micros(500);
/// Weight of the newest observation in the running estimate, as a right shift: 1/8.
const NEWEST_WEIGHT_SHIFT: u32 = 3;

/// How late this thread's timed sleeps have been ending, as a running average.
#[derive(Debug, Default, Clone, Copy)]
pub struct LateTimer {
    lateness_nanos: u64,
}

impl LateTimer {
    /// When to ask a timed sleep to end so that it ends close to `deadline`.
    pub fn wake_at(&self, deadline: Instant) -> Instant {
        let early = Duration::from_nanos(self.lateness_nanos).min(MAX_EARLY);
        deadline.checked_sub(early).unwrap_or(deadline)
    }

    /// Records a timed sleep asked to end at `asked` that ended at `woke`. Call it only for
    /// sleeps that ran to their timeout, not those something woke earlier.
    pub fn observe(&mut self, asked: Instant, woke: Instant) {
        let late = u64::try_from(woke.saturating_duration_since(asked).as_nanos())
            .unwrap_or(u64::MAX)
            .min(MAX_EARLY.as_nanos() as u64 * 4);
        // The average moves by 1/8 of the difference each time: robust to a lone outlier.
        let kept = self.lateness_nanos - (self.lateness_nanos >> NEWEST_WEIGHT_SHIFT);
        self.lateness_nanos = kept + (late >> NEWEST_WEIGHT_SHIFT);
    }

    /// The current estimate.
    #[cfg(test)]
    pub fn lateness(&self) -> Duration {
        Duration::from_nanos(self.lateness_nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timer taught by `sleeps` sleeps asked to end at `start` that each ended `late` after.
    fn taught(late: Duration, sleeps: usize) -> (LateTimer, Instant) {
        let mut timer = LateTimer::default();
        let start = Instant::now();
        for _ in 0..sleeps {
            timer.observe(start, start + late);
        }
        (timer, start)
    }

    #[test]
    fn with_nothing_learnt_it_wakes_at_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(5);
        assert_eq!(LateTimer::default().wake_at(deadline), deadline);
    }

    #[test]
    fn learns_a_steady_lateness_and_wakes_that_much_early() {
        let (timer, start) = taught(Duration::from_micros(150), 100);
        let learnt = timer.lateness().as_micros();
        assert!((140..=150).contains(&learnt), "learnt {learnt} µs");
        let deadline = start + Duration::from_millis(5);
        let early = deadline - timer.wake_at(deadline);
        assert_eq!(early, timer.lateness());
    }

    #[test]
    fn one_outlier_moves_the_estimate_by_an_eighth_at_most() {
        let (mut timer, start) = taught(Duration::from_micros(100), 100);
        let before = timer.lateness();
        timer.observe(start, start + Duration::from_secs(1));
        let jump = timer.lateness() - before;
        // The sample is capped at 4 × MAX_EARLY (2 ms) and weighs 1/8.
        assert!(jump <= Duration::from_micros(250), "jumped {jump:?}");
    }

    #[test]
    fn never_wakes_more_than_max_early_before_the_deadline() {
        let (timer, start) = taught(Duration::from_millis(10), 200);
        let deadline = start + Duration::from_millis(20);
        assert_eq!(deadline - timer.wake_at(deadline), MAX_EARLY);
    }

    #[test]
    fn a_sleep_that_ended_on_time_or_early_counts_as_not_late() {
        let (mut timer, start) = taught(Duration::from_micros(200), 50);
        let before = timer.lateness();
        timer.observe(start + Duration::from_micros(10), start);
        assert!(timer.lateness() < before);
    }
}
