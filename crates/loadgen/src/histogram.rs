//! A log-linear latency histogram in microseconds, in the spirit of HdrHistogram.
//!
//! Values below 128 µs are counted exactly. Above, every power of two is split into 128
//! equal buckets, so a bucket is at most 1/128 of its lower bound wide; a quantile is
//! reported as the middle of its bucket (clamped to the exact minimum and maximum), which
//! is within 0.4 % of the true sample value (the bound is ≤ 1 % with room to spare). The
//! maximum, minimum and sum (mean) are exact.
//!
//! The array has a fixed size (7,424 counters, about 58 KiB) covering every `u64`, so
//! recording never allocates and never saturates.

use std::time::Duration;

/// Bits of linear sub-buckets per power of two (128 sub-buckets).
const SUB_BITS: u32 = 7;
/// Sub-buckets per power of two.
const SUB_COUNT: u64 = 1 << SUB_BITS;
/// Number of buckets: exact values below `SUB_COUNT`, then `SUB_COUNT` per power of two up to
/// 2^63.
const BUCKETS: usize = ((64 - SUB_BITS + 1) as usize) * (SUB_COUNT as usize);

/// A histogram of durations with microsecond resolution and ≤ 1 % relative error.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.total)
            .field("min_us", &self.min())
            .field("max_us", &self.max)
            .finish_non_exhaustive()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The bucket index of a value.
fn index_of(value: u64) -> usize {
    if value < SUB_COUNT {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros(); // >= SUB_BITS
    let shift = exponent - SUB_BITS;
    let mantissa = value >> shift; // in [SUB_COUNT, 2 * SUB_COUNT)
    ((u64::from(shift) + 1) * SUB_COUNT + (mantissa - SUB_COUNT)) as usize
}

/// The lowest value and the width of bucket `index`.
fn bucket_range(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB_COUNT {
        return (index, 1);
    }
    let shift = index / SUB_COUNT - 1;
    let mantissa = index % SUB_COUNT + SUB_COUNT;
    (mantissa << shift, 1 << shift)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Records one value in microseconds.
    pub fn record_us(&mut self, value_us: u64) {
        self.counts[index_of(value_us)] += 1;
        self.total += 1;
        self.min = self.min.min(value_us);
        self.max = self.max.max(value_us);
        self.sum += u128::from(value_us);
    }

    /// Records a duration (truncated to whole microseconds).
    pub fn record(&mut self, value: Duration) {
        self.record_us(u64::try_from(value.as_micros()).unwrap_or(u64::MAX));
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value (exact), 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The smallest value (exact), 0 when empty.
    pub fn min(&self) -> u64 {
        if self.total == 0 { 0 } else { self.min }
    }

    /// The mean (exact up to rounding), 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at quantile `q` (0..=1) in microseconds: the smallest recorded value such
    /// that at least `q` of all values are at or below it, within the histogram's precision.
    /// 0 when empty; `q >= 1` gives the exact maximum.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        if q >= 1.0 {
            return self.max;
        }
        let rank = ((q.max(0.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = bucket_range(index);
                let middle = low + (width - 1) / 2;
                return middle.clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// How many values are at or above `threshold_us` (counted by bucket: exact below
    /// 128 µs, else within the bucket precision).
    pub fn count_at_least_us(&self, threshold_us: u64) -> u64 {
        let first = index_of(threshold_us);
        self.counts[first..].iter().sum()
    }

    /// How many values are at or above `threshold`.
    pub fn count_at_least(&self, threshold: Duration) -> u64 {
        self.count_at_least_us(u64::try_from(threshold.as_micros()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*), so tests need no randomness source.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    fn check_within_one_percent(values: &mut [u64]) {
        let mut h = Histogram::new();
        for &v in values.iter() {
            h.record_us(v);
        }
        values.sort_unstable();
        for q in [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 1.0] {
            let exact = exact_quantile(values, q) as f64;
            let got = h.quantile_us(q) as f64;
            let error = (got - exact).abs() / exact.max(1.0);
            assert!(
                error <= 0.01,
                "q={q}: exact {exact}, histogram {got}, error {error}"
            );
        }
        assert_eq!(h.count(), values.len() as u64);
        assert_eq!(h.max(), *values.last().expect("values"));
        assert_eq!(h.min(), values[0]);
    }

    #[test]
    fn bucket_index_round_trips_and_is_monotonic() {
        let mut previous = 0;
        for v in (0..100_000u64).chain([u64::MAX / 2, u64::MAX - 1, u64::MAX]) {
            let i = index_of(v);
            assert!(i >= previous, "index decreased at {v}");
            previous = i;
            let (low, width) = bucket_range(i);
            assert!(
                low <= v && v - low < width,
                "{v} not in bucket {i} ({low}+{width})"
            );
            if v >= SUB_COUNT {
                assert!(width as f64 / low as f64 <= 1.0 / SUB_COUNT as f64);
            }
        }
        assert_eq!(index_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn uniform_distribution_quantiles_within_one_percent() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut values: Vec<u64> = (0..200_000).map(|_| 50 + rng.next() % 20_000).collect();
        check_within_one_percent(&mut values);
    }

    #[test]
    fn exponential_distribution_quantiles_within_one_percent() {
        let mut rng = Rng(12345);
        // mean 2 ms, long tail
        let mut values: Vec<u64> = (0..200_000)
            .map(|_| (-(1.0 - rng.unit()).ln() * 2000.0) as u64 + 1)
            .collect();
        check_within_one_percent(&mut values);
    }

    #[test]
    fn bimodal_with_rare_outliers() {
        // 99.5 % around 1 ms, 0.5 % at 500 ms: p99.9 must be the outlier, p99 must not.
        let mut rng = Rng(777);
        let mut values: Vec<u64> = (0..100_000)
            .map(|i| {
                if i % 200 == 0 {
                    500_000 + rng.next() % 1000
                } else {
                    900 + rng.next() % 200
                }
            })
            .collect();
        check_within_one_percent(&mut values);
        let mut h = Histogram::new();
        values.iter().for_each(|&v| h.record_us(v));
        assert!(h.quantile_us(0.99) < 2_000);
        assert!(h.quantile_us(0.999) >= 495_000);
        assert_eq!(h.count_at_least(Duration::from_millis(100)), 500);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 0..100u64 {
            h.record_us(v);
        }
        assert_eq!(h.quantile_us(0.5), 49);
        assert_eq!(h.quantile_us(0.01), 0);
        assert_eq!(h.quantile_us(1.0), 99);
        assert!((h.mean() - 49.5).abs() < 1e-9);
        assert_eq!(h.count_at_least_us(90), 10);
    }

    #[test]
    fn empty_and_merge() {
        let empty = Histogram::new();
        assert_eq!(empty.quantile_us(0.5), 0);
        assert_eq!(empty.min(), 0);
        assert_eq!(empty.max(), 0);
        assert_eq!(empty.mean(), 0.0);

        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for v in 1..=1000u64 {
            if v % 2 == 0 {
                a.record_us(v * 10);
            } else {
                b.record(Duration::from_micros(v * 10));
            }
        }
        let mut whole = Histogram::new();
        (1..=1000u64).for_each(|v| whole.record_us(v * 10));
        a.merge(&b);
        assert_eq!(a, whole);
        assert_eq!(a.max(), 10_000);
        assert_eq!(a.min(), 10);
    }
}
