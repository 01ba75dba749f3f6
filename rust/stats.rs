//! Running statistics of a processor: counters and latency histograms cheap enough to update
//! on every batch.

use std::time::Duration;

use crate::rules::DispatchReason;

/// A log-linear histogram of durations: each power of two of nanoseconds is split into
/// `SUB_BUCKETS` equal parts, so a percentile is off by at most 1/`SUB_BUCKETS` (12.5%).
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
    sum: Duration,
}

const SUB_BUCKET_BITS: u32 = 3;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
// 2^44 ns is about 4.9 hours; anything from 2^45 ns on lands in the last bucket.
const MAX_EXPONENT: u32 = 44;
const BUCKETS: usize = ((MAX_EXPONENT - SUB_BUCKET_BITS + 2) as u64 * SUB_BUCKETS) as usize;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: Duration::ZERO,
        }
    }
}

impl LatencyHistogram {
    fn bucket_of(nanos: u64) -> usize {
        if nanos < SUB_BUCKETS {
            return nanos as usize;
        }
        let exponent = 63 - nanos.leading_zeros();
        if exponent > MAX_EXPONENT {
            return BUCKETS - 1;
        }
        let shift = exponent - SUB_BUCKET_BITS;
        let sub = (nanos >> shift) & (SUB_BUCKETS - 1);
        ((exponent - SUB_BUCKET_BITS + 1) as u64 * SUB_BUCKETS + sub) as usize
    }

    /// The upper edge of a bucket, so a reported percentile never understates.
    fn upper_bound_of(bucket: usize) -> u64 {
        let bucket = bucket as u64;
        if bucket < SUB_BUCKETS {
            return bucket;
        }
        let shift = bucket / SUB_BUCKETS - 1;
        let sub = bucket % SUB_BUCKETS;
        ((SUB_BUCKETS + sub + 1) << shift) - 1
    }

    pub fn record(&mut self, value: Duration) {
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        let bucket = Self::bucket_of(nanos);
        self.counts[bucket] += 1;
        self.total += 1;
        self.sum = self.sum.saturating_add(value);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// How many recorded values were at most each of `bounds` (ascending), as a metrics system's
    /// cumulative buckets want them. A value counts under a bound when its whole bucket lies
    /// below it, so a count is exact at bucket edges and at most 12.5% off in between.
    pub fn cumulative_counts(&self, bounds: &[Duration]) -> Vec<u64> {
        let mut counts = Vec::with_capacity(bounds.len());
        let mut bucket = 0;
        let mut seen = 0;
        for bound in bounds {
            let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
            while bucket < self.counts.len() && Self::upper_bound_of(bucket) <= nanos {
                seen += self.counts[bucket];
                bucket += 1;
            }
            counts.push(seen);
        }
        counts
    }

    /// The `q`-quantile (0.0..=1.0), or zero when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Duration::from_nanos(Self::upper_bound_of(bucket));
            }
        }
        Duration::from_nanos(Self::upper_bound_of(self.counts.len() - 1))
    }
}

/// Why items ended without a result from the user function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unserved {
    /// The user function raised for their batch (or returned a malformed output).
    Failed,
    /// Their caller's `timeout` passed first.
    TimedOut,
    /// Their caller was cancelled or interrupted.
    Cancelled,
    /// The queue refused them: full, or an item over the token budget.
    Rejected,
}

/// Everything a processor reports about its past work.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub total_items: u64,
    pub total_batches: u64,
    pub total_batch_time: Duration,
    pub queue_wait: LatencyHistogram,
    pub batch_time: LatencyHistogram,
    pub full_batches: u64,
    pub deadline_batches: u64,
    pub drain_batches: u64,
    pub idle_batches: u64,
    pub adaptive_batches: u64,
    /// Positions of padded batches, and how many of them held real data.
    pub padded_positions: u64,
    pub real_positions: u64,
    /// `batch_sizes[n]` counts the batches of `n` items.
    pub batch_sizes: Vec<u64>,
    pub items_failed: u64,
    pub items_timed_out: u64,
    pub items_cancelled: u64,
    pub items_rejected: u64,
}

impl Stats {
    pub fn record_dispatch(&mut self, reason: DispatchReason) {
        match reason {
            DispatchReason::Full => self.full_batches += 1,
            DispatchReason::Deadline => self.deadline_batches += 1,
            DispatchReason::Drain => self.drain_batches += 1,
            DispatchReason::Idle => self.idle_batches += 1,
            DispatchReason::Adaptive => self.adaptive_batches += 1,
        }
    }

    /// How many batches left for `reason`.
    pub fn dispatched(&self, reason: DispatchReason) -> u64 {
        match reason {
            DispatchReason::Full => self.full_batches,
            DispatchReason::Deadline => self.deadline_batches,
            DispatchReason::Drain => self.drain_batches,
            DispatchReason::Idle => self.idle_batches,
            DispatchReason::Adaptive => self.adaptive_batches,
        }
    }

    pub fn record_batch(&mut self, items: usize, elapsed: Duration) {
        self.total_items += items as u64;
        self.total_batches += 1;
        self.total_batch_time += elapsed;
        self.batch_time.record(elapsed);
        if self.batch_sizes.len() <= items {
            self.batch_sizes.resize(items + 1, 0);
        }
        self.batch_sizes[items] += 1;
    }

    pub fn record_unserved(&mut self, why: Unserved, items: usize) {
        let counter = match why {
            Unserved::Failed => &mut self.items_failed,
            Unserved::TimedOut => &mut self.items_timed_out,
            Unserved::Cancelled => &mut self.items_cancelled,
            Unserved::Rejected => &mut self.items_rejected,
        };
        *counter += items as u64;
    }

    pub fn record_padding(&mut self, real: u64, padded: u64) {
        self.real_positions += real;
        self.padded_positions += padded;
    }

    /// The share of padded positions that held padding rather than data.
    pub fn padded_fraction(&self) -> f64 {
        if self.padded_positions == 0 {
            0.0
        } else {
            1.0 - self.real_positions as f64 / self.padded_positions as f64
        }
    }

    pub fn mean_batch_size(&self) -> f64 {
        if self.total_batches == 0 {
            0.0
        } else {
            self.total_items as f64 / self.total_batches as f64
        }
    }

    pub fn mean_batch_time(&self) -> Duration {
        if self.total_batches == 0 {
            Duration::ZERO
        } else {
            self.total_batch_time.div_f64(self.total_batches as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bound_their_values() {
        let mut previous = 0;
        for nanos in (0..5000u64).chain([1 << 20, (1 << 20) + 12345, 7_000_000_000]) {
            let bucket = LatencyHistogram::bucket_of(nanos);
            assert!(
                bucket >= previous || nanos > 5000,
                "bucket went down at {nanos}"
            );
            previous = bucket;
            let upper = LatencyHistogram::upper_bound_of(bucket);
            assert!(upper >= nanos, "{nanos} above its bucket's bound {upper}");
            assert!(
                upper as f64 <= nanos as f64 * 1.125 + 1.0,
                "{nanos} -> {upper}"
            );
        }
    }

    #[test]
    fn durations_beyond_the_range_land_in_the_last_bucket() {
        let last = BUCKETS - 1;
        let top = LatencyHistogram::bucket_of((1 << 45) - 1);
        assert_eq!(
            top, last,
            "the largest value in range fills the last bucket"
        );
        for nanos in [1u64 << 45, (1 << 45) + 12345, 1 << 50, u64::MAX] {
            assert_eq!(LatencyHistogram::bucket_of(nanos), last, "{nanos}");
        }
        let mut histogram = LatencyHistogram::default();
        histogram.record(Duration::MAX);
        assert_eq!(histogram.count(), 1);
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut histogram = LatencyHistogram::default();
        assert_eq!(histogram.quantile(0.5), Duration::ZERO);
        for micros in 1..=100u64 {
            histogram.record(Duration::from_micros(micros));
        }
        assert_eq!(histogram.count(), 100);
        let p50 = histogram.quantile(0.5).as_secs_f64() * 1e6;
        let p99 = histogram.quantile(0.99).as_secs_f64() * 1e6;
        assert!((50.0..=50.0 * 1.125).contains(&p50), "p50 {p50}");
        assert!((99.0..=99.0 * 1.125).contains(&p99), "p99 {p99}");
        assert_eq!(histogram.sum(), Duration::from_micros(5050));
        let bounds = [0, 10, 50, 1000].map(Duration::from_micros);
        let cumulative = histogram.cumulative_counts(&bounds);
        // 10 µs and 50 µs are not bucket edges: the values in their buckets count above them.
        assert_eq!(cumulative[0], 0);
        assert!((9..=10).contains(&cumulative[1]), "{cumulative:?}");
        assert!((44..=50).contains(&cumulative[2]), "{cumulative:?}");
        assert_eq!(cumulative[3], 100);
    }

    #[test]
    fn batch_means() {
        let mut stats = Stats::default();
        assert_eq!(stats.mean_batch_size(), 0.0);
        stats.record_batch(4, Duration::from_millis(2));
        stats.record_batch(2, Duration::from_millis(4));
        stats.record_dispatch(DispatchReason::Full);
        assert_eq!(stats.mean_batch_size(), 3.0);
        assert_eq!(stats.mean_batch_time(), Duration::from_millis(3));
        assert_eq!(stats.full_batches, 1);
        assert_eq!(stats.padded_fraction(), 0.0);
        stats.record_padding(30, 40);
        assert!((stats.padded_fraction() - 0.25).abs() < 1e-12);
        assert_eq!(stats.batch_sizes, vec![0, 0, 1, 0, 1]);
        stats.record_unserved(Unserved::TimedOut, 3);
        stats.record_unserved(Unserved::Rejected, 2);
        assert_eq!((stats.items_timed_out, stats.items_rejected), (3, 2));
        assert_eq!((stats.items_failed, stats.items_cancelled), (0, 0));
    }

    #[test]
    fn every_dispatch_reason_has_its_own_counter_and_name() {
        let mut stats = Stats::default();
        for (times, reason) in DispatchReason::ALL.iter().enumerate() {
            for _ in 0..=times {
                stats.record_dispatch(*reason);
            }
        }
        let counts: Vec<u64> = DispatchReason::ALL
            .iter()
            .map(|&reason| stats.dispatched(reason))
            .collect();
        assert_eq!(counts, [1, 2, 3, 4, 5]);
        let names: Vec<&str> = DispatchReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["full", "deadline", "drain", "idle", "adaptive"]);
    }
}
