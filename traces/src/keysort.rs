//! Sorting a bin's arrival keys (`u64`s spread over `[0, bound)`, as the random spreads place them) by
//! distributing them into about one bucket per key by their top bits, one counting pass and one scatter,
//! then putting each small bucket in order.
//!
//! The keys of a Poisson or uniform spread are uniform over the bin, so a bucket holds one key on average and
//! the pass that orders the buckets does almost nothing: about a third of the instructions of the LSD radix
//! sort it replaced (`radsort`, six byte passes over a minute's 46-bit keys; the profile showed it as 6% of
//! the function workload's instructions). Keys that crowd together (an even spread puts every function
//! invoked once in a minute at its middle) make big buckets, which are sorted by `sort_unstable`: never
//! quadratic. The result is the sorted keys, whatever the algorithm: equal keys are equal values.

/// Buckets up to this size are put in order by one insertion pass over all the keys; with a bigger one,
/// each bucket is sorted on its own.
const INSERTION_MAX: u32 = 16;

/// Fewer keys than this are sorted directly. At least 2, so that there are at least 2 buckets and the
/// shift that picks a bucket stays below 64.
const DIRECT_BELOW: usize = 64;

/// Working memory kept between bins (no allocation once the largest bin has been seen).
#[derive(Debug, Default)]
pub(crate) struct KeySorter {
    scratch: Vec<u64>,
    ends: Vec<u32>,
}

impl KeySorter {
    /// Sorts `keys` ascending; `bound` is where they are expected to end (exclusive). Keys at or above it
    /// are still sorted (into the last bucket), only more slowly.
    pub(crate) fn sort(&mut self, keys: &mut Vec<u64>, bound: u64) {
        let n = keys.len();
        if n < DIRECT_BELOW || u32::try_from(n).is_err() {
            keys.sort_unstable();
            return;
        }
        let buckets = n.next_power_of_two();
        let key_bits = 64 - bound.saturating_sub(1).leading_zeros();
        let shift = key_bits.saturating_sub(buckets.trailing_zeros());
        let last = buckets - 1;
        let bucket = |k: u64| ((k >> shift) as usize).min(last);
        // Counts, then each bucket's start: after the scatter, `ends[b]` is where bucket `b` ends.
        self.ends.clear();
        self.ends.resize(buckets, 0);
        for &k in keys.iter() {
            self.ends[bucket(k)] += 1;
        }
        let (mut start, mut biggest) = (0u32, 0u32);
        for c in self.ends.iter_mut() {
            biggest = biggest.max(*c);
            (*c, start) = (start, start + *c);
        }
        // Every place below `n` is written by the scatter: only a longer bin than any before is zeroed first.
        if self.scratch.len() < n {
            self.scratch.resize(n, 0);
        } else {
            self.scratch.truncate(n);
        }
        for &k in keys.iter() {
            let at = &mut self.ends[bucket(k)];
            self.scratch[*at as usize] = k;
            *at += 1;
        }
        if biggest <= INSERTION_MAX {
            insertion_sort(&mut self.scratch);
        } else {
            let mut from = 0;
            for &end in &self.ends {
                let end = end as usize;
                if end - from > 1 {
                    self.scratch[from..end].sort_unstable();
                }
                from = end;
            }
        }
        std::mem::swap(keys, &mut self.scratch);
    }
}

/// Insertion sort: linear on keys that are out of order only within small buckets.
fn insertion_sort(v: &mut [u64]) {
    for i in 1..v.len() {
        let k = v[i];
        let mut j = i;
        while j > 0 && v[j - 1] > k {
            v[j] = v[j - 1];
            j -= 1;
        }
        v[j] = k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_pcg::Pcg64Mcg;

    /// Sorts `keys` with `sorter` and checks the result against the standard sort.
    fn sorted_alike(sorter: &mut KeySorter, mut keys: Vec<u64>, bound: u64) {
        let mut expected = keys.clone();
        expected.sort_unstable();
        sorter.sort(&mut keys, bound);
        assert_eq!(keys, expected);
    }

    #[test]
    fn sorts_as_the_standard_sort_whatever_the_keys() {
        let mut rng = Pcg64Mcg::seed_from_u64(9);
        let bound = 60_000_000_000u64 << 10;
        for n in [0, 1, 2, 63, 64, 65, 1000, 12_345] {
            // Uniform over the bound, as the random spreads make them.
            sorted_alike(&mut KeySorter::default(), (0..n).map(|_| rng.random_range(0..bound)).collect(), bound);
            // Crowded: many equal keys and a few distinct ones (an even spread's middle of the minute).
            sorted_alike(
                &mut KeySorter::default(),
                (0..n).map(|i| if i % 3 == 0 { bound / 2 } else { rng.random_range(0..bound) }).collect(),
                bound,
            );
            // All in one bucket, and clustered into a few.
            sorted_alike(&mut KeySorter::default(), (0..n).map(|_| rng.random_range(0..50)).collect(), bound);
            sorted_alike(
                &mut KeySorter::default(),
                (0..n).map(|i| (i % 7) as u64 * (bound / 7) + rng.random_range(0..3)).collect(),
                bound,
            );
            // Beyond the bound, and the extremes of u64.
            sorted_alike(&mut KeySorter::default(), (0..n).map(|_| rng.random::<u64>()).collect(), bound);
            sorted_alike(&mut KeySorter::default(), (0..n).map(|i| if i % 2 == 0 { u64::MAX } else { 0 }).collect(), 1);
            // Already sorted and reversed.
            sorted_alike(&mut KeySorter::default(), (0..n as u64).map(|i| i * 1_000_003).collect(), bound);
            sorted_alike(&mut KeySorter::default(), (0..n as u64).rev().map(|i| i * 1_000_003).collect(), bound);
        }
    }

    #[test]
    fn reuses_its_memory_across_bins_of_different_sizes() {
        let mut rng = Pcg64Mcg::seed_from_u64(3);
        let mut sorter = KeySorter::default();
        for n in [5000, 100, 20_000, 70, 3] {
            sorted_alike(&mut sorter, (0..n).map(|_| rng.random_range(0..1u64 << 46)).collect(), 1 << 46);
        }
    }
}
