//! What timed batches teach a scheduler about their cost.
//!
//! Adaptive dispatch reads the batch time against its size ([`CostModel`]). Length-aware packing
//! reads what padding costs ([`PaddingCostModel`]): a batch of `n` items padded to length `l`
//! takes about `a + b·n + c·n·l`. The fixed cost `a` is paid once per batch and `c` per padded
//! position, so one batch of mixed lengths can take longer than two of similar lengths, and
//! length-aware packing then sends the short items first, apart from the long ones.

use std::time::Duration;

use crate::adaptive::{fade_in, CostModel};
use crate::policy::BatchPolicy;

/// The learned costs a scheduler keeps, each fed only while the policy reads it.
#[derive(Clone, Debug, Default)]
pub struct BatchCosts {
    pub by_size: CostModel,
    pub by_padding: PaddingCostModel,
}

impl BatchCosts {
    /// Learns from a batch of `items` that held `padded` positions (items times the longest
    /// length) and took `elapsed`.
    pub fn observe(
        &mut self,
        policy: &BatchPolicy,
        items: usize,
        padded: usize,
        elapsed: Duration,
    ) {
        if policy.adaptive {
            self.by_size.observe(items, elapsed);
        }
        if policy.packing.sort_by_length {
            self.by_padding.observe(items, padded, elapsed);
        }
    }

    /// Whether polling under `policy` reads these costs at all.
    pub fn read_by(policy: &BatchPolicy) -> bool {
        policy.adaptive || policy.packing.sort_by_length
    }
}

/// Running least-squares fit of batch time against items and padded positions, forgetting old
/// batches as [`CostModel`] does (with the same [`fade_in`]).
#[derive(Clone, Debug, Default)]
pub struct PaddingCostModel {
    weight: f64,
    sum_n: f64,
    sum_p: f64,
    sum_t: f64,
    sum_nn: f64,
    sum_pp: f64,
    sum_np: f64,
    sum_nt: f64,
    sum_pt: f64,
}

/// Batches timed before the fit is trusted; until then packing never shrinks a batch.
const MIN_BATCHES: f64 = 8.0;
/// Items and padded positions this correlated cannot be told apart; the fit then charges the
/// per-item cost to the batch, which overstates the fixed cost and so splits batches less.
const MAX_CORRELATION_SQUARED: f64 = 0.98;

/// The part of a batch's cost that depends on how items are grouped, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaddingCost {
    /// Paid once per batch, however many items it holds.
    pub per_batch: f64,
    /// Paid per padded position (items times the longest length).
    pub per_position: f64,
}

impl PaddingCostModel {
    pub fn observe(&mut self, items: usize, padded: usize, elapsed: Duration) {
        let (n, p, t) = (items as f64, padded as f64, elapsed.as_secs_f64());
        fade_in(&mut self.weight, 1.0);
        fade_in(&mut self.sum_n, n);
        fade_in(&mut self.sum_p, p);
        fade_in(&mut self.sum_t, t);
        fade_in(&mut self.sum_nn, n * n);
        fade_in(&mut self.sum_pp, p * p);
        fade_in(&mut self.sum_np, n * p);
        fade_in(&mut self.sum_nt, n * t);
        fade_in(&mut self.sum_pt, p * t);
    }

    /// The fitted cost, or `None` while there is too little to go on or the batches show no
    /// cost for padding (then grouping can only follow lengths, not shrink batches).
    pub fn fit(&self) -> Option<PaddingCost> {
        if self.weight < MIN_BATCHES {
            return None;
        }
        let w = self.weight;
        let (mean_n, mean_p, mean_t) = (self.sum_n / w, self.sum_p / w, self.sum_t / w);
        let var_n = self.sum_nn / w - mean_n * mean_n;
        let var_p = self.sum_pp / w - mean_p * mean_p;
        let cov_np = self.sum_np / w - mean_n * mean_p;
        let cov_nt = self.sum_nt / w - mean_n * mean_t;
        let cov_pt = self.sum_pt / w - mean_p * mean_t;
        if var_p <= f64::EPSILON * mean_p * mean_p {
            return None;
        }
        // Rounding leaves a tiny slope where time does not grow with padding at all.
        let pays_for_padding = |per_position: f64| per_position * mean_p > 1e-6 * mean_t;
        let det = var_n * var_p - cov_np * cov_np;
        let separable = var_n > f64::EPSILON * mean_n * mean_n
            && det > (1.0 - MAX_CORRELATION_SQUARED) * var_n * var_p;
        if separable {
            let per_item = (cov_nt * var_p - cov_pt * cov_np) / det;
            let per_position = (cov_pt * var_n - cov_nt * cov_np) / det;
            let per_batch = mean_t - per_item * mean_n - per_position * mean_p;
            if per_item >= 0.0 && pays_for_padding(per_position) && per_batch > 0.0 {
                return Some(PaddingCost {
                    per_batch,
                    per_position,
                });
            }
        }
        let per_position = cov_pt / var_p;
        // Time that grows faster than padding (attention, caches) leaves a negative intercept:
        // padding then explains the whole cost, and the smaller batches this sends teach the fit
        // their fixed cost.
        let per_batch = (mean_t - per_position * mean_p).max(0.0);
        pays_for_padding(per_position).then_some(PaddingCost {
            per_batch,
            per_position,
        })
    }
}

impl PaddingCost {
    /// Of a batch that grows one item at a time, given as its longest length after each item
    /// joined, how many items to send now. Sending the first `count` and leaving the
    /// rest for a batch of their own saves the first items' padding up to the full batch's
    /// longest length, and costs one more batch: a cut is made only where it saves more than
    /// that, assuming the rest find no shorter company, so that with few items queued no batch
    /// is split at a loss. The per-item cost is the same either way, so it drops out; ties go
    /// to the bigger batch. 0 for no growth.
    pub fn best_count(&self, growth: impl ExactSizeIterator<Item = usize> + Clone) -> usize {
        let (all, Some(longest)) = (growth.len(), growth.clone().last()) else {
            return 0;
        };
        let mut best = (self.per_batch, all);
        for (count, shorter) in (1..).zip(growth) {
            let saved = self.per_position * (count * (longest - shorter)) as f64;
            if saved > best.0 {
                best = (saved, count);
            }
        }
        best.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: f64 = 0.012;
    const B: f64 = 0.001;
    const C: f64 = 0.0002;

    fn observed(batches: &[(usize, usize)]) -> PaddingCostModel {
        let mut model = PaddingCostModel::default();
        for &(items, longest) in batches {
            let padded = items * longest;
            let seconds = A + B * items as f64 + C * padded as f64;
            model.observe(items, padded, Duration::from_secs_f64(seconds));
        }
        model
    }

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= 1e-6 * expected.abs().max(1e-9)
    }

    #[test]
    fn the_fit_recovers_the_fixed_and_padding_costs() {
        let batches: Vec<_> = [1, 4, 8, 16, 32]
            .iter()
            .flat_map(|&n| [10, 30, 60].map(|l| (n, l)))
            .collect();
        let cost = observed(&batches).fit().unwrap();
        assert!(close(cost.per_batch, A), "{cost:?}");
        assert!(close(cost.per_position, C), "{cost:?}");
    }

    #[test]
    fn too_few_batches_or_one_padded_size_give_no_fit() {
        assert_eq!(observed(&[(8, 10), (16, 20), (32, 30)]).fit(), None);
        assert_eq!(observed(&[(8, 10); 20]).fit(), None);
    }

    #[test]
    fn full_batches_alone_charge_the_per_item_cost_to_the_batch() {
        // Always 32 items: the per-item cost cannot be told from the fixed one.
        let batches: Vec<_> = (0..20).map(|i| (32, 10 + i * 3)).collect();
        let cost = observed(&batches).fit().unwrap();
        assert!(close(cost.per_batch, A + 32.0 * B), "{cost:?}");
        assert!(close(cost.per_position, C), "{cost:?}");
    }

    #[test]
    fn time_that_does_not_grow_with_padding_gives_no_fit() {
        let mut model = PaddingCostModel::default();
        for i in 0..20 {
            model.observe(8 + i % 4, 100 + 37 * i, Duration::from_millis(10));
        }
        assert_eq!(model.fit(), None);
    }

    #[test]
    fn time_that_grows_faster_than_padding_is_all_padding_cost() {
        // Full batches whose time grows with the square of their padding: a straight line
        // through them crosses zero time at a positive size.
        let mut model = PaddingCostModel::default();
        for longest in (20..60).step_by(4) {
            let padded = 32 * longest;
            let seconds = 1e-7 * (padded * padded) as f64;
            model.observe(32, padded, Duration::from_secs_f64(seconds));
        }
        let cost = model.fit().unwrap();
        assert_eq!(cost.per_batch, 0.0);
        assert!(cost.per_position > 0.0, "{cost:?}");
    }

    #[test]
    fn the_fit_forgets_an_old_speed() {
        let mut model = observed(&[(8, 10), (16, 20), (32, 30), (4, 60), (12, 15)].repeat(4));
        for (items, longest) in [(8, 10), (16, 20), (32, 30), (4, 60), (12, 15)].repeat(40) {
            let padded = items * longest;
            let seconds = 0.002 + 0.0001 * padded as f64;
            model.observe(items, padded, Duration::from_secs_f64(seconds));
        }
        let cost = model.fit().unwrap();
        assert!((cost.per_batch - 0.002).abs() < 1e-4, "{cost:?}");
        assert!((cost.per_position - 0.0001).abs() < 1e-5, "{cost:?}");
    }

    #[test]
    fn the_best_count_weighs_the_fixed_cost_against_padding() {
        let cost = PaddingCost {
            per_batch: 0.012,
            per_position: 0.0002,
        };
        // Lengths creeping from 21 to 30: no cut saves a batch's worth of padding.
        let even: Vec<_> = (1..=32).map(|n| (20 + n).min(30)).collect();
        assert_eq!(cost.best_count(even.iter().copied()), 32);
        // A jump from 12 to 60 words after 10 items: stop before it (saves 96 ms of padding).
        let jump: Vec<_> = (1..=32).map(|n| if n <= 10 { 12 } else { 60 }).collect();
        assert_eq!(cost.best_count(jump.iter().copied()), 10);
        // Padding that cheap saves less than the second batch costs.
        let cheap_padding = PaddingCost {
            per_position: 0.00001,
            ..cost
        };
        assert_eq!(cheap_padding.best_count(jump.iter().copied()), 32);
        assert_eq!(cost.best_count([].into_iter()), 0);
    }

    #[test]
    fn a_short_queue_is_not_split_unless_the_padding_saved_pays_for_a_batch() {
        let cost = PaddingCost {
            per_batch: 0.012,
            per_position: 0.0002,
        };
        // Alone, the 10-word item would cost 12 + 2 ms and each of the pair 6 + 10 ms; but
        // the 50-word item would then pay 12 ms alone, for 8 ms of padding saved.
        assert_eq!(cost.best_count([10, 50].into_iter()), 2);
        // Against 100 words, the 18 ms saved pays for the second batch.
        assert_eq!(cost.best_count([10, 100].into_iter()), 1);
        // Three short items before a long one: 3 x 40 positions saved.
        assert_eq!(cost.best_count([10, 10, 10, 50].into_iter()), 3);
    }
}
