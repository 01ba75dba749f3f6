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
}

const SUB_BUCKET_BITS: u32 = 3;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
// 2^44 ns is about 4.9 hours; anything longer lands in the last bucket.
const MAX_EXPONENT: u32 = 44;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: vec![0; ((MAX_EXPONENT + 1) as usize) * SUB_BUCKETS as usize],
            total: 0,
        }
    }
}

impl LatencyHistogram {
    fn bucket_of(nanos: u64) -> usize {
        if nanos < SUB_BUCKETS {
            return nanos as usize;
        }
        let exponent = (63 - nanos.leading_zeros()).min(MAX_EXPONENT);
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
        let bucket = Self::bucket_of(nanos).min(self.counts.len() - 1);
        self.counts[bucket] += 1;
        self.total += 1;
    }

    pub fn count(&self) -> u64 {
        self.total
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
    /// Positions of padded batches, and how many of them held real data.
    pub padded_positions: u64,
    pub real_positions: u64,
}

impl Stats {
    pub fn record_dispatch(&mut self, reason: DispatchReason) {
        match reason {
            DispatchReason::Full => self.full_batches += 1,
            DispatchReason::Deadline => self.deadline_batches += 1,
            DispatchReason::Drain => self.drain_batches += 1,
        }
    }

    pub fn record_batch(&mut self, items: usize, elapsed: Duration) {
        self.total_items += items as u64;
        self.total_batches += 1;
        self.total_batch_time += elapsed;
        self.batch_time.record(elapsed);
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
            self.total_batch_time / self.total_batches as u32
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
    }
}
