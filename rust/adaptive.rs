//! Adaptive dispatch (`timeout_ms="auto"`): wait for a batch to fill only while waiting pays.
//!
//! The scheduler learns two things as it runs: the cost of a batch, `time(n) ≈ a + b·n`, from
//! the batches it has timed, and the arrival rate `λ` of items. Suppose the worker is free, `n`
//! items are queued and the oldest has waited `w`. Dispatching now makes the items arriving
//! next wait for this batch to finish before theirs can start; waiting `dt` longer lets the
//! `λ·dt` items arriving meanwhile join it, sparing each about `time(n) - w` (the batch they
//! would have waited for, less the wait they have already been spared), while the `n` queued
//! items each lose `dt`. So waiting pays while `λ·(time(n) - w) > n`. As the wait goes on, `w`
//! grows and so does `n`, and the wait ends where the two meet: with the worker idle and one
//! item queued, after about `(λ·a - 1) / 2λ`. With sparse traffic (`λ·time(1) ≤ 1`) a lone
//! request leaves at once; the deadline (`max_timeout_ms`) still bounds every wait.

use std::time::{Duration, Instant};

/// Running least-squares fit of batch time against batch size, forgetting old batches so that
/// it follows a model whose speed changes (warm-up, another tenant on the GPU).
#[derive(Clone, Debug, Default)]
pub struct CostModel {
    weight: f64,
    sum_n: f64,
    sum_t: f64,
    sum_nn: f64,
    sum_nt: f64,
}

/// Each new batch weighs as much as the last `1 / (1 - COST_MEMORY)` batches together.
const COST_MEMORY: f64 = 0.95;

/// Adds `value` to a running sum in which older batches fade by [`COST_MEMORY`] each time; the
/// cost fits here and in [`crate::costs`] keep their sums this way.
pub(crate) fn fade_in(sum: &mut f64, value: f64) {
    *sum = *sum * COST_MEMORY + value;
}
/// Batches timed before the fit is trusted; until then the processor dispatches at once.
const MIN_BATCHES: f64 = 3.0;

impl CostModel {
    pub fn observe(&mut self, items: usize, elapsed: Duration) {
        let (n, t) = (items as f64, elapsed.as_secs_f64());
        fade_in(&mut self.weight, 1.0);
        fade_in(&mut self.sum_n, n);
        fade_in(&mut self.sum_t, t);
        fade_in(&mut self.sum_nn, n * n);
        fade_in(&mut self.sum_nt, n * t);
    }

    /// The fitted `(a, b)` in seconds and seconds per item, both at least zero; `None` until
    /// enough batches were seen. Batches all of one size cannot tell `a` from `b·n`: then the
    /// whole mean time counts as fixed cost, which predicts that size right.
    pub fn fit(&self) -> Option<(f64, f64)> {
        if self.weight < MIN_BATCHES {
            return None;
        }
        let mean_n = self.sum_n / self.weight;
        let mean_t = self.sum_t / self.weight;
        let var_n = self.sum_nn / self.weight - mean_n * mean_n;
        let cov = self.sum_nt / self.weight - mean_n * mean_t;
        let slope = if var_n > 1e-9 { cov / var_n } else { 0.0 };
        let intercept = mean_t - slope * mean_n;
        Some(if slope < 0.0 {
            (mean_t, 0.0)
        } else if intercept < 0.0 {
            (0.0, mean_t / mean_n.max(1.0))
        } else {
            (intercept, slope)
        })
    }
}

/// Items per second, averaged with exponentially decaying weights over about `window`.
#[derive(Clone, Debug)]
pub struct ArrivalRate {
    window: f64,
    // Items seen, each weighted by e^(-age / window), as of `last`.
    weight: f64,
    last: Option<Instant>,
}

/// Long enough to average a few arrivals at tens per second, short enough to follow a burst.
pub const RATE_WINDOW: Duration = Duration::from_millis(250);

impl Default for ArrivalRate {
    fn default() -> Self {
        Self::new(RATE_WINDOW)
    }
}

impl ArrivalRate {
    pub fn new(window: Duration) -> Self {
        Self {
            window: window.as_secs_f64(),
            weight: 0.0,
            last: None,
        }
    }

    fn decayed(&self, at: Instant) -> f64 {
        match self.last {
            None => 0.0,
            Some(last) => {
                let age = at.saturating_duration_since(last).as_secs_f64();
                self.weight * (-age / self.window).exp()
            }
        }
    }

    pub fn observe(&mut self, at: Instant, items: usize) {
        // Arrivals may be seen slightly out of order; never move the clock back.
        let at = self.last.map_or(at, |last| last.max(at));
        self.weight = self.decayed(at) + items as f64;
        self.last = Some(at);
    }

    pub fn per_second(&self, now: Instant) -> f64 {
        self.decayed(now) / self.window
    }
}

/// What adaptive dispatch makes of the queue now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Advice {
    /// Waiting does not pay for a lone item: traffic is sparse.
    DispatchIdle,
    /// Waiting has stopped paying.
    DispatchNow,
    /// Waiting pays until about this instant, when `target` items should be queued.
    WaitUntil { at: Instant, target: usize },
}

/// What a processor has learned so far.
#[derive(Clone, Copy, Debug)]
pub struct Learned<'a> {
    pub arrivals: &'a ArrivalRate,
    pub cost: &'a CostModel,
}

impl Learned<'_> {
    /// Advice for `queued` items (at least one), the oldest of which has waited `waited`, at
    /// `now`, for a worker that is free.
    pub fn advise(
        &self,
        queued: usize,
        waited: Duration,
        now: Instant,
        batch_size: usize,
    ) -> Advice {
        let Some((a, b)) = self.cost.fit() else {
            return Advice::DispatchIdle;
        };
        let rate = self.arrivals.per_second(now);
        let n = queued as f64;
        if rate * (a + b) <= 1.0 {
            // Not even one more item is expected during a lone item's batch.
            return Advice::DispatchIdle;
        }
        // Waiting `x` more pays while rate·(a + b·(n + rate·x) - (waited + x)) > n + rate·x.
        let gain = rate * (a + b * n - waited.as_secs_f64()) - n;
        let slope = rate * (2.0 - rate * b);
        if gain <= 0.0 || queued >= batch_size {
            return Advice::DispatchNow;
        }
        // Past a full batch waiting cannot grow the batch; with `rate·b ≥ 1` items arrive faster
        // than batches take them, so only full batches keep up.
        let until_full = (batch_size as f64 - n) / rate;
        let wait = if slope > 0.0 {
            (gain / slope).min(until_full)
        } else {
            until_full
        };
        let expected = n + rate * wait;
        Advice::WaitUntil {
            at: now + Duration::from_secs_f64(wait),
            target: (expected.ceil() as usize).clamp(queued + 1, batch_size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(a: f64, b: f64, sizes: &[usize]) -> CostModel {
        let mut cost = CostModel::default();
        for &n in sizes {
            cost.observe(n, Duration::from_secs_f64(a + b * n as f64));
        }
        cost
    }

    #[test]
    fn the_fit_recovers_a_linear_cost_curve() {
        let cost = model(0.010, 0.0005, &[1, 4, 8, 16, 32, 2, 7]);
        let (a, b) = cost.fit().unwrap();
        assert!((a - 0.010).abs() < 1e-9, "a = {a}");
        assert!((b - 0.0005).abs() < 1e-9, "b = {b}");
    }

    #[test]
    fn too_few_batches_give_no_fit_and_one_size_gives_a_flat_one() {
        assert!(model(0.01, 0.0, &[4, 4]).fit().is_none());
        let (a, b) = model(0.002, 0.001, &[8, 8, 8, 8]).fit().unwrap();
        assert!((a - 0.010).abs() < 1e-9 && b == 0.0, "({a}, {b})");
    }

    #[test]
    fn the_fit_forgets_an_old_speed() {
        let mut cost = model(0.050, 0.0, &[1, 2, 3, 4, 5]);
        for n in (1..=5).cycle().take(200) {
            cost.observe(n, Duration::from_secs_f64(0.005));
        }
        let (a, _) = cost.fit().unwrap();
        assert!((a - 0.005).abs() < 1e-4, "a = {a}");
    }

    #[test]
    fn the_rate_follows_arrivals_and_decays_in_silence() {
        let start = Instant::now();
        let mut rate = ArrivalRate::new(Duration::from_millis(100));
        for i in 0..1000 {
            rate.observe(start + Duration::from_micros(i * 1000), 1);
        }
        let end = start + Duration::from_millis(1000);
        let busy = rate.per_second(end);
        assert!((900.0..1100.0).contains(&busy), "{busy}/s");
        let quiet = rate.per_second(end + Duration::from_millis(500));
        assert!(quiet < busy * 0.01, "{quiet}/s after silence");
    }

    #[test]
    fn advice_dispatches_sparse_traffic_at_once_and_waits_under_load() {
        let now = Instant::now();
        let mut arrivals = ArrivalRate::new(Duration::from_millis(100));
        let cost = model(0.010, 0.0, &[1, 2, 4, 8]);
        let sparse = Learned {
            arrivals: &arrivals,
            cost: &cost,
        };
        assert_eq!(
            sparse.advise(1, Duration::ZERO, now, 32),
            Advice::DispatchIdle
        );
        for i in 0..1000 {
            arrivals.observe(now + Duration::from_micros(i * 500), 1);
        }
        let learned = Learned {
            arrivals: &arrivals,
            cost: &cost,
        };
        let later = now + Duration::from_millis(500);
        // About 2 000 items/s and 10 ms a batch, one item just queued: waiting pays for about
        // (2000 × 0.010 - 1) / (2 × 2000) s, 4.75 ms, by when about 10 items are queued.
        let Advice::WaitUntil { at, target } = learned.advise(1, Duration::ZERO, later, 32) else {
            panic!("expected to wait");
        };
        let wait = at.duration_since(later).as_secs_f64();
        assert!((0.004..0.0055).contains(&wait), "waits {wait} s");
        assert!((9..=12).contains(&target), "target {target}");
        // Once the oldest item has waited that long, with that many queued, waiting stops.
        let waited = Duration::from_secs_f64(wait);
        assert_eq!(
            learned.advise(target, waited, later, 32),
            Advice::DispatchNow
        );
        // Items that already waited a whole batch time leave at once.
        assert_eq!(
            learned.advise(2, Duration::from_millis(10), later, 32),
            Advice::DispatchNow
        );
        assert_eq!(
            learned.advise(32, Duration::ZERO, later, 32),
            Advice::DispatchNow
        );
    }

    #[test]
    fn a_steep_cost_curve_waits_less() {
        let now = Instant::now();
        let mut arrivals = ArrivalRate::new(Duration::from_millis(100));
        for i in 0..1000 {
            arrivals.observe(now + Duration::from_micros(i * 500), 1);
        }
        let later = now + Duration::from_millis(500);
        let wait_for = |cost: &CostModel| match (Learned {
            arrivals: &arrivals,
            cost,
        })
        .advise(1, Duration::ZERO, later, 32)
        {
            Advice::WaitUntil { at, .. } => at.duration_since(later),
            _ => Duration::ZERO,
        };
        let flat = wait_for(&model(0.010, 0.0001, &[1, 4, 8, 16]));
        let steep = wait_for(&model(0.001, 0.0002, &[1, 4, 8, 16]));
        assert!(steep < flat, "steep {steep:?} flat {flat:?}");
        // Overloaded (2 000 items/s, 1 ms each): wait for a full batch, 31 more items.
        let overloaded = wait_for(&model(0.001, 0.001, &[1, 4, 8, 16]));
        let expected = Duration::from_secs_f64(31.0 / 2000.0);
        assert!(
            overloaded.abs_diff(expected) < Duration::from_millis(2),
            "{overloaded:?}"
        );
    }

    #[test]
    fn no_fit_yet_means_dispatch_at_once() {
        let learned = Learned {
            arrivals: &ArrivalRate::default(),
            cost: &CostModel::default(),
        };
        assert_eq!(
            learned.advise(3, Duration::ZERO, Instant::now(), 8),
            Advice::DispatchIdle
        );
    }
}
