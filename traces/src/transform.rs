//! Transforms of arrival streams: a time window, rate scaling, time compression, a k-way merge, and model
//! ids assigned by a mix. Each wraps streams and keeps them streaming: memory is bounded by the number of
//! sources (merge) or by the arrivals within one jitter window (superposition), never by trace length.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

use crate::{Arrival, ArrivalStream, Nanos, TraceError};

/// Keeps the arrivals in `[start, end)` and shifts them so `start` becomes time zero. Stops reading its
/// source at `end`.
pub struct Window {
    source: ArrivalStream,
    start: Nanos,
    end: Nanos,
    done: bool,
}

impl Window {
    /// A window from `start_s` to `end_s` (None: to the end).
    pub fn new(source: ArrivalStream, start_s: f64, end_s: Option<f64>) -> Result<Window, TraceError> {
        if !(start_s.is_finite() && start_s >= 0.0) {
            return Err(TraceError::InvalidParameters(format!("window start_s must be >= 0, got {start_s}")));
        }
        if let Some(e) = end_s
            && !(e.is_finite() && e > start_s)
        {
            return Err(TraceError::InvalidParameters(format!("window end_s ({e}) must be after start_s ({start_s})")));
        }
        Ok(Window {
            source,
            start: Nanos::from_secs_f64(start_s),
            end: end_s.map_or(Nanos::MAX, Nanos::from_secs_f64),
            done: false,
        })
    }
}

impl Iterator for Window {
    type Item = Result<Arrival, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.source.next()? {
                Err(e) => return Some(Err(e)),
                Ok(a) if a.time < self.start => continue,
                Ok(a) if a.time >= self.end => self.done = true,
                Ok(mut a) => {
                    a.time = a.time - self.start;
                    return Some(Ok(a));
                }
            }
        }
        None
    }
}

/// Divides every time by `factor`: the same requests, `factor` times faster (or slower, below 1).
pub struct Compress {
    source: ArrivalStream,
    factor: f64,
}

impl Compress {
    /// Compression by `factor` (> 0).
    pub fn new(source: ArrivalStream, factor: f64) -> Result<Compress, TraceError> {
        if !(factor.is_finite() && factor > 0.0) {
            return Err(TraceError::InvalidParameters(format!("compress factor must be positive, got {factor}")));
        }
        Ok(Compress { source, factor })
    }
}

impl Iterator for Compress {
    type Item = Result<Arrival, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.source.next()?.map(|mut a| {
            a.time = Nanos((a.time.0 as f64 / self.factor).round() as u64);
            a
        }))
    }
}

/// Scales the request rate by `factor` and keeps the trace's shape in time.
///
/// Below 1, each arrival is kept with probability `factor` (thinning). Above 1, each arrival is kept and
/// `floor(factor) - 1` copies, plus one more with probability `factor - floor(factor)`, are added, each
/// displaced by an independent uniform delay in `[0, jitter_s)` (superposition of jittered copies, so
/// copies do not land on the same nanosecond). Seeded.
pub struct Scale {
    source: ArrivalStream,
    factor: f64,
    jitter: Nanos,
    rng: Pcg64Mcg,
    pending: BinaryHeap<Reverse<(Nanos, u64, Arrival)>>,
    sequence: u64,
    /// Time of the latest arrival read from the source: nothing later can come before it.
    front: Nanos,
    source_done: bool,
}

impl Scale {
    /// Rate scaling by `factor` (> 0) with copies jittered by up to `jitter_s`.
    pub fn new(source: ArrivalStream, factor: f64, jitter_s: f64, seed: u64) -> Result<Scale, TraceError> {
        if !(factor.is_finite() && factor > 0.0) {
            return Err(TraceError::InvalidParameters(format!("scale factor must be positive, got {factor}")));
        }
        if !(jitter_s.is_finite() && jitter_s >= 0.0) {
            return Err(TraceError::InvalidParameters(format!("scale jitter_s must be >= 0, got {jitter_s}")));
        }
        Ok(Scale {
            source,
            factor,
            jitter: Nanos::from_secs_f64(jitter_s),
            rng: Pcg64Mcg::seed_from_u64(seed),
            pending: BinaryHeap::new(),
            sequence: 0,
            front: Nanos::ZERO,
            source_done: false,
        })
    }

    fn push(&mut self, a: Arrival) {
        self.sequence += 1;
        self.pending.push(Reverse((a.time, self.sequence, a)));
    }
}

impl Iterator for Scale {
    type Item = Result<Arrival, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // A pending arrival can go once the source has reached its time: later source arrivals, and their
            // delayed copies, all come at or after the source's front.
            if let Some(Reverse((t, _, a))) = self.pending.peek().copied()
                && (self.source_done || t <= self.front)
            {
                self.pending.pop();
                return Some(Ok(a));
            }
            if self.source_done {
                return None;
            }
            match self.source.next() {
                None => self.source_done = true,
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(a)) => {
                    self.front = a.time;
                    if self.factor < 1.0 {
                        if self.rng.random::<f64>() < self.factor {
                            self.push(a);
                        }
                        continue;
                    }
                    self.push(a);
                    let whole = self.factor.floor() as u64;
                    let extra = whole - 1 + u64::from(self.rng.random::<f64>() < self.factor - whole as f64);
                    for _ in 0..extra {
                        let delay = (self.rng.random::<f64>() * self.jitter.0 as f64) as u64;
                        self.push(Arrival { time: a.time + Nanos(delay), ..a });
                    }
                }
            }
        }
    }
}

/// Merges several time-ordered streams into one (k-way, by a heap of their heads). Ties go to the source
/// listed first. With `relabel`, each arrival's model id becomes its source's index.
pub struct Merge {
    sources: Vec<ArrivalStream>,
    heads: BinaryHeap<Reverse<(Nanos, usize, Arrival)>>,
    relabel: bool,
    started: bool,
}

impl Merge {
    /// A merge of `sources`.
    pub fn new(sources: Vec<ArrivalStream>, relabel: bool) -> Result<Merge, TraceError> {
        if sources.is_empty() {
            return Err(TraceError::InvalidParameters("merge needs at least one source".into()));
        }
        Ok(Merge { heads: BinaryHeap::with_capacity(sources.len()), sources, relabel, started: false })
    }

    fn pull(&mut self, i: usize) -> Result<(), TraceError> {
        if let Some(a) = self.sources[i].next() {
            let mut a = a?;
            if self.relabel {
                a.model = i as u32;
            }
            self.heads.push(Reverse((a.time, i, a)));
        }
        Ok(())
    }
}

impl Iterator for Merge {
    type Item = Result<Arrival, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                if let Err(e) = self.pull(i) {
                    return Some(Err(e));
                }
            }
        }
        let Reverse((_, i, a)) = self.heads.pop()?;
        if let Err(e) = self.pull(i) {
            return Some(Err(e));
        }
        Some(Ok(a))
    }
}

/// Assigns each arrival a model id drawn from `weights` (id `i` with probability `weights[i] / sum`). Seeded.
pub struct Mix {
    source: ArrivalStream,
    cumulative: Vec<f64>,
    rng: Pcg64Mcg,
}

impl Mix {
    /// A mix over `weights` (non-negative, not all zero).
    pub fn new(source: ArrivalStream, weights: &[f64], seed: u64) -> Result<Mix, TraceError> {
        if weights.is_empty() || weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err(TraceError::InvalidParameters(format!(
                "mix weights must be non-negative numbers, got {weights:?}"
            )));
        }
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            return Err(TraceError::InvalidParameters("mix weights must not all be zero".into()));
        }
        let cumulative = weights
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w / total;
                Some(*acc)
            })
            .collect();
        Ok(Mix { source, cumulative, rng: Pcg64Mcg::seed_from_u64(seed) })
    }
}

impl Iterator for Mix {
    type Item = Result<Arrival, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.source.next()?.map(|mut a| {
            let u = self.rng.random::<f64>();
            let i = self.cumulative.partition_point(|&c| c <= u);
            a.model = i.min(self.cumulative.len() - 1) as u32;
            a
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(times_ms: &[u64], model: u32) -> ArrivalStream {
        let v: Vec<Result<Arrival, TraceError>> = times_ms
            .iter()
            .map(|&t| Ok(Arrival { time: Nanos::from_millis(t), model, input_size: 0, output_size: 0 }))
            .collect();
        Box::new(v.into_iter())
    }

    fn ms(s: impl Iterator<Item = Result<Arrival, TraceError>>) -> Vec<u64> {
        s.map(|a| a.unwrap().time.0 / 1_000_000).collect()
    }

    #[test]
    fn window_shifts_and_stops() {
        let w = Window::new(stream(&[100, 1500, 2500, 3500], 0), 1.0, Some(3.0)).unwrap();
        assert_eq!(ms(w), [500, 1500]);
        assert!(Window::new(stream(&[], 0), 2.0, Some(1.0)).is_err());
    }

    #[test]
    fn compress_divides_time() {
        assert_eq!(ms(Compress::new(stream(&[1000, 3000], 0), 4.0).unwrap()), [250, 750]);
    }

    #[test]
    fn merge_is_k_way_and_stable() {
        let m = Merge::new(vec![stream(&[0, 10, 20], 5), stream(&[5, 10, 30], 6)], true).unwrap();
        let v: Vec<(u64, u32)> = m.map(|a| a.unwrap()).map(|a| (a.time.0 / 1_000_000, a.model)).collect();
        assert_eq!(v, [(0, 0), (5, 1), (10, 0), (10, 1), (20, 0), (30, 1)]);
    }

    #[test]
    fn scale_thins_and_superposes_in_order() {
        let base: Vec<u64> = (0..20_000).map(|i| i * 10).collect();
        let up = Scale::new(stream(&base, 0), 2.5, 1.0, 9).unwrap();
        let t = ms(up);
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        // 20 000 originals + 20 000 copies + Binomial(20 000, 0.5) more: mean 50 000, sd 71.
        assert!((t.len() as i64 - 50_000).abs() < 400, "{}", t.len());
        let down = Scale::new(stream(&base, 0), 0.25, 1.0, 9).unwrap();
        // Binomial(20 000, 0.25): mean 5 000, sd 61.
        assert!((down.count() as i64 - 5_000).abs() < 350);
    }

    #[test]
    fn mix_follows_its_weights() {
        let base: Vec<u64> = (0..30_000).collect();
        let mut counts = [0u32; 3];
        for a in Mix::new(stream(&base, 0), &[1.0, 0.0, 2.0], 4).unwrap() {
            counts[a.unwrap().model as usize] += 1;
        }
        assert_eq!(counts[1], 0);
        // Binomial(30 000, 1/3): mean 10 000, sd 82.
        assert!((counts[0] as i64 - 10_000).abs() < 400, "{counts:?}");
        assert!(Mix::new(stream(&[], 0), &[0.0], 1).is_err());
    }
}
